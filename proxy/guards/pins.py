"""Argument pins: a policy can force argument values and forbid arguments.

A pinned value the model did not send is filled in; one it sent differently is refused,
never silently overwritten, so the model learns the call it asked for was not allowed.
"""

from __future__ import annotations

from typing import Any

from proxy.catalog import ToolRule
from proxy.guards import Refusal


def apply_pins(rule: ToolRule, arguments: dict[str, Any]) -> tuple[dict[str, Any], Refusal | None]:
    args = dict(arguments)
    for pin in rule.pins:
        for name in pin.forbid:
            if name in args:
                return args, Refusal(
                    "denied",
                    f"argument '{name}' is forbidden by policy",
                    f"Argument '{name}' is not allowed for '{rule.exposed}' by this team's policy. It was not called.",
                )
        for name, value in pin.values.items():
            if name in args and args[name] != value:
                return args, Refusal(
                    "denied",
                    f"argument '{name}' is pinned",
                    f"Argument '{name}' of '{rule.exposed}' is pinned to {value!r} by this team's policy; "
                    f"the call asked for {args[name]!r}. It was not called.",
                )
            args[name] = value
    return args, None
