"""State that outlives one request: rate windows, what a session has touched, used one-time states.

The guards ask for it through one small async interface (`SharedState`), so one process keeps it
in memory (`MemoryState`, the default) and several replicas behind a load balancer share it in
Redis (`proxy.redis_state.RedisState`, SPEC §12) with the same answers. A backend that cannot
answer raises `StateUnavailable`; the pipeline then refuses the call (fail closed), never falls
back to what one replica alone remembers.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# Sessions whose end we are never told about (handshake sessions closed without DELETE) must
# not grow memory without bound: past this many, the least recently used are forgotten.
MAX_SESSIONS = 10_000
# Names kept per leg to say what tainted a session: the leg counts either way, the list is for people.
NAMES_KEPT = 32


class StateUnavailable(Exception):
    """The shared state backend did not answer; nothing that depends on it may go ahead."""


@dataclass(frozen=True)
class Window:
    key: str  # stable across replicas: which limit rule, which window length
    cap: int
    seconds: float
    weight: int = 1  # what this call counts in it: 1, or its SMS messages for a limit that counts those


@dataclass(frozen=True)
class Full:
    """A window a call does not fit in: which one, how much of it is used, and when enough frees up."""

    window: int
    used: int
    wait: float


class SharedState(Protocol):
    backend: str

    async def rate(self, windows: Sequence[Window], *, take: bool) -> Full | None:
        """None when the call fits in every window (and, with `take`, is counted in all of them at
        once: in none if it does not fit in one); else the first window it does not fit in."""
        ...

    async def legs(self, session: str, idle: float | None) -> dict[str, list[str]]:
        """What the session has touched, leg → sources; a session idle longer than `idle` starts over."""
        ...

    async def touch(self, session: str, source: str, legs: frozenset[str], idle: float | None) -> None: ...

    async def first_use(self, nonce: str, ttl: float) -> bool:
        """True the first time a one-time state's nonce is presented within `ttl`, False after."""
        ...

    async def healthy(self) -> bool: ...

    async def aclose(self) -> None: ...


@dataclass
class _Session:
    touched: dict[str, list[str]] = field(default_factory=dict)
    last_seen: float = 0.0
    idle: float | None = None


class MemoryState:
    """One process's state: exact, and gone when the process ends."""

    backend = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[tuple[str, float], deque[tuple[float, int]]] = {}
        self._totals: dict[tuple[str, float], int] = {}  # the weights in each window, kept as they change
        self._sessions: dict[str, _Session] = {}
        self._used: dict[str, float] = {}

    async def rate(self, windows: Sequence[Window], *, take: bool) -> Full | None:
        now = self._clock()
        for index, window in enumerate(windows):
            hits, used = self._window(window, now)
            if used + window.weight > window.cap:
                return Full(index, used, _wait(hits, used + window.weight - window.cap, window.seconds, now))
        if take:
            for window in windows:
                hits, used = self._window(window, now)
                hits.append((now, window.weight))
                self._totals[(window.key, window.seconds)] = used + window.weight
        return None

    def _window(self, window: Window, now: float) -> tuple[deque[tuple[float, int]], int]:
        key = (window.key, window.seconds)
        hits = self._hits.setdefault(key, deque())
        used = self._totals.get(key, 0)
        horizon = now - window.seconds
        while hits and hits[0][0] <= horizon:
            used -= hits.popleft()[1]
        self._totals[key] = used
        return hits, used

    async def legs(self, session: str, idle: float | None) -> dict[str, list[str]]:
        if session not in self._sessions:
            # A check makes no record: else calls that are only checked (refused, or waiting for a
            # human) from made-up principals would cost nothing and crowd tainted records out.
            return {}
        return dict(self._session(session, idle).touched)

    async def touch(self, session: str, source: str, legs: frozenset[str], idle: float | None) -> None:
        touched = self._session(session, idle).touched
        for leg in legs:
            sources = touched.setdefault(leg, [])
            if source not in sources and len(sources) < NAMES_KEPT:
                sources.append(source)

    def _session(self, key: str, idle: float | None) -> _Session:
        now = self._clock()
        state = self._sessions.get(key)
        if state is not None and _lapsed(state, now):
            state = None
        if state is None:
            if len(self._sessions) >= MAX_SESSIONS:
                self._sweep(now)
            state = _Session(idle=idle)
        else:
            del self._sessions[key]  # most recently used last, so the sweep finds the oldest first
        self._sessions[key] = state
        state.last_seen = now
        return state

    def _sweep(self, now: float) -> None:
        # Records that hold no leg go first: forgetting them forgets no taint. Only past those are
        # the least recently used forgotten, legs and all.
        for key in [k for k, s in self._sessions.items() if not s.touched or _lapsed(s, now)]:
            del self._sessions[key]
        excess = len(self._sessions) - MAX_SESSIONS // 2
        for key in list(self._sessions)[: max(0, excess)]:
            del self._sessions[key]

    async def first_use(self, nonce: str, ttl: float) -> bool:
        now = self._clock()
        for old in [n for n, at in self._used.items() if now - at > ttl]:
            del self._used[old]
        if nonce in self._used:
            return False
        self._used[nonce] = now
        return True

    async def healthy(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def _lapsed(state: _Session, now: float) -> bool:
    return state.idle is not None and now - state.last_seen > state.idle


def _wait(hits: deque[tuple[float, int]], excess: int, seconds: float, now: float) -> float:
    """Seconds until enough of a window's oldest calls leave it for `excess` more to fit."""
    wait = 0.0
    for at, w in hits:
        excess -= w
        wait = at + seconds - now
        if excess <= 0:
            break
    return wait
