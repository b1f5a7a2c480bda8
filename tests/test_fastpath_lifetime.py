"""How long a fast-path request lives: a client that goes away cancels the call upstream, and a call
silent for a ping interval keeps its stream open with pings until its answer comes.

Real processes: the feature server (its `slow` tool records its own cancellation), mcp-guard in
front of it, and raw HTTP from the test so that the request is one the fast path takes (no
progress token) and the only signal mcp-guard gets is the connection itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY

from tests.harness import FEATURES, MODES, Proc, proxy_http, spawn, write_policy
from tests.servers.procs import read_record, wait_for_record

pytestmark = pytest.mark.anyio

VERSION = "2026-07-28"
PING_SECONDS = 15.0  # proxy/fastpath.py's interval, the SDK's own


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Path]]:
    record = tmp_path_factory.mktemp("features") / "record.jsonl"
    with spawn([*FEATURES, "--port", "0", "--record", str(record)]) as proc:
        yield proc, record


@pytest.fixture(scope="module")
def proxy(features: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    policy = write_policy(tmp_path_factory.mktemp("p") / "p.yaml", {"features": {"url": features[0].url}})
    with proxy_http(policy) as proc:
        yield proc


def slow_call(seconds: float) -> tuple[dict[str, Any], dict[str, str]]:
    meta = {
        PROTOCOL_VERSION_META_KEY: VERSION,
        CLIENT_CAPABILITIES_META_KEY: {},
        CLIENT_INFO_META_KEY: {"name": "t", "version": "1"},
    }
    params = {"name": "slow", "arguments": {"seconds": seconds}, "_meta": meta}
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": VERSION,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "slow",
    }
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}, headers


def cancellations(record: Path) -> int:
    return sum(1 for entry in read_record(record) if entry.get("event") == "cancelled")


def started(seconds: float) -> Any:
    return lambda entry: entry.get("tool") == "slow" and entry.get("arguments", {}).get("seconds") == seconds


async def test_a_2026_client_that_closes_its_post_cancels_the_call_upstream(
    proxy: Proc, features: tuple[Proc, Path]
) -> None:
    record = features[1]
    before = cancellations(record)
    body, headers = slow_call(31.5)

    async def post(http: httpx2.AsyncClient) -> None:
        await http.post(proxy.url, json=body, headers=headers)

    async with httpx2.AsyncClient(timeout=30) as http, anyio.create_task_group() as tg:
        tg.start_soon(post, http)
        # The POST is open and the upstream runs the call; closing it is all the client says.
        await wait_for_record(record, started(31.5), seconds=10)
        assert cancellations(record) == before
        tg.cancel_scope.cancel()
    await wait_for_record(record, lambda e: e.get("event") == "cancelled", count=before + 1, seconds=10)


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_that_stops_waiting_cancels_the_call_upstream(
    mode: str, proxy: Proc, features: tuple[Proc, Path]
) -> None:
    # The SDK client in either era: a handshake-era client also sends notifications/cancelled.
    record = features[1]
    before = cancellations(record)
    seconds = 32.5 if mode == "legacy" else 33.5
    async with Client(proxy.url, mode=mode) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "slow", {"seconds": seconds})
            await wait_for_record(record, started(seconds), seconds=10)
            tg.cancel_scope.cancel()
    await wait_for_record(record, lambda e: e.get("event") == "cancelled", count=before + 1, seconds=10)


async def test_a_silent_call_keeps_its_stream_open_with_pings_then_answers(proxy: Proc) -> None:
    body, headers = slow_call(PING_SECONDS + 1.5)
    chunks: list[bytes] = []
    async with httpx2.AsyncClient(timeout=60) as http:
        async with http.stream("POST", proxy.url, json=body, headers=headers) as response:
            assert response.status_code == 200
            # Silent past the interval: the answer can no longer be a plain JSON response.
            assert response.headers["content-type"].startswith("text/event-stream")
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
    stream = b"".join(chunks).decode()
    assert stream.startswith(": ping\r\n\r\n"), stream[:200]
    events = [json.loads(line[5:]) for line in stream.splitlines() if line.startswith("data:")]
    assert len(events) == 1 and events[0]["id"] == 1, events
    assert f"slept {PING_SECONDS + 1.5}s" in events[0]["result"]["content"][0]["text"]
