"""Per-principal capacity of `serve` (SPEC §9): open handshake-era sessions and requests in flight.

Without it one client could fill the SDK's process-wide session table (10,000) with bare
`initialize` POSTs and lock every other principal out for the idle timeout. Here each principal
(one per credential; anonymous callers are one principal together) has its own caps, from its
team's `capacity:`. Over a cap it gets 429 with Retry-After, and nobody else notices. A principal
at its session cap whose oldest session has sat idle for a while gets that session closed to make
room instead, so a client that leaked sessions recovers by itself.

Per-principal caps alone do not protect the table: in passthrough mode a principal is whatever
Authorization header arrives, unverified, so one client with a made-up token per `initialize` has
as many principals as it likes. The process as a whole therefore holds at most `MAX_SESSIONS`,
below the SDK's limit; a new session beyond that closes the least recently used idle session of
anyone. A flood of made-up principals thus churns through its own idle sessions instead of
locking others out; a session with a request in flight (or an open GET stream) is never closed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
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
# Open sessions of the whole process, all principals together: below the SDK's table (10,000), which
# refuses every new session when full, so room is always made here first.
MAX_SESSIONS = 9_000
# When every session is busy nothing can be closed; requests end within seconds, sessions stay.
BUSY_RETRY_AFTER = 5.0


@dataclass
class _Principal:
    in_flight: int = 0
    # Open handshake-era sessions: id → when a request last used it (monotonic seconds).
    sessions: dict[str, float] = field(default_factory=dict)
    busy: dict[str, int] = field(default_factory=dict)  # session id → its requests in flight
    opening: int = 0  # initialize requests admitted (or being admitted) whose session is not open yet
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
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.app = app
        self.gateway = gateway
        self._alive = alive
        self._close = close
        self._clock = clock
        self._idle = idle_before_eviction
        self._max = max_sessions
        self._principals: dict[tuple[str, str], _Principal] = {}
        # Every open session → its principal, least recently used first: what the process holds.
        self._lru: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._opening = 0  # every principal's `opening`, summed
        self._crowded = False  # at MAX_SESSIONS: warned once per episode

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
                    send, 429, f"too many requests in flight for this caller (at most {cap.requests_per_principal})", 1
                )
                return
        opening = scope["method"] == "POST" and session_id is None and version not in MODERN_PROTOCOL_VERSIONS
        if opening:
            # Reserved before anything awaits, so concurrent openers see each other and none overshoots.
            held.opening += 1
            self._opening += 1
            try:
                refusal = await self._admit(key, held, cap)
            except BaseException:
                self._unreserve(key, held)
                raise
            if refusal is not None:
                self._unreserve(key, held)
                await _too_many(send, *refusal)
                return
        reserved = opening
        if session_id is not None and session_id in held.sessions:
            self._use(key, held, session_id)
            held.busy[session_id] = held.busy.get(session_id, 0) + 1
        if counted:
            held.in_flight += 1

        async def watch(message: Message) -> None:
            nonlocal reserved
            if message["type"] == "http.response.start":
                opened = _session_of(message)
                if opened is not None and message["status"] < 400 and reserved:
                    self._use(key, held, opened)
                    reserved = False  # the reservation is now this session: not counted twice
                    held.opening -= 1
                    self._opening -= 1
            await send(message)

        try:
            # Only a request that may open a session has a session id to note in its answer.
            await self.app(scope, receive, watch if opening else send)
        finally:
            if reserved:
                held.opening -= 1
                self._opening -= 1
            if counted:
                held.in_flight -= 1
            if session_id is not None and session_id in held.busy:
                held.busy[session_id] -= 1
                if held.busy[session_id] <= 0:
                    del held.busy[session_id]
                if session_id in held.sessions:
                    if self._alive(session_id):
                        self._use(key, held, session_id)
                    else:  # ended by this very request (DELETE): its room is free now
                        self._forget(key, session_id)
            self._drop_if_empty(key, held)

    async def _admit(
        self, key: tuple[str, str], held: _Principal, cap: CapacityPolicy
    ) -> tuple[int, str, float] | None:
        """None when the reserved new session fits, else the refusal (status, why, seconds to wait)."""
        if (wait := await self._room(key, held, cap)) is not None:
            self._warn(held, key, f"{cap.sessions_per_principal} open sessions")
            why = (
                f"too many open sessions for this caller (at most {cap.sessions_per_principal}); end one "
                "(HTTP DELETE with its Mcp-Session-Id) or retry later"
            )
            return 429, why, wait
        if (wait := await self._room_in_process()) is not None:
            return 503, "too many open sessions on this server, all of them busy; retry later", wait
        return None

    def _unreserve(self, key: tuple[str, str], held: _Principal) -> None:
        held.opening -= 1
        self._opening -= 1
        self._drop_if_empty(key, held)

    async def _room(self, key: tuple[str, str], held: _Principal, cap: CapacityPolicy) -> float | None:
        """None when the principal's reserved session fits (closing an idle one if need be), else seconds to wait."""
        for gone in [s for s in held.sessions if not self._alive(s)]:
            self._forget(key, gone)
        if len(held.sessions) + held.opening <= cap.sessions_per_principal:
            held.warned = False
            return None
        now = self._clock()
        idle = [(used, s) for s, used in held.sessions.items() if s not in held.busy]
        if idle:
            used, oldest = min(idle)
            if now - used >= self._idle:
                self._forget(key, oldest)
                logger.info("closed an idle session to make room for its principal's new one")
                await self._close(oldest)
                return None
            return max(1.0, math.ceil(used + self._idle - now))
        return self._idle

    async def _room_in_process(self) -> float | None:
        """None when the process has room for the reserved session (closing the least recently used idle
        session of anyone if need be), else seconds to wait. Recency, not who holds how many: a flood of
        made-up principals holds one session each, as a legitimate client does."""
        while len(self._lru) + self._opening > self._max:
            if not self._crowded:  # once per episode, as with _warn
                self._crowded = True
                logger.warning("%d open sessions: closing the least recently used idle ones for new ones", self._max)
            for sid, owner in self._lru.items():
                held = self._principals.get(owner)
                if not self._alive(sid) or held is None or sid not in held.busy:
                    break
            else:
                return BUSY_RETRY_AFTER
            ended = not self._alive(sid)  # by its client (DELETE) or the SDK's idle timeout: room already
            self._forget(owner, sid)
            if not ended:
                await self._close(sid)
        if len(self._lru) + self._opening < self._max:
            self._crowded = False
        return None

    def _use(self, key: tuple[str, str], held: _Principal, session_id: str) -> None:
        held.sessions[session_id] = self._clock()
        self._lru[session_id] = key
        self._lru.move_to_end(session_id)

    def _forget(self, key: tuple[str, str], session_id: str) -> None:
        self._lru.pop(session_id, None)
        held = self._principals.get(key)
        if held is not None:
            held.sessions.pop(session_id, None)
            held.busy.pop(session_id, None)
            self._drop_if_empty(key, held)

    def _drop_if_empty(self, key: tuple[str, str], held: _Principal) -> None:
        # Only this very record: a request that outlived it must not drop its successor.
        if not held.in_flight and not held.sessions and not held.opening and self._principals.get(key) is held:
            del self._principals[key]

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


async def _too_many(send: Send, status: int, why: str, retry_after: float) -> None:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": f"mcp-guard: {why}"}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(math.ceil(retry_after)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
