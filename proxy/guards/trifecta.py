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

from proxy.catalog import ToolRule
from proxy.guards import Admitted, Ask, Refusal, Verdict
from proxy.state import SharedState

LEGS = ("untrusted", "sensitive", "external")
# What an upstream's own words (an error text) count as when nothing better is known of them.
UNTRUSTED: frozenset[str] = frozenset({"untrusted"})


class Trifecta:
    def __init__(self, action: str, idle_seconds: float, state: SharedState) -> None:
        self.action = action
        self._idle = idle_seconds
        self._state = state

    def _expiry(self, expires: bool) -> float | None:
        return self._idle if expires else None

    async def check(self, session: str, rule: ToolRule, call: Admitted, *, expires: bool = False) -> Verdict:
        """The third leg of a session: block refuses, confirm asks the human, off lets it pass."""
        if self.action == "off" or "external" not in rule.legs:
            return call
        touched = await self._state.legs(session, self._expiry(expires))
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

    async def record(self, session: str, rule: ToolRule, *, expires: bool = False) -> None:
        await self.record_legs(session, rule.exposed, rule.legs, expires)

    async def record_legs(self, session: str, source: str, legs: frozenset[str], expires: bool = False) -> None:
        """`source` (a tool, a resource read, a prompt) returned content with these legs to the session."""
        if self.action == "off":
            return  # nothing will ever be judged by it
        # Every forwarded call counts as activity, legs or not: the idle window runs from the last call.
        await self._state.touch(session, source, legs, self._expiry(expires))

    async def legs(self, session: str) -> dict[str, list[str]]:
        return await self._state.legs(session, None)
