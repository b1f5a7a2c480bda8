"""An upstream's broken answer fails its call at once, in mcp-guard's words (SPEC §9, fail closed).

The SDK drops a stdio line it cannot read and quotes an unreadable HTTP body in pydantic's words,
so a broken answer either left the call waiting for its timeout or put the upstream's raw bytes
in the error text. Now each fails the call it answers immediately, names the upstream, and passes
none of its bytes on; a result whose `content` is not a list is no longer read as an empty success.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mcp import Client

from tests.harness import PY, REPO, calls, proxy_stdio, spawn, write_policy

pytestmark = pytest.mark.anyio

SERVER = str(REPO / "tests" / "servers" / "malformed_answers.py")
LEAK = "pydantic-bait"
MODES = ["legacy", "auto"]


@contextmanager
def upstream(kind: str, tmp: Path) -> Iterator[tuple[dict[str, object], Path]]:
    record = tmp / "calls.jsonl"
    if kind == "stdio":
        yield {"command": [PY, SERVER, "--record", str(record)]}, record
        return
    with spawn([PY, SERVER, "--record", str(record), "--port", "0"]) as proc:
        yield {"url": proc.url}, record


def policy(tmp: Path, spec: dict[str, object]) -> Path:
    # A long timeout: a call that waited for it instead of failing would say "timed out".
    spec = {**spec, "timeout_seconds": 120}
    return write_policy(tmp / "team.yaml", {"up": spec}, tools={"unlisted": "allow"}, trifecta={"action": "off"})


def text(result: object) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["stdio", "http"])
@pytest.mark.parametrize("tool", ["no_outcome", "bad_error", "bad_content", "too_deep"])
async def test_a_broken_answer_fails_its_call_at_once_in_our_words(
    tmp_path: Path, kind: str, tool: str, mode: str
) -> None:
    with upstream(kind, tmp_path) as (spec, record):
        async with Client(proxy_stdio(policy(tmp_path, spec)), mode=mode) as client:
            broken = await client.call_tool(tool, {})
            fine = await client.call_tool("fine", {})  # the connection still serves
    shown = json.dumps(broken.model_dump(mode="json"))
    assert broken.is_error
    assert "upstream 'up'" in text(broken) and "not valid MCP" in text(broken), text(broken)
    assert "timed out" not in shown
    assert LEAK not in shown and "pydantic" not in shown
    assert not fine.is_error and "fine" in text(fine)
    assert [c["tool"] for c in calls(record)] == [tool, "fine"]


@pytest.mark.parametrize("mode", MODES)
async def test_an_http_body_that_is_not_json_fails_its_call_without_quoting_it(tmp_path: Path, mode: str) -> None:
    with upstream("http", tmp_path) as (spec, _):
        async with Client(proxy_stdio(policy(tmp_path, spec)), mode=mode) as client:
            broken = await client.call_tool("not_json", {})
    shown = json.dumps(broken.model_dump(mode="json"))
    assert broken.is_error and "not valid MCP" in text(broken)
    assert LEAK not in shown and "errors.pydantic.dev" not in shown
