"""What one argument a model writes can do to the SMS rules, end to end against the SMSAPI
sandbox, on `stdio` and on `serve` (both protocol eras). Each test failed before its fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.harness import MODES, SANDBOX, calls, proxy_http, proxy_stdio, records, write_policy
from tests.test_policies_e2e import Human, text

pytestmark = pytest.mark.anyio


def _policy(tmp: Path, record: Path, **sections: Any) -> Path:
    return write_policy(
        tmp / "team.yaml",
        {"smsapi": {"command": [*SANDBOX, "--stdio", "--record", str(record)], "profile": "smsapi"}},
        scopes=["sms", "contacts"],
        trifecta={"action": "off"},
        audit={"path": "audit.jsonl"},
        **sections,
    )


@pytest.mark.parametrize("mode", MODES)
async def test_a_megabyte_sender_id_is_refused_without_holding_the_proxy(tmp_path: Path, mode: str) -> None:
    """A sender of ~1 MB made of a short shipped name ("ING") was read for impersonation before its
    format: quadratic in its length, about 50 s of the proxy's one event loop for one call, during
    which no other client of any team was answered. It is no sender ID at all, so it is refused at once."""
    record = tmp_path / "calls.jsonl"
    policy = _policy(tmp_path, record, sms={})
    sender = "ING" * 300_000
    with proxy_http(policy) as proxy:
        async with Client(proxy.url, mode=mode, elicitation_callback=Human()) as client:
            # A bound on a hang, not a speed test: the old reading took ~50 s, the format check takes none.
            with anyio.fail_after(30):
                refused = await client.call_tool("send_sms", {"to": "48500100200", "message": "Hej", "from": sender})
    assert refused.is_error and "not a valid sender ID" in text(refused)
    assert calls(record, "send_sms") == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sender", ["Norclea", "clhl", "cIhI-SE", "c1hl"])
async def test_cl_for_d_is_an_impersonation(tmp_path: Path, mode: str, sender: str) -> None:
    """A "cl" reads as "d" (Unicode confusables say so, as they say "rn" reads as "m", which was folded):
    "Norclea" passed for Nordea, "clhl" for DHL."""
    record = tmp_path / "calls.jsonl"
    policy = _policy(tmp_path, record, sms={})
    human = Human()
    async with Client(proxy_stdio(policy), mode=mode, elicitation_callback=human) as client:
        refused = await client.call_tool("send_sms", {"to": "48500100200", "message": "Hej", "from": sender})
    assert refused.is_error and "impersonation" in text(refused), text(refused)
    assert human.messages == []
    assert calls(record, "send_sms") == []


@pytest.mark.parametrize("mode", MODES)
async def test_a_form_feed_does_not_price_a_three_part_sms_as_one(tmp_path: Path, mode: str) -> None:
    """A form feed was counted as a GSM-7 escape: 150 letters and one form feed were "1 part" in the
    prompt and against the message budget, while the sandbox, whose GSM table has no form feed, sends
    the text as UCS-2 and bills 3 parts."""
    record = tmp_path / "calls.jsonl"
    limits = [{"tools": ["send_*"], "per_day": 2, "count": "messages"}]
    policy = _policy(tmp_path, record, sms={}, limits=limits)
    human = Human()
    message = "a" * 150 + "\f"
    async with Client(proxy_stdio(policy), mode=mode, elicitation_callback=human) as client:
        refused = await client.call_tool("send_sms", {"to": "48500100200", "message": message})
    assert refused.is_error and "3 messages" in text(refused), text(refused)
    assert human.messages == []
    assert calls(record, "send_sms") == []
    (line,) = [r for r in records(tmp_path / "audit.jsonl") if r["tool"] == "send_sms"]
    assert (line["decision"], line["sms_parts"], line["sms_encoding"]) == ("denied", 3, "UCS-2")


@pytest.mark.parametrize("mode", MODES)
async def test_hundreds_of_markdown_texts_in_the_arguments_do_not_hold_the_proxy(tmp_path: Path, mode: str) -> None:
    """The prompt looks for markdown in every text of every argument with the output sanitiser, but
    without the parser budget that bounds it for a result: a list of 700 short texts of dense
    markdown (840 kB of JSON) kept the proxy's one event loop busy for about a minute before the human
    was asked, once per round trip, and no other client of any team was answered meanwhile."""
    record = tmp_path / "calls.jsonl"
    policy = _policy(tmp_path, record)
    human = Human(action="decline")
    dense = ["[a\n" * 300] * 700
    with proxy_http(policy) as proxy:
        async with Client(proxy.url, mode=mode, elicitation_callback=human) as client:
            # A bound on a hang, not a speed test: unbudgeted, the prompt alone took 36-93 s; budgeted, ~1 s.
            with anyio.fail_after(30):
                declined = await client.call_tool("send_sms", {"to": "48500100200", "message": "Hej", "notes": dense})
    assert declined.is_error and "declined" in text(declined)
    assert len(human.messages) == 1 and "842300 more characters are not shown" in human.messages[0]
    assert calls(record, "send_sms") == []
