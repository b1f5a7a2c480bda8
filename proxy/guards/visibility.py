"""Visibility: a tool the team may not see cannot be called, whatever name the model guesses."""

from __future__ import annotations

import unicodedata

from proxy.catalog import Catalog, ToolRule
from proxy.guards import Admitted, Refusal, Verdict
from proxy.guards.prompt import inert
from proxy.untrusted import PLAIN_NAME


def check_visible(
    catalog: Catalog,
    rule: ToolRule | None,
    exposed: str,
    group: str | None,
    call: Admitted,
    scopes: frozenset[str] | None = None,
) -> Verdict:
    if rule is None:
        # The name is the model's words: echoed only as a plain identifier, or inert.
        shown = exposed if PLAIN_NAME.fullmatch(exposed) else inert(unicodedata.normalize("NFC", exposed[:128]))
        return Refusal("denied", "unknown tool", f"Tool '{shown}' does not exist on this server. It was not called.")
    if not rule.visible:
        return Refusal(
            "denied",
            rule.hidden_reason or "hidden by policy",
            f"Tool '{exposed}' is not available to this team ({rule.hidden_reason}). It was not called.",
        )
    if not granted(rule, scopes):
        return Refusal(
            "denied",
            f"scope '{rule.scope}' not granted to this login",
            f"Tool '{exposed}' needs the '{rule.scope}' scope, which this login was not granted. It was not called.",
        )
    if not catalog.visible_in_group(rule, group):
        return Refusal(
            "denied",
            f"not in endpoint group '{group}'",
            f"Tool '{exposed}' is not served at the /{group} endpoint. It was not called.",
        )
    return call


def granted(rule: ToolRule, scopes: frozenset[str] | None) -> bool:
    """Whether the caller's own login (auth.mode oauth) was granted the scope the tool needs."""
    return scopes is None or rule.scope is None or rule.scope in scopes
