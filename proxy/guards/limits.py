"""Rate and recipient limits, per team and per limit rule, in a sliding one-minute window."""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from proxy.catalog import ToolRule
from proxy.guards import Refusal

WINDOW = 60.0
_SPLIT = re.compile(r"[,;\s]+")


def count_recipients(rule: ToolRule, arguments: dict[str, Any]) -> tuple[int, bool]:
    """How many recipients a send names, and whether a group makes the count unknown."""
    spec = rule.recipients
    if spec is None:
        return 0, False
    count = 0
    for name in spec.args:
        value = arguments.get(name)
        if isinstance(value, str):
            count += len([p for p in _SPLIT.split(value) if p])
        elif isinstance(value, list):
            count += len(value)
    unknown = any(arguments.get(name) not in (None, "", []) for name in spec.group_args)
    return count, unknown


class Limiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[int, deque[float]] = {}

    def check(self, rule: ToolRule, arguments: dict[str, Any]) -> tuple[Refusal | None, list[str]]:
        """A refusal when a limit is exceeded; otherwise extra reasons to ask the human."""
        gate: list[str] = []
        now = self._clock()
        for limit in rule.limits:
            if limit.per_minute is not None:
                hits = self._window(limit, now)
                if len(hits) >= limit.per_minute:
                    wait = math.ceil(hits[0] + WINDOW - now)
                    return Refusal(
                        "denied",
                        f"rate limit {limit.per_minute}/min",
                        f"Rate limit reached for '{rule.exposed}': {limit.per_minute} calls per minute. "
                        f"Try again in {wait} s. It was not called.",
                    ), gate
            if limit.max_recipients is not None:
                count, unknown = count_recipients(rule, arguments)
                if count > limit.max_recipients:
                    return Refusal(
                        "denied",
                        f"{count} recipients > max {limit.max_recipients}",
                        f"'{rule.exposed}' names {count} recipients; this team may send to at most "
                        f"{limit.max_recipients} at once. It was not called.",
                    ), gate
                if unknown:
                    gate.append(f"group send: recipient count unknown (limit {limit.max_recipients})")
        return None, gate

    def commit(self, rule: ToolRule) -> None:
        """Count a call against its windows; called only for calls that are forwarded."""
        now = self._clock()
        for limit in rule.limits:
            if limit.per_minute is not None:
                self._window(limit, now).append(now)

    def _window(self, limit: object, now: float) -> deque[float]:
        hits = self._hits.setdefault(id(limit), deque())
        while hits and hits[0] <= now - WINDOW:
            hits.popleft()
        return hits
