"""States the proxy mints for one client retry (2026-07-28): bound to a session, used once, expiring.

The SDK's `RequestStateBoundary` has already proved a state is ours and bound to this tool, these
arguments and this caller; what it cannot know is whether the state was used before. Both the
confirmation gate and the resume of an upstream's question need that, so both use this.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any, Literal

from proxy.state import SharedState

Problem = Literal["malformed", "other session", "replayed", "expired"]


class OneTimeStates:
    def __init__(self, ttl_seconds: float, state: SharedState, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl_seconds
        self._state = state
        self._clock = clock

    def mint(self, session: str, **fields: Any) -> str:
        return json.dumps({**fields, "id": secrets.token_hex(16), "s": session, "iat": self._clock()})

    async def redeem(self, state: dict[str, Any], session: str) -> Problem | None:
        """None when `state` is fresh, this session's and unused (it is now used); else what is wrong.
        Used is remembered in the shared state, so a state redeemed on one replica is used on all."""
        nonce, issued = state.get("id"), state.get("iat")
        if not isinstance(nonce, str) or not isinstance(issued, int | float):
            return "malformed"
        if state.get("s") != session:
            return "other session"
        if self._clock() - issued > self.ttl:
            return "expired"
        if not await self._state.first_use(nonce, self.ttl + 60):
            return "replayed"
        return None


def parse(raw: str | None) -> dict[str, Any] | None:
    """A state's fields, or None when there is no state or it is not one of ours in shape."""
    if raw is None:
        return None
    try:
        state = json.loads(raw)
    except ValueError:
        return None
    return state if isinstance(state, dict) else None
