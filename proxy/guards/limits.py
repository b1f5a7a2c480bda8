"""Rate and recipient limits, per team and per limit rule, in a sliding window.

A limit rule's window is shared by every tool its globs match (`send_*` counts sends of any
kind together). Only forwarded calls are counted, and the count is taken in the same
synchronous step that admits the call (`take`), so calls waiting on a human confirmation
cannot all slip past one free slot.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from proxy.catalog import ToolRule
from proxy.guards import Admitted, Ask, Refusal, Verdict
from proxy.policy import LimitRule

# Recipient lists are comma-separated (SMSAPI's `to`); semicolons are accepted too so a
# list written the other common way is never undercounted. Whitespace is not a separator:
# "+48 600 100 200" is one number.
_SEPARATORS = str.maketrans({";": ","})


def _count_value(value: Any) -> tuple[int, bool]:
    """(recipients, unknown) named by one argument value."""
    if value is None or value == "" or value == []:
        return 0, False
    if isinstance(value, str):
        return sum(1 for part in value.translate(_SEPARATORS).split(",") if part.strip()), False
    if isinstance(value, list | tuple):
        counts = [_count_value(item) for item in value]
        return sum(c for c, _ in counts), any(u for _, u in counts)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 1, False  # a number passed as a number: one recipient
    return 0, True  # a shape we cannot count: never assume it is small


def count_recipients(rule: ToolRule, arguments: dict[str, Any]) -> tuple[int, bool]:
    """How many recipients a send names, and whether the count is unknown (a group, an odd shape)."""
    spec = rule.recipients
    if spec is None:
        return 0, False
    count, unknown = 0, False
    for name in spec.args:
        n, odd = _count_value(arguments.get(name))
        count, unknown = count + n, unknown or odd
    if any(arguments.get(name) not in (None, "", []) for name in spec.group_args):
        unknown = True
    return count, unknown


def _per(limit: LimitRule) -> str:
    if limit.window_seconds == 60:
        return "per minute"
    return f"per {limit.window_seconds:g} s"


class Limiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[int, deque[float]] = {}

    def check(self, rule: ToolRule, call: Admitted) -> Verdict:
        """A refusal when a limit is exceeded; a question for the human when a count is unknown. A check
        alone never counts the call (`take` does, when it is forwarded)."""
        gate: list[str] = []
        if not rule.limits:
            return call
        now = self._clock()
        for limit in rule.limits:
            if limit.per_minute is not None and (refusal := self._rate(rule, limit, now)):
                return refusal
            if limit.max_recipients is not None:
                count, unknown = count_recipients(rule, call.arguments)
                if count > limit.max_recipients:
                    return Refusal(
                        "denied",
                        f"{count} recipients > max {limit.max_recipients}",
                        f"'{rule.exposed}' names {count} recipients; this team may send to at most "
                        f"{limit.max_recipients} at once. It was not called.",
                    )
                if unknown:
                    gate.append(f"recipient count unknown (a group send; the limit is {limit.max_recipients})")
        return Ask(call.arguments, tuple(gate)) if gate else call

    def take(self, rule: ToolRule, call: Admitted) -> Admitted | Refusal:
        """Admit a call against its rate windows and count it, in one step; a refusal if a window filled
        meanwhile (calls that waited on a human cannot all take the one slot that was free when checked)."""
        if not rule.limits:
            return call
        now = self._clock()
        for limit in rule.limits:
            if limit.per_minute is not None and (refusal := self._rate(rule, limit, now)):
                return refusal
        self._count(rule, now)
        return call

    def commit(self, rule: ToolRule) -> None:
        """Count a call against its windows without checking them."""
        self._count(rule, self._clock())

    def _count(self, rule: ToolRule, now: float) -> None:
        for limit in rule.limits:
            if limit.per_minute is not None:
                self._window(limit, now).append(now)

    def _rate(self, rule: ToolRule, limit: LimitRule, now: float) -> Refusal | None:
        assert limit.per_minute is not None
        hits = self._window(limit, now)
        if len(hits) < limit.per_minute:
            return None
        wait = max(1, math.ceil(hits[0] + limit.window_seconds - now))
        per = _per(limit)
        return Refusal(
            "denied",
            f"rate limit {limit.per_minute} {per}; retry in {wait} s",
            f"Rate limit reached for '{rule.exposed}': {limit.per_minute} calls {per} for this team. "
            f"Try again in {wait} s. It was not called.",
        )

    def _window(self, limit: LimitRule, now: float) -> deque[float]:
        hits = self._hits.get(id(limit))
        if hits is None:
            hits = self._hits[id(limit)] = deque()
        horizon = now - limit.window_seconds
        while hits and hits[0] <= horizon:
            hits.popleft()
        return hits
