"""Issue 14: what an upstream announces outside a request reaches exactly the sessions it concerns.

`resources/subscribe` and `unsubscribe` are forwarded; `notifications/resources/updated` goes to the
sessions that subscribed to that resource and to no other; `tools/list_changed` is relayed after the
proxy forgets its cached listing; `logging/setLevel` reaches the upstream. Handshake-era clients hear
them on their connection; 2026-07-28 clients on their `subscriptions/listen` stream. Over stdio and
Streamable HTTP, with a real upstream that records what it received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from mcp import Client
from mcp.shared.subscriptions import ResourceUpdated

from tests.harness import PY, REPO, Proc, proxy_http, proxy_stdio, records, spawn, write_policy

pytestmark = pytest.mark.anyio

NOTIFIER = [PY, str(REPO / "tests" / "servers" / "notifier.py")]
WAIT = 10.0


class Heard:
    """A client's message handler: every notification it was sent, and a way to wait for one."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = anyio.Event()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ServerNotification | types.ResourceUpdatedNotification):
            self.items.append(message)
            self._changed.set()
            self._changed = anyio.Event()

    def updated(self) -> list[str]:
        return [str(m.params.uri) for m in self.items if isinstance(m, types.ResourceUpdatedNotification)]

    def tools_changed(self) -> int:
        return sum(isinstance(m, types.ToolListChangedNotification) for m in self.items)

    async def until(self, predicate: Any) -> None:
        with anyio.fail_after(WAIT):
            while not predicate():
                await self._changed.wait()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Path]]:
    record = tmp_path_factory.mktemp("notifier") / "upstream.jsonl"
    with spawn([*NOTIFIER, "--port", "0", "--record", str(record)]) as proc:
        yield proc, record


