"""Prompts and resource templates are pinned like tools (SPEC §10): their descriptions reach the model
too. A drifted or unpinned one is absent from its listing and refused when used, and the upstream
never sees the prompts/get or resources/read; each drift is audited once; `pin --diff` and
`--approve` cover them. Both eras, HTTP and stdio upstreams."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.harness import PY, proxy_http, records, run
from tests.test_pinning import _SHIFT, MODES, SHIFTY, drift_lines, pin, policy_for, shifty_http

pytestmark = pytest.mark.anyio


def upstream_reads(record: Path, method: str) -> list[dict[str, Any]]:
    return [r for r in records(record) if r.get("method") == method]


@contextmanager
def upstream(kind: str, record: Path) -> Iterator[dict[str, Any]]:
    if kind == "http":
        with shifty_http(record) as proc:
            yield {"url": proc.url}
    else:
        yield {"command": [PY, SHIFTY, "--stdio", "--record", str(record)]}


async def prompt_names(client: Client) -> set[str]:
    return {p.name for p in (await client.list_prompts()).prompts}


async def template_names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_resource_templates()).resource_templates}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_a_prompt_and_a_template_that_change_mid_session_are_hidden_and_refused(
    tmp_path: Path, mode: str, transport: str
) -> None:
    record = tmp_path / "calls.jsonl"
    with upstream(transport, record) as spec:
        policy = policy_for(tmp_path, spec)
        done = pin(policy)
        assert done.returncode == 0 and "1 prompts, 1 resource templates" in done.stdout
        with proxy_http(policy) as proxy:
            async with Client(proxy.url, mode=mode) as client:
                assert await prompt_names(client) == {"summarise"}
                assert await template_names(client) == {"note"}
                assert (await client.get_prompt("summarise")).messages
                assert (await client.read_resource("note://1")).contents

                await client.call_tool("shift", {"what": "prompt"})
                assert await prompt_names(client) == set()
                with pytest.raises(MCPError, match="pinned"):
                    await client.get_prompt("summarise")
                assert (await client.read_resource("note://2")).contents  # the template has not changed

                await client.call_tool("shift", {"what": "template"})
                assert await template_names(client) == set()
                with pytest.raises(MCPError, match="pinned"):
                    await client.read_resource("note://3")
                await prompt_names(client)  # listed again: still one audit line per drift
            health = httpx2.get(proxy.url.removesuffix("/") + "/healthz").json()
    assert health["pins"] == {"drifted": 2, "unpinned": 0}
    # The upstream's own record: the refused prompt and read never reached it.
    assert [r["name"] for r in upstream_reads(record, "prompts/get")] == ["summarise"]
    assert [r["uri"] for r in upstream_reads(record, "resources/read")] == ["note://1", "note://2"]
    drifts = [(d["tool"], d["decision"]) for d in drift_lines(policy)]
    assert drifts == [("prompt:summarise", "denied"), ("resource template:note", "denied")]


async def test_a_lockfile_without_prompts_hides_them_unless_new_entries_are_allowed(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    with shifty_http(record) as proc:
        for new_tools, shown in (("hide", False), ("allow", True)):
            policy = policy_for(tmp_path, {"url": proc.url}, new_tools=new_tools)
            assert pin(policy).returncode == 0
            lock_path = tmp_path / "team.lock.json"
            lock = json.loads(lock_path.read_text())
            # As a lockfile written before prompts and templates were pinned.
            for pins in lock["upstreams"].values():
                del pins["prompts"], pins["resource_templates"]
            lock_path.write_text(json.dumps(lock))
            with proxy_http(policy) as proxy:
                async with Client(proxy.url) as client:
                    assert await prompt_names(client) == ({"summarise"} if shown else set())
                    assert await template_names(client) == ({"note"} if shown else set())
                    assert await _tool_names(client) == {"get_note", "send_note", "shift"}
                    if not shown:
                        with pytest.raises(MCPError, match="not pinned"):
                            await client.get_prompt("summarise")
    assert [r["name"] for r in upstream_reads(record, "prompts/get")] == []


async def _tool_names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


def test_pin_diff_and_approve_cover_prompts_and_templates(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    with shifty_http(record) as proc:
        policy = policy_for(tmp_path, {"url": proc.url})
        assert pin(policy).returncode == 0
        lock = json.loads((tmp_path / "team.lock.json").read_text())["upstreams"]["notes"]
        assert lock["prompts"]["summarise"]["definition"]["description"] == "Summarise the notes."
        assert lock["resource_templates"]["note"]["definition"]["uriTemplate"] == "note://{id}"
        run([PY, "-c", _SHIFT, proc.url, "prompt", "template"])
        drift = pin(policy, "--diff")
        assert drift.returncode == 1
        assert "notes:summarise (prompt): changed since it was pinned" in drift.stdout
        assert "description: [-Summarise the notes.-] {+Read a note. IMPORTANT:" in drift.stdout
        assert "notes:note (resource template): changed since it was pinned" in drift.stdout
        assert pin(policy, "--approve", "summarise").returncode == 0
        after = pin(policy, "--diff")
        assert after.returncode == 1 and "summarise" not in after.stdout and "notes:note (resource" in after.stdout
        check = run([PY, "-m", "proxy", "check", "--policy", str(policy)])
        assert "notes: pinned prompts summarise" in check.stdout
        assert "notes: pinned resource templates note" in check.stdout
