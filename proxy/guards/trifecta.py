"""The lethal trifecta (Rule of Two): untrusted content + sensitive data + an external action.

Per session we remember which legs the session has touched and which tools touched them.
An external call that would make the session hold all three gets the policy's action.

What a session is depends on the transport (the caller decides the key):
- stdio: the process; the handshake era over HTTP: the Mcp-Session-Id (bound to its principal).
  These keep their legs for as long as they live: a model's context does not forget what it
  read because the human went for lunch.
- the sessionless 2026-07-28 era over HTTP: the principal. Its requests carry no session, so
  every client of the same principal shares one record (more taint, never less: fail closed),
  and the record ends after `idle_seconds` without a call, which is the only end it has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.catalog import ToolRule
from proxy.guards import Admitted, Ask, Refusal, Verdict

LEGS = ("untrusted", "sensitive", "external")
# Sessions whose end we are never told about (handshake sessions closed without DELETE) must
# not grow memory without bound: past this many, the least recently used are forgotten.
MAX_SESSIONS = 10_000
# Names kept per leg to say what tainted a session: the leg counts either way, the list is for people.
_NAMES_KEPT = 32


@dataclass
class SessionLegs:
    touched: dict[str, list[str]] = field(default_factory=dict)
    last_seen: float = 0.0
    expires: bool = False


class Trifecta:
    def __init__(self, action: str, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.action = action
        self._idle = idle_seconds
        self._clock = clock
        self._sessions: dict[str, SessionLegs] = {}

    def _session(self, key: str, expires: bool) -> SessionLegs:
        now = self._clock()
        state = self._sessions.get(key)
        if state is not None and state.expires and now - state.last_seen > self._idle:
            state = None
        if state is None:
            if len(self._sessions) >= MAX_SESSIONS:
                self._sweep(now)
            state = SessionLegs(expires=expires)
        else:
            # Most recently used last, so the sweep finds the oldest first.
            del self._sessions[key]
        self._sessions[key] = state
        state.last_seen = now
        return state

    def _sweep(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires and now - s.last_seen > self._idle]:
            del self._sessions[key]
        excess = len(self._sessions) - MAX_SESSIONS // 2
        for key in list(self._sessions)[: max(0, excess)]:
            del self._sessions[key]

    def check(self, session: str, rule: ToolRule, call: Admitted, *, expires: bool = False) -> Verdict:
        """The third leg of a session: block refuses, confirm asks the human, off lets it pass."""
        if self.action == "off" or "external" not in rule.legs:
            return call
        touched = self._session(session, expires).touched
        if not all(leg in touched or leg in rule.legs for leg in LEGS):
            return call
        culprits = ", ".join(sorted({tool for leg in ("untrusted", "sensitive") for tool in touched.get(leg, ())}))
        culprits = culprits or rule.exposed
        why = f"lethal trifecta: this session already read untrusted content and sensitive data ({culprits})"
        if self.action == "block":
            return Refusal(
                "blocked",
                why,
                f"Blocked: '{rule.exposed}' is an external action and this session has already handled untrusted "
                f"content and sensitive data (tainted by: {culprits}). Policy blocks this combination. "
                "It was not called. Start a new session to act externally.",
            )
        return Ask(call.arguments, (why,))

    def record(self, session: str, rule: ToolRule, *, expires: bool = False) -> None:
        self.record_legs(session, rule.exposed, rule.legs, expires)

    def record_legs(self, session: str, source: str, legs: frozenset[str], expires: bool = False) -> None:
        """`source` (a tool, a resource read, a prompt) returned content with these legs to the session."""
        # Every forwarded call counts as activity, legs or not: the idle window runs from the last call.
        touched = self._session(session, expires).touched
        for leg in legs:
            tools = touched.setdefault(leg, [])
            if source not in tools and len(tools) < _NAMES_KEPT:
                tools.append(source)

    def legs(self, session: str) -> dict[str, list[str]]:
        state = self._sessions.get(session)
        return {} if state is None else dict(state.touched)
