"""An upstream answer larger than `max_result_bytes` is refused as it streams in (SPEC §9: every
buffer an upstream can grow is bounded), and the proxy goes on serving."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.harness import FEATURES, MODES, PY, REPO, proxy_stdio, spawn, write_policy
from tests.test_policies_e2e import text

pytestmark = pytest.mark.anyio

FLOOD = REPO / "tests" / "servers" / "flood_stdio.py"


@contextmanager
def features(kind: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The feature upstream's entry in a policy: over HTTP (a process of its own) or over stdio."""
    if kind == "stdio":
        yield {"command": [*FEATURES, "--stdio"]}
        return
    with spawn([*FEATURES, "--port", "0", "--record", str(tmp_path / "feat.jsonl")]) as feat:
        yield {"url": feat.url}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["http", "stdio"])
async def test_an_oversized_result_is_refused_and_the_proxy_serves_on(tmp_path: Path, kind: str, mode: str) -> None:
    # Over stdio the answer is one line past the cap: that connection ends, and the next call starts afresh.
    with features(kind, tmp_path) as upstream:
        policy = write_policy(
            tmp_path / "p.yaml",
            {"feat": {**upstream, "max_result_bytes": 64 * 1024}},
            tools={"unlisted": "allow"},
            trifecta={"action": "off"},
        )
        async with Client(proxy_stdio(policy), mode=mode) as client:
            small = await client.call_tool("echo", {"text": "x" * 10_000})
            big = await client.call_tool("echo", {"text": "y" * 200_000})
            after = await client.call_tool("echo", {"text": "still here"})
    assert not small.is_error and "x" * 100 in text(small)
    assert big.is_error and "max_result_bytes (65536 bytes)" in text(big) and "y" * 100 not in text(big)
    assert not after.is_error and "still here" in text(after)


@pytest.mark.parametrize("mode", MODES)
async def test_a_stdio_server_writing_an_endless_line_is_cut_off_at_the_cap(tmp_path: Path, mode: str) -> None:
    # Unbounded, the proxy would keep the whole line (64 MiB, then wait on) until the call timed out.
    policy = write_policy(
        tmp_path / "p.yaml",
        {"flood": {"command": [PY, str(FLOOD)], "max_result_bytes": 64 * 1024, "timeout_seconds": 60}},
        tools={"unlisted": "allow"},
        trifecta={"action": "off"},
    )
    async with Client(proxy_stdio(policy), mode=mode) as client:
        flooded = await client.call_tool("flood", {})
        after = await client.call_tool("ok", {})
    assert flooded.is_error and "max_result_bytes (65536 bytes)" in text(flooded)
    assert "xxxx" not in text(flooded)
    assert not after.is_error and "fine" in text(after)
