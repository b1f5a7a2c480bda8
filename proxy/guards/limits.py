"""Rate and recipient limits, per team and per limit rule, in a sliding window.

A limit rule's window is shared by every tool its globs match (`send_*` counts sends of any
kind together). Only forwarded calls are counted, and the count is taken in the same
synchronous step that admits the call (`take`), so calls waiting on a human confirmation
cannot all slip past one free slot.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from proxy.catalog import ToolRule
from proxy.guards import Admitted, Ask, Refusal, Verdict
from proxy.guards.sms import message_count
from proxy.policy import LimitRule
from proxy.sms import MAX_RECIPIENTS, distinct_recipients, names_group, split_recipients
from proxy.state import Full, SharedState, Window


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
    if names_group(arguments, spec.group_args):
        unknown = True
    # Separators are commas, semicolons and newlines, never spaces: "+48 600 100 200" is one number.
    # Past the bound (which refuses the call) the rest is not read.
    named = [n for v in values if _countable(v) for n in split_recipients(v, MAX_RECIPIENTS)]
    return distinct_recipients(named), unknown


def _per(limit: LimitRule) -> str:
    if limit.window_seconds == 60:
        return "per minute"
    return f"per {limit.window_seconds:g} s"


DAY = 86_400.0


class Limiter:
    """Every limit rule's windows, counted in the shared state under a key that names the rule the
    same way on every replica (its team and its content), so N replicas allow N× nothing."""

    def __init__(self, state: SharedState, team: str) -> None:
        self._state = state
        self._team = team
        self._keys: dict[int, str] = {}

    def _windows(self, rule: ToolRule, limit: LimitRule, arguments: dict[str, Any]) -> list[Window]:
        key = self._keys.get(id(limit))
        if key is None:
            digest = hashlib.sha256(limit.model_dump_json().encode()).hexdigest()[:16]
            key = self._keys[id(limit)] = f"{self._team}:{digest}"
        weight = message_count(rule, arguments) if limit.count == "messages" else 1
        windows = []
        if limit.per_minute is not None:
            windows.append(Window(f"{key}:{limit.window_seconds:g}", limit.per_minute, limit.window_seconds, weight))
        if limit.per_day is not None:
            windows.append(Window(f"{key}:day", limit.per_day, DAY, weight))
        return windows

    async def check(self, rule: ToolRule, call: Admitted) -> Verdict:
        """A refusal when a limit is exceeded; a question for the human when a count is unknown. A check
        alone never counts the call (`take` does, when it is forwarded)."""
        gate: list[str] = []
        if not rule.limits:
            return call
        for limit in rule.limits:
            if refusal := await self._rate(rule, limit, call.arguments):
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

    async def take(self, rule: ToolRule, call: Admitted) -> Admitted | Refusal:
        """Admit a call against every window of every limit and count it, in one atomic step: in all of
        them or, when one is full, in none (calls that waited on a human cannot all take the one slot
        that was free when they were checked)."""
        owners: list[LimitRule] = []
        windows: list[Window] = []
        for limit in rule.limits:
            mine = self._windows(rule, limit, call.arguments)
            owners += [limit] * len(mine)
            windows += mine
        if not windows:
            return call
        full = await self._state.rate(windows, take=True)
        return call if full is None else self._refusal(rule, owners[full.window], windows[full.window], full)

    async def _rate(self, rule: ToolRule, limit: LimitRule, arguments: dict[str, Any]) -> Refusal | None:
        windows = self._windows(rule, limit, arguments)
        if not windows:
            return None
        full = await self._state.rate(windows, take=False)
        return None if full is None else self._refusal(rule, limit, windows[full.window], full)

    @staticmethod
    def _refusal(rule: ToolRule, limit: LimitRule, window: Window, full: Full) -> Refusal:
        cap, used, weight = window.cap, full.used, window.weight
        what = "messages" if limit.count == "messages" else "calls"
        per = "per day" if window.seconds == DAY else _per(limit)
        if weight > cap:
            return Refusal(
                "denied",
                f"{weight} {what} > {'daily budget' if window.seconds == DAY else 'limit'} {cap} {per}",
                f"'{rule.exposed}' would send {weight} {what}; this team may send at most {cap} {per}. "
                "It was not called.",
            )
        wait = max(1, math.ceil(full.wait))
        budget = f" ({used} of {cap} {what} used)" if limit.count == "messages" else ""
        kind = "daily budget" if window.seconds == DAY else "rate limit"
        return Refusal(
            "denied",
            f"{kind} {cap}{' messages' if limit.count == 'messages' else ''} {per}; retry in {wait} s",
            f"{kind.capitalize()} reached for '{rule.exposed}': {cap} {what} {per} for this team{budget}. "
            f"Try again in {wait} s. It was not called.",
        )
