"""The guards as pure functions: limits with a fake clock, the trifecta, pins, recipient counting, masking."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from proxy.audit import AuditLog, digest_arguments, mask_phone
from proxy.catalog import ToolRule
from proxy.guards import Admitted, Ask, Refusal
from proxy.guards.limits import Limiter, count_recipients
from proxy.guards.pins import apply_pins
from proxy.guards.trifecta import Trifecta
from proxy.policy import LimitRule, PinRule, RecipientSpec
from proxy.state import MAX_SESSIONS, Full, MemoryState, Window


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tool(name: str, **changes: Any) -> ToolRule:
    base = ToolRule(
        server="smsapi",
        name=name,
        exposed=name,
        listed=True,
        scope=None,
        visible=True,
        hidden_reason=None,
        gated=False,
        gate_reasons=(),
        skip_warning=False,
        legs=frozenset(),
        verbatim=None,
        read_only=False,
        destructive=False,
        limits=(),
        pins=(),
        recipients=None,
        groups=frozenset(),
    )
    return replace(base, **changes)


SEND = tool("send_sms", legs=frozenset({"external"}), recipients=RecipientSpec(args=("to",), group_args=("group",)))
READ = tool("get_sms", legs=frozenset({"untrusted", "sensitive"}))
CONTACTS = tool("get_contacts", legs=frozenset({"untrusted", "sensitive"}))
UNTRUSTED_ONLY = tool("get_groups", legs=frozenset({"untrusted"}))


# ---- limits: sliding window

OK = Admitted({})


@pytest.mark.anyio
async def test_per_minute_refuses_with_the_wait_and_slides() -> None:
    clock = Clock()
    limiter = Limiter(MemoryState(clock), "t")
    rule = replace(SEND, limits=(LimitRule(tools=("send_*",), per_minute=2),))
    for step in (0.0, 10.0):
        clock.now += step
        assert await limiter.take(rule, OK) == OK
    clock.now += 5  # calls at t=0 and t=10; now t=15
    refusal = await limiter.check(rule, OK)
    assert isinstance(refusal, Refusal) and refusal.decision == "denied"
    assert "Try again in 45 s" in refusal.message and "2 calls per minute" in refusal.message
    assert isinstance(await limiter.take(rule, OK), Refusal)
    clock.now += 45  # t=60: the first call leaves the window (a window is (now-60, now])
    assert await limiter.check(rule, OK) == OK
    assert await limiter.take(rule, OK) == OK
    assert isinstance(await limiter.take(rule, OK), Refusal)  # t=10 and t=60 are in the window


@pytest.mark.anyio
async def test_window_seconds_and_shared_pattern_window() -> None:
    clock = Clock()
    limiter = Limiter(MemoryState(clock), "t")
    limit = LimitRule(tools=("send_*",), per_minute=1, window_seconds=2)
    sms = replace(SEND, limits=(limit,))
    group = replace(SEND, name="send_group_sms", exposed="send_group_sms", limits=(limit,))
    assert await limiter.take(sms, OK) == OK
    refusal = await limiter.take(group, OK)  # one window for every tool the pattern matches
    assert isinstance(refusal, Refusal) and "per 2 s" in refusal.message and "Try again in 2 s" in refusal.message
    clock.now += 2.01
    assert await limiter.take(group, OK) == OK


@pytest.mark.anyio
async def test_refused_calls_do_not_count() -> None:
    clock = Clock()
    limiter = Limiter(MemoryState(clock), "t")
    rule = replace(SEND, limits=(LimitRule(tools=("send_*",), per_minute=1),))
    for _ in range(5):
        assert await limiter.check(rule, OK) == OK  # a check alone never counts
    assert await limiter.take(rule, OK) == OK
    assert isinstance(await limiter.take(rule, OK), Refusal)


@pytest.mark.anyio
async def test_limits_are_per_team_even_in_one_shared_state() -> None:
    state = MemoryState(Clock())
    rule = replace(SEND, limits=(LimitRule(tools=("send_*",), per_minute=1),))
    first, second = Limiter(state, "support"), Limiter(state, "marketing")
    assert await first.take(rule, OK) == OK
    assert await second.take(rule, OK) == OK
    assert isinstance(await Limiter(state, "support").take(rule, OK), Refusal)  # another replica, same team


def test_window_seconds_needs_per_minute_and_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="window_seconds applies only to per_minute"):
        LimitRule(tools=("x",), max_recipients=1, window_seconds=5)
    with pytest.raises(ValueError):
        LimitRule(tools=("x",), per_minute=1, window_seconds=0.5)
    assert LimitRule(tools=("x",), per_minute=1).window_seconds == 60


# ---- limits: recipients


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"to": "48600100200"}, (1, False)),
        ({"to": "+48 600 100 200"}, (1, False)),  # spaces inside one number
        ({"to": "48600100200,48600100201, 48600100202"}, (3, False)),
        ({"to": "48600100200;48600100201"}, (2, False)),
        ({"to": "48600100200,,"}, (1, False)),
        ({"to": ["48600100200", "48600100201,48600100202"]}, (3, False)),
        ({"to": 48600100200}, (1, False)),
        ({"to": {"a": 1}}, (0, True)),
        ({"group": "Klienci"}, (0, True)),
        ({"to": "48600100200", "group": ""}, (1, False)),
        ({}, (0, False)),
    ],
)
def test_count_recipients(arguments: dict[str, Any], expected: tuple[int, bool]) -> None:
    assert count_recipients(SEND, arguments) == expected


@pytest.mark.anyio
async def test_max_recipients_refuses_and_group_sends_are_gated() -> None:
    limiter = Limiter(MemoryState(Clock()), "t")
    rule = replace(SEND, limits=(LimitRule(tools=("send_*",), max_recipients=2),))
    two = Admitted({"to": "1111111,2222222"})
    assert await limiter.check(rule, two) == two
    refusal = await limiter.check(rule, Admitted({"to": "1111111,2222222,3333333"}))
    assert isinstance(refusal, Refusal) and refusal.reason == "3 recipients > max 2"
    asked = await limiter.check(rule, Admitted({"group": "VIP"}))
    assert isinstance(asked, Ask) and asked.arguments == {"group": "VIP"}
    assert len(asked.reasons) == 1 and asked.reasons[0].startswith("recipient count unknown")


# ---- trifecta


@pytest.mark.anyio
async def test_trifecta_blocks_naming_the_tainting_tools() -> None:
    tri = Trifecta("block", 1800, MemoryState(Clock()))
    assert await tri.check("s", SEND, OK) == OK
    await tri.record("s", UNTRUSTED_ONLY)
    assert await tri.check("s", SEND, OK) == OK  # two legs are fine (Rule of Two)
    await tri.record("s", READ)
    refusal = await tri.check("s", SEND, OK)
    assert isinstance(refusal, Refusal) and refusal.decision == "blocked"
    assert "tainted by: get_groups, get_sms" in refusal.message
    assert await tri.check("other", SEND, OK) == OK  # another session is not tainted
    assert await tri.check("s", READ, OK) == OK  # only external calls are judged


@pytest.mark.anyio
async def test_trifecta_confirm_and_off() -> None:
    confirm = Trifecta("confirm", 1800, MemoryState(Clock()))
    off = Trifecta("off", 1800, MemoryState(Clock()))
    for tri in (confirm, off):
        await tri.record("s", UNTRUSTED_ONLY)
        await tri.record("s", tool("get_blacklist", legs=frozenset({"sensitive"})))
    asked = await confirm.check("s", SEND, OK)
    assert isinstance(asked, Ask) and "get_blacklist, get_groups" in asked.reasons[0]
    assert await off.check("s", SEND, OK) == OK


@pytest.mark.anyio
async def test_trifecta_idle_window_only_for_sessionless_keys() -> None:
    clock = Clock()
    tri = Trifecta("block", 30, MemoryState(clock))
    await tri.record("p/stateless", READ, expires=True)
    await tri.record("p/abc", READ)
    clock.now += 29
    assert isinstance(await tri.check("p/stateless", SEND, OK, expires=True), Refusal)  # still within the window
    clock.now += 29  # activity (the check) restarted the window
    assert isinstance(await tri.check("p/stateless", SEND, OK, expires=True), Refusal)
    clock.now += 31
    assert await tri.check("p/stateless", SEND, OK, expires=True) == OK
    assert isinstance(await tri.check("p/abc", SEND, OK), Refusal)  # a real session never forgets


@pytest.mark.anyio
async def test_trifecta_memory_is_bounded() -> None:
    clock = Clock()
    state = MemoryState(clock)
    tri = Trifecta("block", 30, state)
    for i in range(MAX_SESSIONS + 10):
        await tri.record(f"s{i}", READ)
    assert len(state._sessions) <= MAX_SESSIONS
    assert await tri.legs(f"s{MAX_SESSIONS + 9}")  # the newest survive


# ---- pins


PINNED = replace(SEND, pins=(PinRule(tools=("send_*",), set={"test": True}, forbid=("date",)),))


def test_pin_fills_in_a_missing_value_without_touching_the_input() -> None:
    arguments = {"to": "48600100200", "message": "hi"}
    sent = apply_pins(PINNED, Admitted(arguments))
    assert isinstance(sent, Admitted) and sent.arguments == {**arguments, "test": True} and "test" not in arguments


@pytest.mark.parametrize("value", [False, "true", 1, None])
def test_pin_refuses_an_override(value: Any) -> None:
    refusal = apply_pins(PINNED, Admitted({"to": "1", "test": value}))
    assert isinstance(refusal, Refusal) and refusal.decision == "denied"
    assert refusal.reason == "argument 'test' is pinned"
    assert "pinned to true" in refusal.message


def test_a_pin_refusal_echoes_the_models_value_inert() -> None:
    refusal = apply_pins(PINNED, Admitted({"test": "<img src=x onerror=alert(1)>\u202e![x](https://e.example/)"}))
    assert isinstance(refusal, Refusal)
    for raw in ("<", ">", "\u202e", "!["):
        assert raw not in refusal.message, refusal.message
    assert "\\u003cimg" in refusal.message  # shown, escaped


def test_pin_accepts_the_same_value_and_forbid_refuses() -> None:
    assert apply_pins(PINNED, Admitted({"test": True})) == Admitted({"test": True})
    refusal = apply_pins(PINNED, Admitted({"date": "2030-01-01"}))
    assert isinstance(refusal, Refusal) and refusal.reason == "argument 'date' is forbidden by policy"
    assert apply_pins(READ, Admitted({"a": 1})) == Admitted({"a": 1})


# ---- audit


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("+48600100200", "48******200"),
        ("to 48 600 100 200, ok", "to 48******200, ok"),
        ("(+46) 70-111-22-33", "(46******233"),
        ("order 123456", "order 123456"),  # six digits: not a phone number
    ],
)
def test_mask_phone(text: str, masked: str) -> None:
    assert mask_phone(text) == masked
    assert mask_phone(mask_phone(text)) == mask_phone(text)


def test_audit_line_masks_free_text_but_not_digests(tmp_path: Any) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    digest = digest_arguments({"to": "48600100200"})
    log.write(
        team="t",
        principal="bearer:1234567890abcdef",
        session="0123456789abcdef",
        tool="x\u2028+48600100200",
        decision="denied",
        reason="to 48600100200",
        args_sha256=digest,
    )
    (line,) = path.read_text().splitlines()  # flushed before close, one line even with U+2028
    record = json.loads(line)
    assert record["principal"] == "bearer:1234567890abcdef" and record["session"] == "0123456789abcdef"
    assert record["args_sha256"] == digest and "48600100200" not in line
    assert record["reason"] == "to 48******200" and record["time"].endswith("Z")
    log.close()


@pytest.mark.anyio
async def test_one_time_states_and_rate_windows_share_a_state_without_mixing() -> None:
    state = MemoryState(Clock())
    window = [Window("team:limit:60", 2, 60.0)]
    assert await state.rate(window, take=True) is None
    assert await state.first_use("nonce-1", 600)
    assert await state.rate(window, take=True) is None
    assert await state.first_use("nonce-2", 600) and not await state.first_use("nonce-2", 600)
    assert isinstance(await state.rate(window, take=False), Full)  # both calls still count


@pytest.mark.anyio
async def test_a_call_one_limit_refuses_counts_in_none_of_its_limits() -> None:
    limiter = Limiter(MemoryState(Clock()), "t")
    per_minute = LimitRule(tools=("send_*",), per_minute=2)
    budget = LimitRule(tools=("send_*",), per_day=1)
    rule = replace(SEND, limits=(per_minute, budget))
    assert await limiter.take(rule, OK) == OK
    refused = await limiter.take(rule, OK)  # the daily budget is spent
    assert isinstance(refused, Refusal) and "Daily budget" in refused.message
    # The refused call took no per-minute slot: with the budget alone it would now fit once more.
    assert await limiter.take(replace(SEND, limits=(per_minute,)), OK) == OK
