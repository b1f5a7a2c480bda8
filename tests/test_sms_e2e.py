"""SMS rules end to end (SPEC §11): senders, recipients, parts and message budgets, in front of the
SMSAPI sandbox and the 46elks stand-in, with a client that accepts every confirmation so only these
rules can refuse. Every refusal is checked against the upstream's own record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.harness import ELKS, MODES, PY, SANDBOX, calls, proxy_stdio, records, write_policy
from tests.test_limits_pins import ELKS_ENV
from tests.test_policies_e2e import Human, text

pytestmark = pytest.mark.anyio

SCOPES = ["sms", "contacts"]
LONG = ("Twoja wizyta jest potwierdzona na jutro o 10:00. " * 5)[:200]  # 200 GSM-7 characters: 2 parts


def sandbox(tmp: Path, record: Path, **sections: Any) -> Path:
    return write_policy(
        tmp / "team.yaml",
        {"smsapi": {"command": [*SANDBOX, "--stdio", "--record", str(record)], "profile": "smsapi"}},
        scopes=SCOPES,
        trifecta={"action": "off"},
        audit={"path": "audit.jsonl"},
        **sections,
    )


SMS = {"recipients": {"countries": ["PL", "SE"]}}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("arguments", "rule"),
    [
        ({"from": "B4NK"}, "sender"),
        ({"from": "P0L1CE"}, "sender"),
        ({"from": "DHLExpress"}, "sender"),
        ({"from": "PKOBP"}, "sender"),
        ({"from": "ВANK"}, "sender"),  # a Cyrillic В
        ({"from": "1ACME"}, "sender"),  # not a sender ID: starts with a digit
        ({"to": "+4612"}, "recipients"),
        ({"to": "48500100200,+4915112345678"}, "recipients"),  # DE is not allowed
    ],
)
async def test_a_send_the_sms_rules_refuse_never_reaches_the_sandbox(
    tmp_path: Path, mode: str, arguments: dict[str, Any], rule: str
) -> None:
    record = tmp_path / "calls.jsonl"
    policy = sandbox(tmp_path, record, sms=SMS)
    human = Human()
    async with Client(proxy_stdio(policy), mode=mode, elicitation_callback=human) as client:
        result = await client.call_tool("send_sms", {"to": "48500100200", "message": "Hej", **arguments})
    assert result.is_error and "SMS rules" in text(result)
    assert human.messages == []  # refused before anyone was asked
    assert calls(record, "send_sms") == []
    (line,) = [r for r in records(tmp_path / "audit.jsonl") if r["tool"] == "send_sms"]
    assert line["decision"] == "denied" and line["reason"].startswith(f"sms {rule}:")


async def test_premium_rate_recipients_are_refused(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    policy = sandbox(tmp_path, record, sms={})
    async with Client(proxy_stdio(policy), elicitation_callback=Human()) as client:
        result = await client.call_tool("send_sms", {"to": "+449090000000", "message": "Hej"})
    assert result.is_error and "premium" in text(result)
    assert calls(record, "send_sms") == []


@pytest.mark.parametrize("mode", MODES)
async def test_the_prompt_and_the_audit_show_parts_and_messages(tmp_path: Path, mode: str) -> None:
    record = tmp_path / "calls.jsonl"
    policy = sandbox(tmp_path, record, sms=SMS)
    human = Human()
    to = "48500100200, 48500100201,+46701234567,48500100200"  # a duplicate counts once
    async with Client(proxy_stdio(policy), mode=mode, elicitation_callback=human) as client:
        result = await client.call_tool("send_sms", {"to": to, "message": LONG, "from": "Kwiaty24"})
    assert not result.is_error, text(result)
    assert len(calls(record, "send_sms")) == 1
    assert "2 parts × 3 recipients = 6 messages" in human.messages[0]
    # (the 2026-07-28 era also logs the round trip that asked: "pending")
    (line,) = [r for r in records(tmp_path / "audit.jsonl") if r["tool"] == "send_sms" and r["decision"] != "pending"]
    assert (line["decision"], line["sms_parts"], line["sms_messages"]) == ("confirmed", 2, 6)


async def test_a_daily_message_budget_counts_messages_not_calls(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    limits = [{"tools": ["send_sms"], "per_day": 5, "count": "messages"}]
    policy = sandbox(tmp_path, record, sms=SMS, limits=limits)
    async with Client(proxy_stdio(policy), elicitation_callback=Human()) as client:
        too_many = await client.call_tool("send_sms", {"to": "48500100200,48500100201,48500100202", "message": LONG})
        assert too_many.is_error and "6 messages" in text(too_many) and "5 per day" in text(too_many)
        for _ in range(2):  # 2 + 2 messages
            assert not (await client.call_tool("send_sms", {"to": "48500100200", "message": LONG})).is_error
        assert not (await client.call_tool("send_sms", {"to": "48500100200", "message": "Hej"})).is_error
        spent = await client.call_tool("send_sms", {"to": "48500100200", "message": "Hej"})
        assert spent.is_error and "5 messages per day" in text(spent)
    assert len(calls(record, "send_sms")) == 3


@pytest.mark.parametrize("mode", MODES)
async def test_elks46_refuses_an_impersonating_sender(tmp_path: Path, mode: str) -> None:
    record = tmp_path / "elks.jsonl"
    policy = write_policy(
        tmp_path / "elks.yaml",
        {"elks": {"command": [PY, str(ELKS[1]), "--record", str(record)], "profile": "elks46",
                  "env": ELKS_ENV}},
        scopes=["sms", "account"],
        sms={},
        trifecta={"action": "off"},
    )  # fmt: skip
    async with Client(proxy_stdio(policy), mode=mode, elicitation_callback=Human()) as client:
        refused = await client.call_tool("send_sms", {"to": "+46701112233", "message": "Hej", "from": "P0LIS"})
        sent = await client.call_tool("send_sms", {"to": "+46701112233", "message": "Hej", "from": "Lasse"})
    assert refused.is_error and "impersonat" in text(refused)
    assert not sent.is_error, text(sent)
    assert [c["arguments"]["from"] for c in calls(record, "send_sms")] == ["Lasse"]
