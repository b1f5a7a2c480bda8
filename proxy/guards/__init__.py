"""One module per decision a call must pass before it is forwarded.

A guard answers with a `Refusal` (the call stops here, the upstream never sees it) or
lets the call through. Guards never import transports: they see `Call`, never a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Decision = Literal["allowed", "denied", "confirmed", "declined", "blocked", "error"]


@dataclass(frozen=True)
class Refusal:
    """Why a call was not forwarded; `message` is written for the model and the human alike."""

    decision: Decision
    reason: str
    message: str
