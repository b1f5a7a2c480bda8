"""Rug pulls on the 46elks stand-in (SPEC §10), the team-run stdio server: pinned as it ships, then
started again as a changed release would be. Behind `mcp-guard stdio` and `serve`, both eras, a
drifted or new tool is absent and refused, and the stand-in's own record shows it never ran; the
same release started again is no drift and sends as before (confirmed by the human)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.harness import MODES, PY, REPO, calls, proxy_http, proxy_stdio, write_policy
from tests.test_limits_pins import ELKS_ENV, ELKS_TOOLS
from tests.test_pinning import drift_lines, pin
from tests.test_policies_e2e import Human, text

pytestmark = pytest.mark.anyio

RUGPULL = str(REPO / "tests" / "servers" / "elks46_rugpull.py")
SEND = {"to": "+46701112233", "message": "Hej"}


def elks_policy(tmp: Path, record: Path, release: str = "") -> Path:
    """The same policy file (so the same lockfile) with the stand-in at a given release."""
    env = {**ELKS_ENV, "ELKS46_RUG_PULL": release}
    return write_policy(
        tmp / "elks.yaml",
        {"elks": {"command": [PY, RUGPULL, "--record", str(record)], "profile": "elks46", "env": env}},
        scopes=["sms", "account"],
        trifecta={"action": "off"},
        audit={"path": "audit.jsonl"},
    )


@asynccontextmanager
async def guarded(policy: Path, downstream: str, mode: str, human: Human) -> Any:
    if downstream == "stdio":
        async with Client(proxy_stdio(policy), mode=mode, elicitation_callback=human) as client:
            yield client
    else:
        with proxy_http(policy) as proxy:
            async with Client(proxy.url, mode=mode, elicitation_callback=human) as client:
                yield client


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("downstream", ["stdio", "http"])
@pytest.mark.parametrize("release", ["description", "annotation", "schema"])
async def test_a_changed_release_of_send_sms_is_hidden_and_never_sends(
    tmp_path: Path, mode: str, downstream: str, release: str
) -> None:
    record = tmp_path / "elks.jsonl"
    assert pin(elks_policy(tmp_path, record)).returncode == 0
    policy = elks_policy(tmp_path, record, release)
    human = Human()
    async with guarded(policy, downstream, mode, human) as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        refused = await client.call_tool("send_sms", SEND)
        balance = await client.call_tool("check_account_balance", {})
    assert listed == ELKS_TOOLS - {"send_sms"}
    assert refused.is_error and "pinned" in text(refused)
    assert not balance.is_error, text(balance)
    assert human.messages == []  # refused before any confirmation was asked
    assert calls(record, "send_sms") == []
    assert [(d["tool"], d["decision"]) for d in drift_lines(policy)] == [("send_sms", "denied")]


@pytest.mark.parametrize("mode", MODES)
async def test_a_new_tool_in_a_release_is_hidden_and_the_same_release_again_is_no_drift(
    tmp_path: Path, mode: str
) -> None:
    record = tmp_path / "elks.jsonl"
    assert pin(elks_policy(tmp_path, record)).returncode == 0
    async with guarded(elks_policy(tmp_path, record, "add"), "stdio", mode, Human()) as client:
        assert "export_contacts" not in {t.name for t in (await client.list_tools()).tools}
        refused = await client.call_tool("export_contacts", {})
    assert refused.is_error and "not pinned" in text(refused)
    assert calls(record, "export_contacts") == []
    human = Human()
    async with guarded(elks_policy(tmp_path, record), "stdio", mode, human) as client:
        assert {t.name for t in (await client.list_tools()).tools} == ELKS_TOOLS
        sent = await client.call_tool("send_sms", SEND)
    assert not sent.is_error, text(sent)
    assert len(human.messages) == 1 and [c["arguments"]["to"] for c in calls(record, "send_sms")] == [SEND["to"]]


def test_pin_diff_names_a_safety_downgrade_of_the_stand_in(tmp_path: Path) -> None:
    record = tmp_path / "elks.jsonl"
    assert pin(elks_policy(tmp_path, record)).returncode == 0
    drift = pin(elks_policy(tmp_path, record, "annotation"), "--diff")
    assert drift.returncode == 1
    assert "elks:send_sms: changed since it was pinned" in drift.stdout
    assert "annotations: readOnlyHint (absent) → true" in drift.stdout
