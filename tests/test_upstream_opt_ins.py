"""What mcp-guard asks of the upstream on a client's behalf: progress and log lines only when they can
reach the client. A 2026-07-28 call that opted into neither reaches the upstream without a progress
token or a log level (the upstream would otherwise stream both to mcp-guard for nothing); a call that
asks still gets them. The feature server records, per call, what it was asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mcp.types as types
import pytest
from mcp import Client

from tests.harness import FEATURES, Proc, proxy_http, spawn, write_policy
from tests.servers.procs import read_record

pytestmark = pytest.mark.anyio


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


def _asked(record: Path, text: str) -> list[str]:
    [line] = [r for r in read_record(record) if r.get("tool") == "echo" and r["arguments"].get("text") == text]
    return sorted(line.get("asked", []))


async def test_a_2026_call_that_asked_for_nothing_asks_the_upstream_for_nothing(
    proxy: Proc, features: tuple[Proc, Path]
) -> None:
    async with Client(proxy.url) as client:
        assert not (await client.call_tool("echo", {"text": "plain-2026"})).is_error
    assert _asked(features[1], "plain-2026") == []


async def test_what_a_client_asks_for_is_asked_and_arrives(proxy: Proc, features: tuple[Proc, Path]) -> None:
    seen: list[float] = []
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with Client(proxy.url) as client:
        await client.call_tool("echo", {"text": "progress-2026"}, progress_callback=on_progress)
        result = await client.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
    assert not result.is_error and seen == [1.0, 2.0, 3.0]
    assert "progress" in _asked(features[1], "progress-2026")

    async with Client(proxy.url, mode="legacy", logging_callback=on_log, log_level="debug") as client:
        await client.call_tool("echo", {"text": "plain-legacy"})
        await client.call_tool("echo", {"text": "progress-legacy"}, progress_callback=on_progress)
        assert not (await client.call_tool("chatty", {"text": "still heard"})).is_error
    # A handshake-era session hears log lines at the level it set, so they are asked for on every call.
    assert _asked(features[1], "plain-legacy") == ["logs"]
    assert _asked(features[1], "progress-legacy") == ["logs", "progress"]
    assert [entry.data for entry in logs] == ["still heard"]
