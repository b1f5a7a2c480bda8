"""A bounded table of short-lived entries: logins waiting for consent, and upstream logins under way.

Anyone can start a login, so neither table may grow without bound: an entry lives a fixed number of
seconds, and past the size limit the oldest goes first (it is the one most likely abandoned).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Expiring(Generic[T]):
    def __init__(self, seconds: float, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.limit = limit
        self._clock = clock
        self._entries: dict[str, tuple[float, T]] = {}  # insertion order is age order

    def put(self, key: str, value: T) -> None:
        now = self._clock()
        self._prune(now)
        while len(self._entries) >= self.limit:
            self._entries.pop(next(iter(self._entries)))
        self._entries.pop(key, None)
        self._entries[key] = (now, value)

    def get(self, key: str) -> T | None:
        """The live entry under `key`; an expired one is dropped and reads as absent."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() - entry[0] > self.seconds:
            del self._entries[key]
            return None
        return entry[1]

    def pop(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def _prune(self, now: float) -> None:
        while self._entries:
            key, (created, _) = next(iter(self._entries.items()))
            if now - created <= self.seconds:
                return
            del self._entries[key]
