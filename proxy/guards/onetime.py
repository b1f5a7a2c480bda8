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

Problem = Literal["malformed", "other session", "replayed", "expired"]


class OneTimeStates:
    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl_seconds
        self._clock = clock
        self._used: dict[str, float] = {}

    def mint(self, session: str, **fields: Any) -> str:
        return json.dumps({**fields, "id": secrets.token_hex(16), "s": session, "iat": self._clock()})

    def redeem(self, state: dict[str, Any], session: str) -> Problem | None:
        """None when `state` is fresh, this session's and unused (it is now used); else what is wrong."""
        nonce, issued = state.get("id"), state.get("iat")
        if not isinstance(nonce, str) or not isinstance(issued, int | float):
            return "malformed"
        now = self._clock()
        for old in [n for n, at in self._used.items() if now - at > self.ttl]:
            del self._used[old]
        if state.get("s") != session:
            return "other session"
        if nonce in self._used:
            return "replayed"
        if now - issued > self.ttl:
            return "expired"
        self._used[nonce] = issued
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
