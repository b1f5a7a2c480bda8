"""The profile schema: one upstream server's tools (scopes, trifecta legs, verbatim fields, SMS argument
roles, annotation overrides) and how its resources and prompts count."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
)

from proxy.policy.fields import (
    FieldPath,
    Leg,
    Slug,
    StrictModel,
)


class ProfileAnnotations(StrictModel):
    """Overrides of the upstream's MCP tool annotations, spelled as on the wire."""

    read_only_hint: bool | None = Field(None, alias="readOnlyHint")
    destructive_hint: bool | None = Field(None, alias="destructiveHint")
    idempotent_hint: bool | None = Field(None, alias="idempotentHint")
    open_world_hint: bool | None = Field(None, alias="openWorldHint")


class RecipientSpec(StrictModel):
    args: tuple[str, ...] = ()
    group_args: tuple[str, ...] = ()


class ArgSpec(StrictModel):
    """The arguments that play one role in a send (the sender name, the message text)."""

    args: tuple[str, ...] = ()


class SmsPrice(StrictModel):
    per_message: Annotated[float, Field(ge=0)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


def _format(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"a verbatim format must be a regular expression ({exc.msg})") from None
    return value


Format = Annotated[str, AfterValidator(_format)]


class ProfileTool(StrictModel):
    scope: str | None = None
    legs: frozenset[Leg] | None = None
    # Paths into the JSON result whose values pass byte-exact when the whole value matches the format
    # (and holds no character that could carry markup); every other value is cleaned (SPEC §5).
    verbatim: dict[FieldPath, Format] = Field(default_factory=dict)
    # Removed in favour of cleaning every field; still read so old profiles load, and `check` says
    # it is ignored (it could only ever narrow what was cleaned).
    untrusted_fields: tuple[FieldPath, ...] | None = None
    annotations: ProfileAnnotations | None = None
    recipients: RecipientSpec | None = None
    sender: ArgSpec | None = None
    message: ArgSpec | None = None

    def verbatim_formats(self) -> dict[str, re.Pattern[str]] | None:
        return {path: re.compile(fmt) for path, fmt in self.verbatim.items()} or None


class ProfileContent(StrictModel):
    """How a profile classifies what resources/read or prompts/get return (untrusted by default)."""

    legs: frozenset[Leg] = frozenset({"untrusted"})


class Profile(StrictModel):
    version: Literal[1] = 1
    name: Slug
    description: str | None = None
    groups: dict[Slug, tuple[str, ...]] = Field(default_factory=dict)
    tools: dict[str, ProfileTool] = Field(default_factory=dict)
    resources: ProfileContent = ProfileContent()
    prompts: ProfileContent = ProfileContent()
    sms_price: SmsPrice | None = None  # an estimate shown in the confirmation prompt

    def scopes(self) -> set[str]:
        return {t.scope for t in self.tools.values() if t.scope is not None}
