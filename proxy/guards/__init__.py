"""One module per decision a call must pass before it is forwarded.

Every guard answers with one `Verdict`: `Admitted` (with the arguments to send, which a pin may
have filled in), `Ask` (a human must say yes first, and why), or `Refusal` (the call stops here,
the upstream never sees it). Guards never import transports: they see rules and arguments,
never a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Decision = Literal["allowed", "denied", "confirmed", "declined", "blocked", "error"]


@dataclass(frozen=True)
class Refusal:
    """Why a call was not forwarded; `message` is written for the model and the human alike."""

    decision: Decision
    reason: str
    message: str


@dataclass(frozen=True)
class Admitted:
    """The call may be forwarded with these arguments; `decision` and `reason` are what the audit says."""

    arguments: dict[str, Any]
    decision: Decision = "allowed"
    reason: str = "forwarded"


@dataclass(frozen=True)
class Ask:
    """The call may be forwarded with these arguments only after a human's yes; `reasons` say why."""

    arguments: dict[str, Any]
    reasons: tuple[str, ...]
    facts: tuple[tuple[str, str], ...] = ()  # extra "Label: text" lines for the prompt (an SMS's cost)


Verdict = Admitted | Ask | Refusal
