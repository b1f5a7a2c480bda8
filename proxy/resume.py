"""Resuming a call after an upstream asked the human something, for 2026-07-28 clients.

A 2026-era client cannot be asked mid-call. When an upstream answers a forwarded call with
its own `InputRequiredResult`, the proxy answers the client with one of its own: the
upstream's questions (named and sanitised) and a state holding the upstream's state. The SDK's
`RequestStateBoundary` seals that state and binds it to this tool, these arguments and this
caller; `OneTimeStates` makes it single-use and binds it to the session. The client's retry
then resumes the upstream call without passing the gate or the limits a second time: they
already admitted exactly this call when the state was minted.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.guards import Refusal
from proxy.guards.onetime import OneTimeStates, parse
from proxy.state import SharedState

KIND = "resume"

_REFUSALS = {
    "malformed": Refusal("error", "malformed resume state", "The answer could not be read. Not resumed."),
    "other session": Refusal(
        "denied", "resume state from another session", "That answer belongs to another session. Not resumed."
    ),
    "replayed": Refusal("denied", "resume state replayed", "That answer was already used. Not resumed."),
    "expired": Refusal("declined", "resume state expired", "The answer came too late. The call was not resumed."),
}


@dataclass(frozen=True)
class Resume:
    upstream_state: str | None
    decision: str
    reason: str


class ResumeStates:
    def __init__(self, ttl_seconds: float, state: SharedState) -> None:
        self._states = OneTimeStates(ttl_seconds, state)

    def mint(self, session: str, upstream_state: str | None, decision: str, reason: str) -> str:
        return self._states.mint(session, kind=KIND, up=upstream_state, d=decision, r=reason)

    async def redeem(self, raw: str | None, session: str) -> Resume | Refusal | None:
        """The resume a verified state stands for, a refusal, or None when it is no resume state."""
        state = parse(raw)
        if state is None or state.get("kind") != KIND:
            return None
        if problem := await self._states.redeem(state, session):
            return _REFUSALS[problem]
        up = state.get("up")
        return Resume(
            upstream_state=up if isinstance(up, str) else None,
            decision=str(state.get("d", "allowed")),
            reason=str(state.get("r", "forwarded")),
        )
