"""An upstream answer larger than `max_result_bytes` is refused as it streams in (SPEC §9: every
buffer an upstream can grow is bounded), and the proxy goes on serving."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from tests.harness import FEATURES, MODES, proxy_stdio, spawn, write_policy
from tests.test_policies_e2e import text

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", MODES)
async def test_an_oversized_result_is_refused_and_the_proxy_serves_on(tmp_path: Path, mode: str) -> None:
    with spawn([*FEATURES, "--port", "0", "--record", str(tmp_path / "feat.jsonl")]) as feat:
        policy = write_policy(
            tmp_path / "p.yaml",
            {"feat": {"url": feat.url, "max_result_bytes": 64 * 1024}},
            tools={"unlisted": "allow"},
            trifecta={"action": "off"},
        )
        async with Client(proxy_stdio(policy), mode=mode) as client:
            small = await client.call_tool("echo", {"text": "x" * 10_000})
            big = await client.call_tool("echo", {"text": "y" * 200_000})
            after = await client.call_tool("echo", {"text": "still here"})
    assert not small.is_error and "x" * 100 in text(small)
    assert big.is_error and "max_result_bytes" in text(big) and "y" * 100 not in text(big)
    assert not after.is_error and "still here" in text(after)
