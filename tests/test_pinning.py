"""Rug pulls (SPEC §10): tools pinned by `mcp-guard pin` are hidden and refused once they drift; the
upstream never sees such a call; each drift is audited once; `pin --diff` and `--approve` work."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client

from tests.harness import PY, REPO, Proc, calls, proxy_http, proxy_stdio, records, run, spawn, write_policy

pytestmark = pytest.mark.anyio

SHIFTY = str(REPO / "tests" / "servers" / "shifty.py")
MODES = ["legacy", "auto"]


@contextmanager
def shifty_http(record: Path) -> Iterator[Proc]:
    with spawn([PY, SHIFTY, "--port", "0", "--record", str(record)]) as proc:
        yield proc


def policy_for(tmp: Path, upstream: dict[str, Any], **pinning: Any) -> Path:
    return write_policy(
        tmp / "team.yaml",
        {"notes": upstream},
        audit={"path": "audit.jsonl"},
        **({"pinning": pinning} if pinning else {}),
    )


def pin(policy: Path, *args: str) -> Any:
    return run([PY, "-m", "proxy", "pin", "--policy", str(policy), *args])


@asynccontextmanager
async def client_of(proxy: Proc, mode: str) -> Any:
    async with Client(proxy.url, mode=mode) as client:
        yield client


async def names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


def drift_lines(policy: Path) -> list[dict[str, Any]]:
    return [r for r in records(policy.parent / "audit.jsonl") if r["principal"] == "mcp-guard"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("what", ["description", "schema", "annotation"])
async def test_a_tool_that_changes_mid_session_is_hidden_and_refused(tmp_path: Path, mode: str, what: str) -> None:
    record = tmp_path / "calls.jsonl"
    with shifty_http(record) as upstream:
        policy = policy_for(tmp_path, {"url": upstream.url})
        assert pin(policy).returncode == 0
        changed = "send_note" if what == "annotation" else "get_note"
        with proxy_http(policy) as proxy:
            async with client_of(proxy, mode) as client:
                assert await names(client) == {"get_note", "send_note", "shift"}
                assert not (await client.call_tool("shift", {"what": what})).is_error
                assert await names(client) == {"get_note", "send_note", "shift"} - {changed}
                before = len(calls(record, changed))
                result = await client.call_tool(changed, {"to": "+48500100200"} if changed == "send_note" else {})
                assert result.is_error and "pinned" in result.content[0].text  # type: ignore[union-attr]
                assert len(calls(record, changed)) == before  # the upstream never saw it
                await names(client)  # listed again: still one audit line for this drift
            health = httpx2.get(proxy.url.removesuffix("/") + "/healthz").json()
    assert health["pins"] == {"drifted": 1, "unpinned": 0}
    drifts = drift_lines(policy)
    assert [(d["tool"], d["decision"]) for d in drifts] == [(changed, "denied")]
    assert "drifted" in drifts[0]["reason"]
    audit = records(policy.parent / "audit.jsonl")
    refused = [r for r in audit if r["tool"] == changed and r["principal"] != "mcp-guard"]
    assert [r["decision"] for r in refused] == ["denied"] and "pinned" in refused[0]["reason"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_tool_added_later_is_hidden_unless_new_tools_allow(tmp_path: Path, mode: str) -> None:
    record = tmp_path / "calls.jsonl"
    with shifty_http(record) as upstream:
        for new_tools, shown in (("hide", False), ("allow", True)):
            policy = policy_for(tmp_path, {"url": upstream.url}, new_tools=new_tools)
            assert pin(policy).returncode == 0
            with proxy_http(policy) as proxy:
                async with client_of(proxy, mode) as client:
                    await client.call_tool("shift", {"what": "add"})
                    assert ("export_notes" in await names(client)) is shown
                    result = await client.call_tool("export_notes", {})
                    # Allowed, it is a tool like any other: unannotated, so destructive and gated.
                    text = result.content[0].text  # type: ignore[union-attr]
                    assert result.is_error and ("pinned" in text) is not shown
            (policy.parent / "team.lock.json").unlink()  # the next round pins the upstream as it is now


async def test_on_drift_warn_lists_and_forwards_but_audits(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    with shifty_http(record) as upstream:
        policy = policy_for(tmp_path, {"url": upstream.url}, on_drift="warn")
        assert pin(policy).returncode == 0
        with proxy_http(policy) as proxy:
            async with client_of(proxy, "auto") as client:
                await client.call_tool("shift", {"what": "description"})
                assert "get_note" in await names(client)
                assert not (await client.call_tool("get_note", {})).is_error
    assert len(calls(record, "get_note")) == 1
    assert [(d["tool"], d["decision"]) for d in drift_lines(policy)] == [("get_note", "allowed")]


def test_pin_diff_and_approve_one_tool_while_others_stay_hidden(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    with shifty_http(record) as upstream:
        policy = policy_for(tmp_path, {"url": upstream.url})
        assert pin(policy, "--diff").returncode == 2  # no lockfile yet
        assert pin(policy).returncode == 0
        clean = pin(policy, "--diff")
        assert clean.returncode == 0 and "no drift" in clean.stdout
        # Two changes upstream (through the proxy-free path: a direct client).
        run([PY, "-c", _SHIFT, upstream.url, "description", "add"])
        drift = pin(policy, "--diff")
        assert drift.returncode == 1
        assert "notes:get_note: changed since it was pinned" in drift.stdout
        assert "description: Read a note. {+IMPORTANT:" in drift.stdout
        assert "notes:export_notes: new, not pinned" in drift.stdout
        assert pin(policy, "--approve", "no_such_tool").returncode == 2
        assert pin(policy, "--approve", "export_notes").returncode == 0
        lock = json.loads((tmp_path / "team.lock.json").read_text())
        assert set(lock["upstreams"]["notes"]["tools"]) == {"get_note", "send_note", "shift", "export_notes"}
        assert lock["upstreams"]["notes"]["tools"]["get_note"]["definition"]["description"] == "Read a note."
        after = pin(policy, "--diff")
        assert after.returncode == 1 and "export_notes" not in after.stdout and "get_note" in after.stdout
        anyio.run(_approved_shown_others_hidden, policy, record)


async def _approved_shown_others_hidden(policy: Path, record: Path) -> None:
    with proxy_http(policy) as proxy:
        async with client_of(proxy, "auto") as client:
            assert await names(client) == {"send_note", "shift", "export_notes"}
            refused = await client.call_tool("get_note", {})
    assert refused.is_error and "pinned" in refused.content[0].text  # type: ignore[union-attr]
    assert calls(record, "get_note") == []


_SHIFT = """
import sys, anyio
from mcp import Client
async def main():
    async with Client(sys.argv[1]) as c:
        for what in sys.argv[2:]:
            await c.call_tool("shift", {"what": what})
