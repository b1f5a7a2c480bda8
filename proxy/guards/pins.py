"""Argument pins: a policy can force argument values and forbid arguments.

A pinned value the model did not send is filled in; one it sent differently is refused,
never silently overwritten, so the model learns the call it asked for was not allowed.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from proxy.catalog import ToolRule
from proxy.guards import Admitted, Refusal, Verdict
from proxy.guards.prompt import inert


def _shown(value: Any) -> str:
    """A value as the model wrote it (JSON), cut short and inert: it is echoed back in mcp-guard's own words."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    text = text if len(text) <= 80 else text[:77] + "..."
    return inert(unicodedata.normalize("NFC", text))


def apply_pins(rule: ToolRule, call: Admitted) -> Verdict:
    """The call with its pinned values filled in, or a refusal naming the argument."""
    if not rule.pins:
        return call
    args = dict(call.arguments)
    for pin in rule.pins:
        for name in pin.forbid:
            if name in args:
                return Refusal(
                    "denied",
                    f"argument '{name}' is forbidden by policy",
                    f"Argument '{name}' is not allowed for '{rule.exposed}' by this team's policy. It was not called.",
                )
        for name, value in pin.values.items():
            # `==` with the type: 1 is not a stand-in for true, nor "true" for true.
            if name in args and (type(args[name]) is not type(value) or args[name] != value):
                return Refusal(
                    "denied",
                    f"argument '{name}' is pinned",
                    f"Argument '{name}' of '{rule.exposed}' is pinned to {_shown(value)} by this team's policy; "
                    f"the call asked for {_shown(args[name])}. It was not called.",
                )
            args[name] = value
    return Admitted(args, call.decision, call.reason)
