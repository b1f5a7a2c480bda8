"""A review of the guards from the model's side: one argument, one tool name, the order of calls.

Each test drives the real proxy (`python -m proxy stdio`) with the real `mcp.Client` in front of
the real SMSAPI sandbox and judges by the sandbox's own record of what reached it. The first tests
were written against gaps the review found (now closed); the rest pin down attacks that were tried
and refused, so they stay refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from proxy.audit import digest_arguments
from proxy.backends.sandbox import normalise_number
from tests.harness import MODES, SANDBOX, calls, proxy_stdio, records, write_policy
from tests.test_policies_e2e import Human, text

pytestmark = pytest.mark.anyio


def sandbox_team(tmp: Path, record: Path, **sections: Any) -> Path:
    sections.setdefault("trifecta", {"action": "off"})
    return write_policy(
        tmp / "team.yaml",
        {"smsapi": {"command": [*SANDBOX, "--stdio", "--record", str(record)], "profile": "smsapi"}},
        scopes=["sms", "contacts"],
        audit={"path": "audit.jsonl"},
        **sections,
    )


def audit_lines(tmp: Path, tool: str) -> list[dict[str, Any]]:
    return [line for line in records(tmp / "audit.jsonl") if line["tool"] == tool and line["decision"] != "pending"]


# -- gaps the review found -------------------------------------------------------------------------


@pytest.mark.parametrize("to", ["468123456", "+468123456", "+46 8 123 456"])
async def test_a_nine_digit_number_the_country_rule_reads_as_swedish_is_polish_upstream(
    tmp_path: Path, to: str
) -> None:
    """§11 countries: read as international digits "468123456" is +46 8 123 456 (SE, allowed), but
    SMSAPI (and its sandbox) read any 9-digit number as Polish (+48 468 123 456, outside the list):
    a number the guard and the upstream would read apart is refused."""
    record = tmp_path / "calls.jsonl"
    policy = sandbox_team(tmp_path, record, sms={"recipients": {"countries": ["SE"]}})
    async with Client(proxy_stdio(policy), elicitation_callback=Human()) as client:
        result = await client.call_tool("send_sms", {"to": to, "message": "Hej"})
    sent = [normalise_number(r["arguments"]["to"]) for r in calls(record, "send_sms")]
    assert result.is_error and "SMS rules" in text(result), f"forwarded; the sandbox sent it to {sent}"
    assert sent == []


async def test_a_group_send_escapes_the_country_rule(tmp_path: Path) -> None:
    """§11 countries: every number of `to` is checked; a `group` send's numbers cannot be, so with a
    country list it is put to a human (as max_recipients does for an unknown count), never sent
    unchecked and ungated to numbers send_sms refuses."""
    record = tmp_path / "calls.jsonl"
    policy = sandbox_team(
        tmp_path,
        record,
        confirm={"destructive": False},
        sms={"recipients": {"countries": ["SE"]}},
    )
    human = Human()
    async with Client(proxy_stdio(policy), elicitation_callback=human) as client:
        direct = await client.call_tool("send_sms", {"to": "48500100201", "message": "Promocja"})
        assert direct.is_error and "country" in text(direct)
        result = await client.call_tool("send_group_sms", {"group": "Klienci VIP", "message": "Promocja"})
    forwarded = calls(record, "send_group_sms")
    assert forwarded == [] or human.messages, f"sent without a check or a human: {text(result)[:400]}"


@pytest.mark.parametrize("sender", ["Kwiaty24-BANK", "Kwiaty\u200b24", "Kwiaty24 Polisen Info"])
async def test_an_allow_list_glob_lets_any_sender_through(tmp_path: Path, sender: str) -> None:
    """§11 "Sender format: ≤ 11 characters, letters and digits, starting with a letter, or a phone
    number", and block_impersonation: a sender that `senders.allow: ["Kwiaty*"]` matches by its
    pattern must still pass both (no zero-width character, punctuation, spaces, 21 characters, BANK)."""
    record = tmp_path / "calls.jsonl"
    sms = {"senders": {"allow": ["Kwiaty*"], "block_impersonation": True}}
    policy = sandbox_team(tmp_path, record, sms=sms)
    async with Client(proxy_stdio(policy), elicitation_callback=Human()) as client:
        result = await client.call_tool("send_sms", {"to": "48500100200", "message": "Hej", "from": sender})
    assert result.is_error and "SMS rules" in text(result)
    assert calls(record, "send_sms") == []


@pytest.mark.parametrize("mode", MODES)
async def test_the_audit_digest_is_of_the_arguments_sent(tmp_path: Path, mode: str) -> None:
    """§8 audit "argument digest": a pin fills in `test: true` and the upstream receives it; the
    audit line digests the arguments sent, so it matches what reached the upstream."""
    record = tmp_path / "calls.jsonl"
    pins = [{"tools": ["send_sms"], "set": {"test": True}}]
    policy = sandbox_team(tmp_path, record, pins=pins)
    asked = {"to": "48500100200", "message": "Hej"}
    async with Client(proxy_stdio(policy), mode=mode, elicitation_callback=Human()) as client:
        result = await client.call_tool("send_sms", asked)
    assert not result.is_error, text(result)
    (sent,) = calls(record, "send_sms")
    assert sent["arguments"] == {**asked, "test": True}
    (line,) = audit_lines(tmp_path, "send_sms")
    assert line["args_sha256"] == digest_arguments(sent["arguments"])


# -- attacks that are refused (kept so they stay refused) ------------------------------------------


@pytest.mark.parametrize(
    "to",
    [
        "48500100200;4915112345678",  # a second number after a separator the upstream does not split on
        "48500100200\n+4915112345678",
        ["48500100200", "+49 151 12345678"],
        "0049 151 12345678",
        "+49-151-123-456-78",
        "\uff14\uff19\uff11\uff15\uff11\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18",  # full-width digits
        "\u0664\u0669\u0661\u0665\u0661\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668",  # Arabic-Indic digits
        "+48 500 100 200, +49 151 12345678",
        4915112345678,
        4.915112345678e12,
        {"to": "48500100200"},
        "600100200",  # 9 digits: Polish upstream, no country as international digits
        "7777",  # a short code
        "+48 701 234 567",  # Polish premium rate
    ],
)
async def test_recipient_spellings_outside_the_allowed_countries_are_refused(tmp_path: Path, to: Any) -> None:
    record = tmp_path / "calls.jsonl"
    policy = sandbox_team(tmp_path, record, sms={"recipients": {"countries": ["PL"]}})
    async with Client(proxy_stdio(policy), elicitation_callback=Human()) as client:
        result = await client.call_tool("send_sms", {"to": to, "message": "Hej"})
    assert result.is_error and "SMS rules" in text(result), text(result)
    assert calls(record, "send_sms") == []


@pytest.mark.parametrize(
    "sender",
    ["8ANK", "bAnK", "P0L1CJA", "VVHATSAPP", "ARNAZON", "Ρ0LICE", "B\u200bANK", "DHL24", "MYPKO", "SKATTEVERK"],
)
async def test_sender_spellings_of_a_blocked_name_are_refused(tmp_path: Path, sender: str) -> None:
    record = tmp_path / "calls.jsonl"
    policy = sandbox_team(tmp_path, record, sms={})
    async with Client(proxy_stdio(policy), elicitation_callback=Human()) as client:
        result = await client.call_tool("send_sms", {"to": "48500100200", "message": "Hej", "from": sender})
    assert result.is_error and "SMS rules" in text(result), text(result)
    assert calls(record, "send_sms") == []


async def test_recipient_limits_count_every_spelling_and_shape(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    limits = [{"tools": ["send_*"], "max_recipients": 2}]
    policy = sandbox_team(tmp_path, record, limits=limits)
    three = "48500100200,48500100201;48500100202"
    async with Client(proxy_stdio(policy), elicitation_callback=Human()) as client:
        for to in (three, [three], ["48500100200", ["48500100201", "48500100202"]], "48500100200\n1\n2"):
            result = await client.call_tool("send_sms", {"to": to, "message": "Hej"})
            assert result.is_error, (to, text(result))
    assert calls(record, "send_sms") == []


async def test_a_message_budget_counts_ucs2_and_extension_characters(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    limits = [{"tools": ["send_*"], "per_day": 1, "count": "messages"}]
    policy = sandbox_team(tmp_path, record, sms={}, limits=limits)
    async with Client(proxy_stdio(policy), elicitation_callback=Human()) as client:
        for message in ("ż" * 71, "€" * 81, "e\u0301" * 36, "😀" * 36):  # each is 2 parts with the " x"
            result = await client.call_tool("send_sms", {"to": "48500100200", "message": message + " x"})
            assert result.is_error and "per day" in text(result), text(result)
    assert calls(record, "send_sms") == []


@pytest.mark.parametrize(
    "name",
    ["SEND_SMS", "send_sms ", "send\u200b_sms", "ѕend_sms", "smsapi__send_sms", "/sms/send_sms", "delete_contact"],
)
async def test_tool_name_tricks_reach_nothing(tmp_path: Path, name: str) -> None:
    record = tmp_path / "calls.jsonl"
    policy = sandbox_team(
        tmp_path, record, tools={"deny": ["delete_*"]}, confirm={"tools": ["send_*"], "without_elicitation": "deny"}
    )
    async with Client(proxy_stdio(policy)) as client:  # no elicitation: a gated call cannot pass
        result = await client.call_tool(name, {"to": "48500100200", "message": "Hej", "id": "x"})
    assert result.is_error
    assert calls(record) == []


async def test_concurrent_sends_take_only_the_free_slots(tmp_path: Path) -> None:
    import anyio

    record = tmp_path / "calls.jsonl"
    limits = [{"tools": ["send_sms"], "per_minute": 3}]
    policy = sandbox_team(tmp_path, record, limits=limits, confirm={"destructive": False})
    outcomes: list[bool] = []
    async with Client(proxy_stdio(policy)) as client:

        async def send(n: int) -> None:
            result = await client.call_tool("send_sms", {"to": "48500100200", "message": f"Hej {n}"})
            outcomes.append(result.is_error)

        async with anyio.create_task_group() as tg:
            for n in range(12):
                tg.start_soon(send, n)
    assert outcomes.count(False) == 3
    assert len(calls(record, "send_sms")) == 3


@pytest.mark.parametrize("mode", MODES)
async def test_the_human_sees_every_number_as_it_is_sent(tmp_path: Path, mode: str) -> None:
    record = tmp_path / "calls.jsonl"
    policy = sandbox_team(tmp_path, record)
    human = Human()
    arguments = {"to": "48500100200", "message": "Hej\u202e", "date": "", "test": False}
    wire = {"x": -0.0, "y": 1e400, "z": 10**300}
    async with Client(proxy_stdio(policy), mode=mode, elicitation_callback=human) as client:
        result = await client.call_tool("send_sms", {**arguments, **wire})
    assert len(human.messages) == 1
    assert "\\u202e" in human.messages[0] and "-0.0" in human.messages[0] and "null" in human.messages[0]
    for sent in calls(record, "send_sms"):  # the sandbox refuses the extra keys, but saw exactly these
        assert json.dumps(sent["arguments"]["z"]) == str(10**300)
    assert result.is_error  # the sandbox's schema refuses x, y and z
