"""How many numbers one send may name (sms.MAX_RECIPIENTS), end to end against the SMSAPI sandbox on
`serve` (both protocol eras) and as pure functions. A `to` of 72,000 numbers held the proxy's one
event loop ~34 s (each number parsed ~200 µs, and parsed again for the limits, the cost line and the
audit), during which no client of any team was answered. It is refused on the split, before any
number is parsed, and the upstream never sees it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from proxy import sms
from proxy.guards import Admitted, Refusal
from proxy.guards.limits import count_recipients
from proxy.guards.sms import check_sms
from proxy.policy import RecipientSpec, SmsPolicy
from tests.harness import MODES, calls, proxy_http, records
from tests.test_guards_unit import SEND
from tests.test_policies_e2e import Human, text
from tests.test_sms_e2e import sandbox

BOUND = sms.MAX_RECIPIENTS
REFUSED = f"more than {BOUND} recipients"


def numbers(n: int) -> list[str]:
    """n different valid Polish mobile numbers in international digits."""
    return [str(48_500_100_200 + i) for i in range(n)]


# Without an `sms` section the bound holds as well: the limits' count and the audit line parse too.
SECTIONS: list[dict[str, Any]] = [
    {"sms": {}},
    {"limits": [{"tools": ["send_sms"], "max_recipients": 5000}]},
]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sections", SECTIONS, ids=["sms", "limits-only"])
async def test_a_send_past_the_bound_is_refused_before_any_number_is_parsed(
    tmp_path: Path, mode: str, sections: dict[str, Any]
) -> None:
    record = tmp_path / "calls.jsonl"
    policy = sandbox(tmp_path, record, **sections)
    to = ",".join(numbers(72_000))  # ~936 KB, the review's reproduction
    human = Human()
    with proxy_http(policy) as proxy:
        async with Client(proxy.url, mode=mode, elicitation_callback=human) as client:
            # A bound on a hang, not a speed test: parsing every number took ~34 s.
            with anyio.fail_after(30):
                refused = await client.call_tool("send_sms", {"to": to, "message": "Hej"})
                # The proxy answers the next call as before.
                fine = await client.call_tool("send_sms", {"to": "48500100200", "message": "Hej"})
    said = text(refused)
    assert refused.is_error and REFUSED in said and "It was not called" in said, said
    assert f"at most {BOUND} numbers" in said and "group" in said  # what to do instead
    assert len(human.messages) == 1  # asked about the one-number call only
    assert not fine.is_error, text(fine)
    (sent,) = calls(record, "send_sms")  # only the one-number call reached the upstream
    assert sent["arguments"]["to"] == "48500100200"
    denied = [r for r in records(tmp_path / "audit.jsonl") if r["decision"] == "denied"]
    assert [r["reason"] for r in denied] == [f"recipients > {BOUND}"]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_a_send_at_the_bound_is_checked_by_the_other_rules(tmp_path: Path, mode: str) -> None:
    record = tmp_path / "calls.jsonl"
    limits = [{"tools": ["send_sms"], "max_recipients": 100}]
    policy = sandbox(tmp_path, record, sms={"recipients": {"countries": ["PL"]}}, limits=limits)
    to = ",".join(numbers(BOUND))
    with proxy_http(policy) as proxy:
        async with Client(proxy.url, mode=mode, elicitation_callback=Human()) as client:
            with anyio.fail_after(30):
                over_team = await client.call_tool("send_sms", {"to": to, "message": "Hej"})
                swedish = ",".join([*numbers(BOUND - 1), "46701234567"])
                foreign = await client.call_tool("send_sms", {"to": swedish, "message": "Hej"})
    # Refused by the team's own limit and by its countries, not by the bound.
    assert over_team.is_error and f"names {BOUND} recipients" in text(over_team), text(over_team)
    assert foreign.is_error and "country" in text(foreign) and REFUSED not in text(foreign), text(foreign)
    assert calls(record, "send_sms") == []


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_a_send_at_the_bound_reaches_the_upstream(tmp_path: Path, mode: str) -> None:
    record = tmp_path / "calls.jsonl"
    policy = sandbox(tmp_path, record, sms={"recipients": {"countries": ["PL"]}})
    to = numbers(BOUND)
    human = Human()
    with proxy_http(policy) as proxy:
        async with Client(proxy.url, mode=mode, elicitation_callback=human) as client:
            with anyio.fail_after(30):
                # `test`: the sandbox prices the send without spending its points.
                result = await client.call_tool("send_sms", {"to": ",".join(to), "message": "Hej", "test": True})
    assert REFUSED not in text(result)
    (sent,) = calls(record, "send_sms")
    assert sent["arguments"]["to"] == ",".join(to)
    assert any(f"{BOUND} recipients" in message for message in human.messages), human.messages  # the cost line
    (line,) = [r for r in records(tmp_path / "audit.jsonl") if r["tool"] == "send_sms" and r["decision"] != "pending"]
    assert line["recipients"] == BOUND


# -- the pure functions ----------------------------------------------------------------------------


def test_the_bound_counts_what_a_send_names() -> None:
    assert sms.too_many(numbers(BOUND)) is None
    problem = sms.too_many(numbers(BOUND + 1))
    assert problem is not None and f"more than {BOUND} recipients" in problem
    assert f"at most {BOUND} numbers" in problem and "group" in problem
    # Written twice, a number is still named twice: the bound is on what must be read, not on who gets it.
    assert sms.too_many(["48500100200"] * (BOUND + 1)) is not None


def test_past_the_bound_no_number_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(value: str) -> None:
        raise AssertionError(f"{value} was parsed")

    monkeypatch.setattr(sms, "parse_number", parse)
    many = numbers(BOUND + 1)
    assert sms.check_recipients(many).problem == sms.too_many(many)
    assert sms.distinct_recipients(many) == BOUND + 1
    arguments = {"to": ",".join(numbers(72_000))}
    assert count_recipients(SEND, arguments) == (BOUND + 1, False)  # read no further than one past it
    for policy in (None, SmsPolicy()):
        refusal = check_sms(SEND, policy, Admitted(arguments))
        assert isinstance(refusal, Refusal) and refusal.reason == f"recipients > {BOUND}"
        assert "'send_sms' was refused" in refusal.message and "It was not called." in refusal.message


def test_the_bound_adds_up_every_recipient_argument() -> None:
    rule = replace(SEND, recipients=RecipientSpec(args=("to", "cc"), group_args=("group",)))
    half = BOUND // 2 + 1
    refusal = check_sms(rule, None, Admitted({"to": numbers(half), "cc": numbers(2 * half)[half:]}))
    assert isinstance(refusal, Refusal) and refusal.reason == f"recipients > {BOUND}"
    assert check_sms(rule, None, Admitted({"to": numbers(half), "cc": []})) == Admitted({"to": numbers(half), "cc": []})


@pytest.mark.parametrize(
    "value",
    [
        ",".join(numbers(5000)),
        ";\n".join(numbers(5000)),
        numbers(5000),
        [numbers(2500), [numbers(2500)]],
        [int(n) for n in numbers(5000)],
    ],
    ids=["commas", "separators", "list", "nested", "integers"],
)
def test_split_stops_one_past_a_limit(value: Any) -> None:
    assert sms.split_recipients(value, BOUND) == numbers(BOUND + 1)
    assert len(sms.split_recipients(value)) == 5000


def test_split_reads_any_shape_in_one_pass() -> None:
    """Nested lists were flattened level by level (each number copied once per level) by recursion
    (a deep enough list raised RecursionError); a megabyte with no number in it is read once."""
    deep: Any = ["48500100200"]
    for _ in range(5000):
        deep = [deep, None, ""]
    assert sms.split_recipients(deep) == ["48500100200"]
    assert sms.split_recipients("," * 1_000_000) == []
    assert sms.split_recipients(" ; \n" * 250_000) == []
    assert sms.split_recipients("4" * 1_000_000, BOUND) == ["4" * 1_000_000]  # one (invalid) number
    assert sms.split_recipients({"to": ["1"] * 100_000}) == ["{'to': ['1', '1', '1', '1', '1', '1', ...]}"]


def test_a_long_value_is_not_kept_by_the_number_cache() -> None:
    """The cache kept every string it was given: 4,096 calls of a megabyte each held 4 GB."""
    sms._parse.cache_clear()
    assert sms.parse_number("4" * 100_000) is None
    assert sms.check_recipients(["4" * 100_000]).problem is not None
    assert sms._parse.cache_info().currsize == 0
