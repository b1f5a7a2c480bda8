"""Resuming a call after an upstream asked the human something, for 2026-07-28 clients.

A 2026-era client cannot be asked mid-call. When an upstream answers a forwarded call with
its own `InputRequiredResult`, the proxy answers the client with one of its own: the
upstream's questions (named and sanitised) and a state holding the upstream's state. The SDK's
`RequestStateBoundary` seals that state and binds it to this tool, these arguments and this
caller; here it is single-use and bound to the session. The client's retry then resumes the
upstream call without passing the gate or the limits a second time: they already admitted
exactly this call when the state was minted.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.guards import Refusal

KIND = "resume"


@dataclass(frozen=True)
class Resume:
    upstream_state: str | None
    decision: str
    reason: str


class ResumeStates:
    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._used: dict[str, float] = {}

    def mint(self, session: str, upstream_state: str | None, decision: str, reason: str) -> str:
        return json.dumps(
            {
                "kind": KIND,
                "id": secrets.token_hex(16),
                "s": session,
                "iat": self._clock(),
                "up": upstream_state,
                "d": decision,
                "r": reason,
            }
        )

    def redeem(self, raw: str | None, session: str) -> Resume | Refusal | None:
        """The resume a verified state stands for, a refusal, or None when it is no resume state."""
        if raw is None:
            return None
        try:
            state = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(state, dict) or state.get("kind") != KIND:
            return None
        now = self._clock()
        for nonce in [n for n, issued in self._used.items() if now - issued > self._ttl]:
            del self._used[nonce]
        nonce, issued = state.get("id"), state.get("iat")
        if not isinstance(nonce, str) or not isinstance(issued, int | float) or state.get("s") != session:
            return Refusal(
                "denied",
                "resume state from another session",
                "That answer belongs to another session. The call was not resumed.",
            )
        if nonce in self._used:
            return Refusal("denied", "resume state replayed", "That answer was already used. Not resumed.")
        if now - issued > self._ttl:
            return Refusal("declined", "resume state expired", "The answer came too late. The call was not resumed.")
        self._used[nonce] = issued
        up = state.get("up")
        return Resume(
            upstream_state=up if isinstance(up, str) else None,
            decision=str(state.get("d", "allowed")),
            reason=str(state.get("r", "forwarded")),
        )
