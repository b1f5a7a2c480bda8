"""Arguments that cannot be checked or sent faithfully are refused before any other guard reads them."""

from __future__ import annotations

from typing import Any

from proxy.guards import Admitted, Refusal, Verdict

MAX_ARGUMENT_DEPTH = 64


def malformed(value: Any, depth: int = 0) -> str | None:
    """Why arguments cannot be checked or sent faithfully: nesting no tool needs (which would break
    serialisers on the way), or text that is not Unicode (a lone surrogate has no UTF-8 form)."""
    if depth > MAX_ARGUMENT_DEPTH:
        return f"values nested deeper than {MAX_ARGUMENT_DEPTH} levels"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "text that is not valid Unicode (a lone surrogate)"
    elif isinstance(value, dict):
        for key, item in value.items():
            if problem := malformed(key, depth + 1) or malformed(item, depth + 1):
                return problem
    elif isinstance(value, list | tuple):
        for item in value:
            if problem := malformed(item, depth + 1):
                return problem
    return None


def check_arguments(name: str, arguments: dict[str, Any]) -> Verdict:
    if problem := malformed(arguments):
        return Refusal(
            "denied",
            f"malformed arguments: {problem}",
            f"mcp-guard: the arguments of '{name}' hold {problem}; it was not called.",
        )
    return Admitted(arguments)