anyio.run(main)
"""


@pytest.mark.parametrize("mode", MODES)
async def test_a_stdio_upstream_restarted_with_the_same_tools_is_no_drift(tmp_path: Path, mode: str) -> None:
    record = tmp_path / "calls.jsonl"
    policy = policy_for(tmp_path, {"command": [PY, SHIFTY, "--stdio", "--record", str(record)]})
    assert pin(policy).returncode == 0
    for _ in range(2):  # each proxy starts its own upstream process: identical tools, no drift
        async with Client(proxy_stdio(policy), mode=mode) as client:
            assert await names(client) == {"get_note", "send_note", "shift"}
            await client.call_tool("shift", {"what": "schema"})
            assert await names(client) == {"send_note", "shift"}
            result = await client.call_tool("get_note", {"limit": 1})
            assert result.is_error and "pinned" in result.content[0].text  # type: ignore[union-attr]
    assert calls(record, "get_note") == []


def test_an_unreadable_lockfile_stops_start_up(tmp_path: Path) -> None:
    policy = policy_for(tmp_path, {"builtin": "sandbox"})
    (tmp_path / "team.lock.json").write_text('{"upstreams": {"notes": {"tools": {"x": {"sha256": "nope"}}}}}')
    done = run([PY, "-m", "proxy", "serve", "--policy", str(policy), "--port", "0"], timeout=30)
    assert done.returncode == 2
    assert "team.lock.json" in done.stderr and "not a valid mcp-guard lockfile" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_shows_what_the_lockfile_pins(tmp_path: Path) -> None:
    policy = policy_for(tmp_path, {"command": [PY, SHIFTY, "--stdio"]})
    before = run([PY, "-m", "proxy", "check", "--policy", str(policy)])
    assert "pinning    off: no lockfile team.lock.json" in before.stdout
    assert pin(policy).returncode == 0
    after = run([PY, "-m", "proxy", "check", "--policy", str(policy)])
    assert "pinning    team.lock.json; new tools hide, drift hide" in after.stdout
    assert "notes: pinned get_note, send_note, shift" in after.stdout
