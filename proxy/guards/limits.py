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
from proxy.guards.sms import message_count
from proxy.policy import LimitRule
from proxy.sms import distinct_recipients, split_recipients


def _countable(value: Any) -> bool:
    if value is None or isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return True
    return isinstance(value, list | tuple) and all(_countable(item) for item in value)


def count_recipients(rule: ToolRule, arguments: dict[str, Any]) -> tuple[int, bool]:
    """How many different recipients a send names (one number written two ways counts once), and
    whether the count is unknown (a group, a shape that is not a list of numbers)."""
    spec = rule.recipients
    if spec is None:
        return 0, False
    values = [arguments.get(name) for name in spec.args]
    unknown = not all(_countable(v) for v in values)
    if any(arguments.get(name) not in (None, "", []) for name in spec.group_args):
        unknown = True
    # Separators are commas, semicolons and newlines, never spaces: "+48 600 100 200" is one number.
    return distinct_recipients([n for v in values if _countable(v) for n in split_recipients(v)]), unknown


def _per(limit: LimitRule) -> str:
    if limit.window_seconds == 60:
        return "per minute"
    return f"per {limit.window_seconds:g} s"


DAY = 86_400.0


def _windows(limit: LimitRule) -> list[tuple[int, float]]:
    """The (cap, seconds) windows of a limit rule."""
    windows = []
    if limit.per_minute is not None:
        windows.append((limit.per_minute, limit.window_seconds))
    if limit.per_day is not None:
        windows.append((limit.per_day, DAY))
    return windows


class Limiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Per (limit, window): (time, weight) of each forwarded call; the weight is 1, or the call's
        # SMS messages for a limit that counts messages.
        self._hits: dict[tuple[int, float], deque[tuple[float, int]]] = {}

    def check(self, rule: ToolRule, call: Admitted) -> Verdict:
        """A refusal when a limit is exceeded; a question for the human when a count is unknown. A check
        alone never counts the call (`take` does, when it is forwarded)."""
        gate: list[str] = []
        if not rule.limits:
            return call
        now = self._clock()
        for limit in rule.limits:
            if refusal := self._rate(rule, limit, now, call.arguments):
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
            if refusal := self._rate(rule, limit, now, call.arguments):
                return refusal
        for limit in rule.limits:
            weight = _weight(rule, limit, call.arguments)
            for _, seconds in _windows(limit):
                self._window(limit, seconds, now).append((now, weight))
        return call

    def _rate(self, rule: ToolRule, limit: LimitRule, now: float, arguments: dict[str, Any]) -> Refusal | None:
        weight = _weight(rule, limit, arguments)
        for cap, seconds in _windows(limit):
            hits = self._window(limit, seconds, now)
            used = sum(w for _, w in hits)
            if used + weight <= cap:
                continue
            what = "messages" if limit.count == "messages" else "calls"
            per = "per day" if seconds == DAY else _per(limit)
            if weight > cap:
                return Refusal(
                    "denied",
                    f"{weight} {what} > {'daily budget' if seconds == DAY else 'limit'} {cap} {per}",
                    f"'{rule.exposed}' would send {weight} {what}; this team may send at most {cap} {per}. "
                    "It was not called.",
                )
            # The wait until enough of the window's oldest calls leave it.
            freed, wait = used + weight - cap, 0.0
            for at, w in hits:
                freed -= w
                wait = at + seconds - now
                if freed <= 0:
                    break
            wait = max(1, math.ceil(wait))
            budget = f" ({used} of {cap} {what} used)" if limit.count == "messages" else ""
            kind = "daily budget" if seconds == DAY else "rate limit"
            return Refusal(
                "denied",
                f"{kind} {cap}{' messages' if limit.count == 'messages' else ''} {per}; retry in {wait} s",
                f"{kind.capitalize()} reached for '{rule.exposed}': {cap} {what} {per} for this team{budget}. "
                f"Try again in {wait} s. It was not called.",
            )
        return None

    def _window(self, limit: LimitRule, seconds: float, now: float) -> deque[tuple[float, int]]:
        key = (id(limit), seconds)
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
        horizon = now - seconds
        while hits and hits[0][0] <= horizon:
            hits.popleft()
        return hits


def _weight(rule: ToolRule, limit: LimitRule, arguments: dict[str, Any]) -> int:
    return message_count(rule, arguments) if limit.count == "messages" else 1