@pytest.fixture(scope="module")
def policy(upstream: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policy(
        tmp_path_factory.mktemp("p") / "notify.yaml",
        {"notifier": {"url": upstream[0].url}},
        trifecta={"action": "off"},
    )


@pytest.fixture(scope="module")
def proxy(policy: Path) -> Iterator[Proc]:
    with proxy_http(policy) as proc:
        yield proc


@asynccontextmanager
async def client(transport: str, policy: Path, proxy: Proc, heard: Heard) -> AsyncIterator[Client]:
    target: Any = proxy_stdio(policy) if transport == "stdio" else proxy.url
    async with Client(target, mode="legacy", message_handler=heard, read_timeout_seconds=WAIT) as c:
        yield c


def upstream_saw(record: Path, method: str) -> list[dict[str, Any]]:
    return [r for r in records(record) if r.get("method") == method]


async def test_resource_updates_reach_only_the_sessions_that_subscribed(
    upstream: tuple[Proc, Path], policy: Path, proxy: Proc
) -> None:
    _, record = upstream
    a, b, c = Heard(), Heard(), Heard()
    async with (
        client("http", policy, proxy, a) as ca,
        client("http", policy, proxy, b) as cb,
        client("http", policy, proxy, c) as cc,
    ):
        await ca.subscribe_resource("note://a")
        await cb.subscribe_resource("note://b")
        await cc.call_tool("touch", {"uri": "note://a"})
        await a.until(lambda: a.updated())
        await cc.call_tool("touch", {"uri": "note://b"})
        await b.until(lambda: b.updated())
        # Upstream notifications are relayed in order: had b or c been sent note://a, it came first.
        assert a.updated() == ["note://a"] and b.updated() == ["note://b"] and c.updated() == []

        await ca.unsubscribe_resource("note://a")
        await cc.call_tool("touch", {"uri": "note://a"})
        await cc.call_tool("touch", {"uri": "note://b"})
        await b.until(lambda: len(b.updated()) == 2)
        assert a.updated() == ["note://a"]  # after unsubscribing, nothing more
    # The upstream took the subscriptions as its era has them: resources/subscribe and unsubscribe (handshake),
    # or the filter of the one subscriptions/listen stream mcp-guard keeps open (2026-07-28).
    legacy = [r["uri"] for r in upstream_saw(record, "resources/subscribe")]
    filters = [r["uris"] for r in upstream_saw(record, "subscriptions/listen")]
    if legacy:
        assert "note://a" in legacy and "note://b" in legacy
        assert "note://a" in [r["uri"] for r in upstream_saw(record, "resources/unsubscribe")]
    else:
        assert ["note://a", "note://b"] in filters and filters[-1] == ["note://b"]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_list_changed_and_log_level_pass_through(
    transport: str, upstream: tuple[Proc, Path], policy: Path, proxy: Proc
) -> None:
    _, record = upstream
    heard = Heard()
    async with client(transport, policy, proxy, heard) as c:
        caps = c.session.server_capabilities
        assert caps is not None and caps.tools is not None and caps.tools.list_changed
        assert caps.resources is not None and caps.resources.subscribe and caps.logging is not None
        # Only what the upstream offers is advertised: it has no prompts and no completions.
        assert caps.prompts is None and caps.completions is None
        before = len(upstream_saw(record, "logging/setLevel"))
        await c.set_logging_level("warning")
        # A handshake-era upstream is told; a 2026-07-28 one takes the level per request (mcp-guard asks for
        # all and filters), so either way only lines at the asked level or above reach this client.
        assert [r["level"] for r in upstream_saw(record, "logging/setLevel")[before:]] in (["warning"], [])
        await c.call_tool("log", {})
        lines = [m.params.data for m in heard.items if isinstance(m, types.LoggingMessageNotification)]
        assert lines == ["a warning line"]
        await c.call_tool("change", {})
        await heard.until(lambda: heard.tools_changed() >= 1)
        assert {t.name for t in (await c.list_tools()).tools} == {"touch", "change", "log", "open_url"}
        if transport == "stdio":
            await c.subscribe_resource("note://b")
            await c.call_tool("touch", {"uri": "note://b"})
            await heard.until(lambda: heard.updated())
            assert heard.updated() == ["note://b"]


async def test_a_2026_listener_hears_only_the_resources_it_asked_for(
    upstream: tuple[Proc, Path], policy: Path, proxy: Proc
) -> None:
    async def first_update(sub: Any) -> str:
        with anyio.fail_after(WAIT):
            async for event in sub:
                if isinstance(event, ResourceUpdated):
                    return str(event.uri)
        raise AssertionError("the stream ended")

    async with (
        Client(proxy.url, mode="auto", read_timeout_seconds=WAIT) as a,
        Client(proxy.url, mode="auto", read_timeout_seconds=WAIT) as b,
        Client(proxy.url, mode="auto", read_timeout_seconds=WAIT) as caller,
    ):
        assert a.protocol_version == "2026-07-28"
        async with (
            a.listen(resource_subscriptions=["note://a"]) as sub_a,
            b.listen(resource_subscriptions=["note://b"]) as sub_b,
        ):
            assert sub_a.honored.resource_subscriptions == ["note://a"]
            await caller.call_tool("touch", {"uri": "note://a"})
            assert await first_update(sub_a) == "note://a"
            await caller.call_tool("touch", {"uri": "note://b"})
            # Relayed in order: had b's stream been sent note://a, it would have come first.
            assert await first_update(sub_b) == "note://b"


# -- URL-mode elicitation: only where the policy allows it, and only to a plain https URL --------------------


@pytest.fixture(scope="module")
def url_proxy(upstream: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    policy = write_policy(
        tmp_path_factory.mktemp("url") / "url.yaml",
        {"notifier": {"url": upstream[0].url}},
        trifecta={"action": "off"},
        url_elicitation="allow",
    )
    with proxy_http(policy) as proc:
        yield proc


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_url_elicitation_is_relayed_only_where_allowed_and_only_to_a_plain_https_url(
    mode: str, upstream: tuple[Proc, Path], proxy: Proc, url_proxy: Proc
) -> None:
    _, record = upstream
    asked: list[types.ElicitRequestURLParams] = []

    async def human(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestURLParams)
        asked.append(params)
        return types.ElicitResult(action="accept")

    def answers() -> list[str]:
        return [r["action"] for r in upstream_saw(record, "url-answer")]

    page = "https://auth.example/login?next=%2Fhome&x=1"
    async with Client(url_proxy.url, mode=mode, elicitation_callback=human, read_timeout_seconds=WAIT) as c:
        before = answers()
        result = await c.call_tool("open_url", {"url": page})
        assert not result.is_error and "answer: accept" in result.content[0].text  # type: ignore[union-attr]
        assert answers()[len(before) :] == ["accept"]  # the upstream got the human's answer
        [question] = asked
        assert question.url == page
        assert "notifier" in question.message and page in question.message and "<b>" not in question.message
        for hostile in ("javascript:alert(1)", "https://user:pw@evil.example/", "https://evil.example/<b>x</b>"):
            refused = await c.call_tool("open_url", {"url": hostile})
            assert refused.is_error and "plain https URL" in refused.content[0].text  # type: ignore[union-attr]
        assert len(asked) == 1  # the human was never sent to those
    async with Client(proxy.url, mode=mode, elicitation_callback=human, read_timeout_seconds=WAIT) as c:
        refused = await c.call_tool("open_url", {"url": page})
    assert refused.is_error and "policy" in refused.content[0].text  # type: ignore[union-attr]
    assert len(asked) == 1


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_subscription_survives_an_upstream_restart(mode: str, tmp_path: Path) -> None:
    first_record, second_record = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    heard = Heard()
    with spawn([*NOTIFIER, "--port", "0", "--record", str(first_record)]) as first:
        port = first.url.rsplit(":", 1)[1].split("/", 1)[0]
        policy = write_policy(tmp_path / "p.yaml", {"notifier": {"url": first.url, "timeout_seconds": 5}})
        with proxy_http(policy) as proxy:
            async with Client(proxy.url, mode=mode, message_handler=heard, read_timeout_seconds=WAIT) as c:
                async with AsyncExitStack() as stack:
                    if mode == "legacy":
                        await c.subscribe_resource("note://a")
                    else:  # a 2026-07-28 client's stream stays open across the upstream's restart
                        stream = await stack.enter_async_context(c.listen(resource_subscriptions=["note://a"]))
                    first.stop()
                    assert (await c.call_tool("touch", {"uri": "note://a"})).is_error  # the upstream is gone
                    with spawn([*NOTIFIER, "--port", port, "--record", str(second_record)]):
                        assert not (await c.call_tool("touch", {"uri": "note://a"})).is_error
                        if mode == "legacy":
                            await heard.until(lambda: heard.updated())
                            assert heard.updated() == ["note://a"]
                        else:
                            with anyio.fail_after(WAIT):
                                event = await anext(aiter(stream))
                            assert isinstance(event, ResourceUpdated) and event.uri == "note://a"
    # The new upstream was asked for the subscription again, by whichever means its era has.
    renewed = [r["uri"] for r in upstream_saw(second_record, "resources/subscribe")]
    renewed += [u for r in upstream_saw(second_record, "subscriptions/listen") for u in r["uris"]]
    assert "note://a" in renewed
