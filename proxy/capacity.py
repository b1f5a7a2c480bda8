"""Per-principal capacity of `serve` (SPEC §9): open handshake-era sessions and requests in flight.

Without it one client could fill the SDK's process-wide session table (10,000) with bare
`initialize` POSTs and lock every other principal out for the idle timeout. Here each principal
(one per credential; anonymous callers are one principal together) has its own caps, from its
team's `capacity:`. Over a cap it gets 429 with Retry-After, and nobody else notices. A principal
at its session cap whose oldest session has sat idle for a while gets that session closed to make
room instead, so a client that leaked sessions recovers by itself.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.fastpath_wire import routing
from proxy.gateway import IDENTITY_KEY, Gateway
from proxy.policy import CapacityPolicy

logger = logging.getLogger("mcp_guard.capacity")

# A session idle this long may be closed to make room for its own principal's new one.
IDLE_BEFORE_EVICTION = 60.0


@dataclass
class _Principal:
    in_flight: int = 0
    # Open handshake-era sessions: id → when a request last used it (monotonic seconds).
    sessions: dict[str, float] = field(default_factory=dict)
    busy: dict[str, int] = field(default_factory=dict)  # session id → its requests in flight
    opening: int = 0  # initialize requests admitted whose session is not open yet
    warned: bool = False


class Capacity:
    """ASGI middleware after identity: counts and caps what each principal holds."""

    def __init__(
        self,
        app: ASGIApp,
        gateway: Gateway,
        *,
        alive: Callable[[str], bool],
        close: Callable[[str], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
        idle_before_eviction: float = IDLE_BEFORE_EVICTION,
    ) -> None:
        self.app = app
        self.gateway = gateway
        self._alive = alive
        self._close = close
        self._clock = clock
        self._idle = idle_before_eviction
        self._principals: dict[tuple[str, str], _Principal] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        identity = scope.get(IDENTITY_KEY)
        if scope["type"] != "http" or identity is None:
            await self.app(scope, receive, send)
            return
        key = (identity.team, identity.principal)
        cap = self.gateway.policies[identity.team].policy.capacity
        held = self._principals.setdefault(key, _Principal())
        version, session_id = routing(scope)
        counted = scope["method"] in ("POST", "DELETE")  # a GET stream is one per session, capped with it
        if counted and held.in_flight >= cap.requests_per_principal:
            # A client's answers (responses to our questions, notifications such as cancelled) finish work
            # already in flight; refusing them would deadlock the requests that wait on them.
            body, receive = await _peek(receive)
            if not _answers(body):
                self._warn(held, key, f"{cap.requests_per_principal} requests in flight")
                await _too_many(
                    send, f"too many requests in flight for this caller (at most {cap.requests_per_principal})", 1
                )
                return
        opening = scope["method"] == "POST" and session_id is None and version not in MODERN_PROTOCOL_VERSIONS
        if opening and (wait := await self._room(held, cap)) is not None:
            self._warn(held, key, f"{cap.sessions_per_principal} open sessions")
            await _too_many(
                send,
                f"too many open sessions for this caller (at most {cap.sessions_per_principal}); end one "
                "(HTTP DELETE with its Mcp-Session-Id) or retry later",
                wait,
            )
            return
        if opening:
            held.opening += 1
        if session_id is not None and session_id in held.sessions:
            held.sessions[session_id] = self._clock()
            held.busy[session_id] = held.busy.get(session_id, 0) + 1
        if counted:
            held.in_flight += 1

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                opened = _session_of(message)
                if opened is not None and message["status"] < 400:
                    held.sessions[opened] = self._clock()
            await send(message)

        try:
            # Only a request that may open a session has a session id to note in its answer.
            await self.app(scope, receive, watch if opening else send)
        finally:
            if opening:
                held.opening -= 1
            if counted:
                held.in_flight -= 1
            if session_id is not None and session_id in held.busy:
                held.busy[session_id] -= 1
                if held.busy[session_id] <= 0:
                    del held.busy[session_id]
                if session_id in held.sessions:
                    held.sessions[session_id] = self._clock()
            if not held.in_flight and not held.sessions and not held.opening:
                self._principals.pop(key, None)

    async def _room(self, held: _Principal, cap: CapacityPolicy) -> float | None:
        """None when a new session fits (closing an idle one if need be), else seconds to wait."""
        for gone in [s for s in held.sessions if not self._alive(s)]:
            del held.sessions[gone]
            held.busy.pop(gone, None)
        if len(held.sessions) + held.opening < cap.sessions_per_principal:
            held.warned = False
            return None
        now = self._clock()
        idle = [(used, s) for s, used in held.sessions.items() if s not in held.busy]
        if idle:
            used, oldest = min(idle)
            if now - used >= self._idle:
                del held.sessions[oldest]
                logger.info("closed an idle session to make room for its principal's new one")
                await self._close(oldest)
                return None
            return max(1.0, math.ceil(used + self._idle - now))
        return self._idle

    def _warn(self, held: _Principal, key: tuple[str, str], what: str) -> None:
        if not held.warned:  # once per episode: a flood must not become a log flood
            held.warned = True
            logger.warning("team '%s', principal %s: at its cap of %s; answering 429", key[0], key[1][:24], what)


_PEEK_LIMIT = 64 * 1024  # an answer is small; anything larger is treated as a request


async def _peek(receive: Receive) -> tuple[bytes, Receive]:
    """The request body (up to a limit), and a receive that replays it for the app."""
    chunks: list[Message] = []
    size, more = 0, True
    while more and size <= _PEEK_LIMIT:
        message = await receive()
        chunks.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(m.get("body", b"") for m in chunks if m["type"] == "http.request")

    async def replay() -> Message:
        return chunks.pop(0) if chunks else await receive()

    return body, replay


def _answers(body: bytes) -> bool:
    """A JSON-RPC response or notification (not a request that would start more work)."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(message, dict) and ("method" not in message or "id" not in message)


def _session_of(message: Message) -> str | None:
    for name, value in message.get("headers", ()):
        if name.lower() == b"mcp-session-id":
            return bytes(value).decode("latin-1")
    return None


async def _too_many(send: Send, why: str, retry_after: float) -> None:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": f"mcp-guard: {why}"}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(math.ceil(retry_after)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
