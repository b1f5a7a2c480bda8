"""The lethal trifecta (Rule of Two): untrusted content + sensitive data + an external action.

Per session we remember which legs the session has touched and which tools touched them.
An external call that would make the session hold all three gets the policy's action.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.catalog import ToolRule
from proxy.guards import Refusal

LEGS = ("untrusted", "sensitive", "external")


@dataclass
class SessionLegs:
    touched: dict[str, list[str]] = field(default_factory=dict)
    last_seen: float = 0.0


class Trifecta:
    def __init__(self, action: str, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.action = action
        self._idle = idle_seconds
        self._clock = clock
        self._sessions: dict[str, SessionLegs] = {}

    def _session(self, key: str) -> SessionLegs:
        now = self._clock()
        state = self._sessions.get(key)
        if state is None or now - state.last_seen > self._idle:
            if len(self._sessions) > 10_000:
                self._sweep(now)
            state = self._sessions[key] = SessionLegs()
        state.last_seen = now
        return state

    def _sweep(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if now - s.last_seen > self._idle]:
            del self._sessions[key]

    def check(self, session: str, rule: ToolRule) -> tuple[Refusal | None, str | None]:
        """(refusal, gate reason): block refuses, confirm asks the human, off lets it pass."""
        if self.action == "off" or "external" not in rule.legs:
            return None, None
        touched = self._session(session).touched
        held = set(touched) | set(rule.legs)
        if not all(leg in held for leg in LEGS):
            return None, None
        culprits = sorted({tool for leg in ("untrusted", "sensitive") for tool in touched.get(leg, [])})
        why = "lethal trifecta: this session already read " + ", ".join(culprits or [rule.exposed])
        if self.action == "block":
            return Refusal(
                "blocked",
                why,
                f"Blocked: '{rule.exposed}' is an external action and this session has already handled untrusted "
                f"content and sensitive data (tainted by: {', '.join(culprits) or rule.exposed}). Policy blocks "
                "this combination. It was not called. Start a new session to act externally.",
            ), None
        return None, why

    def record(self, session: str, rule: ToolRule) -> None:
        touched = self._session(session).touched
        for leg in rule.legs:
            tools = touched.setdefault(leg, [])
            if rule.exposed not in tools:
                tools.append(rule.exposed)

    def legs(self, session: str) -> dict[str, list[str]]:
        return dict(self._session(session).touched)
