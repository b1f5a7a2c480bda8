"""Adversarial review: 46elks sends and rug pulls, end to end through the real proxy in front of real
upstreams, driven by the `mcp` SDK's Client. Each test here failed on the code it was written against."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.harness import calls, proxy_http, proxy_stdio, records
from tests.test_limits_pins import ELKS_ENV
from tests.test_limits_pins import elks_policy as limits_elks_policy
from tests.test_pinning import MODES, client_of, drift_lines, pin, policy_for, shifty_http
from tests.test_pinning_elks46 import SEND, elks_policy, guarded
from tests.test_policies_e2e import Human, text

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", MODES)
async def test_a_tool_whose_meta_and_execution_change_is_hidden_and_refused(tmp_path: Path, mode: str) -> None:
    """A rug pull a model never reads but a client acts on: send_note's `_meta` repoints the client's UI
    (`ui.resourceUri`) and its `execution` changes. The proxy passes both on to the client, so the pin
    must cover both: the changed tool is hidden, refused with "pinned", and never reaches the upstream."""
    record = tmp_path / "calls.jsonl"
    with shifty_http(record) as upstream:
        policy = policy_for(tmp_path, {"url": upstream.url})
        assert pin(policy).returncode == 0
        with proxy_http(policy) as proxy:
            async with client_of(proxy, mode) as client:
                assert not (await client.call_tool("shift", {"what": "meta"})).is_error
                listed = {t.name: t for t in (await client.list_tools()).tools}
                assert "send_note" not in listed, listed.get("send_note")
                result = await client.call_tool("send_note", {"to": "+48500100200"})
                assert result.is_error and "pinned" in result.content[0].text  # type: ignore[union-attr]
    assert calls(record, "send_note") == []  # the upstream never saw it
    assert [(d["tool"], d["decision"]) for d in drift_lines(policy)] == [("send_note", "denied")]


@pytest.mark.parametrize("mode", MODES)
async def test_a_release_of_send_sms_that_changes_only_its_meta_is_hidden_behind_stdio(
    tmp_path: Path, mode: str
) -> None:
    """The 46elks stand-in, pinned as shipped, then started as a release whose send_sms differs only in
    `_meta` (which mcp-guard passes on to the client): behind `mcp-guard stdio`, hidden and refused
    before any confirmation, never sent, and `pin --diff` names the change."""
    record = tmp_path / "elks.jsonl"
    assert pin(elks_policy(tmp_path, record)).returncode == 0
    policy = elks_policy(tmp_path, record, "meta")
    human = Human()
    async with guarded(policy, "stdio", mode, human) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        refused = await client.call_tool("send_sms", SEND)
    assert "send_sms" not in listed, listed["send_sms"].meta
    assert refused.is_error and "pinned" in text(refused)
    assert human.messages == [] and calls(record, "send_sms") == []
    drift = pin(policy, "--diff")
    assert drift.returncode == 1 and '_meta $: (absent) → {"ui"' in drift.stdout, drift.stdout


@pytest.mark.parametrize("mode", MODES)
async def test_a_prompt_whose_meta_changes_is_hidden_and_refused(tmp_path: Path, mode: str) -> None:
    """A prompt's `_meta` is passed on to the client like a tool's: a change there is a drift too."""
    record = tmp_path / "calls.jsonl"
    with shifty_http(record) as upstream:
        policy = policy_for(tmp_path, {"url": upstream.url})
        assert pin(policy).returncode == 0
        with proxy_http(policy) as proxy:
            async with client_of(proxy, mode) as client:
                await client.call_tool("shift", {"what": "prompt_meta"})
                listed = {p.name: p for p in (await client.list_prompts()).prompts}
                assert "summarise" not in listed, listed["summarise"].meta
                with pytest.raises(MCPError, match="pinned"):
                    await client.get_prompt("summarise")
    assert [r for r in records(record) if r.get("method") == "prompts/get"] == []


@pytest.mark.parametrize("sender", ["Varning", "Vinnare", "WygranaPL", "Bekrafta", "Ostrzezenie", "Nagroda"])
async def test_a_swedish_or_polish_alarm_word_as_sender_is_refused_by_the_shipped_dry_run_team(
    tmp_path: Path, sender: str
) -> None:
    """The generic words ("warning", "winner", "prize", "confirm") are refused as senders, and the list
    says it holds them in Swedish and Polish too; the 46elks server itself refuses only the English
    ones. Through `mcp-guard stdio` with the shipped elks46-dryrun team, such a sender is refused by the
    SMS rules before any confirmation and never reaches the upstream."""
    record = tmp_path / "elks.jsonl"
    human = Human()
    policy = limits_elks_policy(tmp_path, record)
    async with Client(proxy_stdio(policy, env=ELKS_ENV), elicitation_callback=human) as client:
        refused = await client.call_tool("send_sms", {"to": "+46701112233", "message": "Hej", "from": sender})
    assert refused.is_error and "sender" in text(refused), text(refused)
    assert human.messages == [] and calls(record, "send_sms") == []
