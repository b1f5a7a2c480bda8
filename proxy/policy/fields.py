"""The field types of policies and profiles: validators that give readable errors, and the strict base model."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

Leg = Literal["untrusted", "sensitive", "external"]
LEGS: tuple[Leg, ...] = ("untrusted", "sensitive", "external")

SLUG = re.compile(r"[a-z0-9][a-z0-9_-]*")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A result path: dot-separated segments, each a key (or `*`, any key) followed by any number of `[]`.
_FIELD_PATH = re.compile(r"(?:\*|[^.\[\]*]+)?(?:\[\])*(?:\.(?:\*|[^.\[\]*]+)(?:\[\])*)*")


def _slug(value: str) -> str:
    if not SLUG.fullmatch(value):
        raise ValueError("must be lowercase letters, digits, '-' or '_', starting with a letter or digit")
    return value


def _server_name(value: str) -> str:
    _slug(value)
    if "__" in value:
        raise ValueError("must not contain '__' (it separates server and tool in prefixed tool names)")
    return value


def _glob(value: str) -> str:
    if not value.strip():
        raise ValueError("a tool glob must be a non-empty string")
    return value


def _field_path(value: str) -> str:
    if not value or not _FIELD_PATH.fullmatch(value):
        raise ValueError("a result path looks like 'list[].message' ('[]' every element, '*' every key)")
    return value


def _env_value(value: Any) -> Any:
    # Environment values are strings; accept `DRY_RUN: true` rather than fail on a YAML bool.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


# The validators give readable messages; the JSON Schema still carries the patterns for editors.
Slug = Annotated[str, AfterValidator(_slug), WithJsonSchema({"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"})]
ServerName = Annotated[
    str,
    AfterValidator(_server_name),
    WithJsonSchema({"type": "string", "pattern": "^(?!.*__)[a-z0-9][a-z0-9_-]*$"}),
]
Glob = Annotated[str, AfterValidator(_glob)]
Globs = tuple[Glob, ...]
FieldPath = Annotated[str, AfterValidator(_field_path)]
EnvValue = Annotated[str, BeforeValidator(_env_value)]
Seconds = Annotated[float, Field(gt=0)]


class StrictModel(BaseModel):
    """Frozen, and an unknown key is an error: a typo in security configuration must not pass unnoticed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
