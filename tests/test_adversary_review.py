"""Security review: one hostile field of one upstream message, on the channels the proxy relays (SPEC §5, §6).

`tests/servers/adversary.py` is a raw JSON-RPC stdio upstream (handshake era). Each of its tools
attacks one channel: the `_meta` of a list_changed or resources/updated notification, the
`elicitationId` or `_meta` of an elicitation request, and the tools, `_meta`, image `mimeType` or
`tool_result` block of a sampling request (relayed under `sampling: allow`), the key of an
`inputRequests` entry (`--modern`: a 2026-07-28 SDK upstream), zero-width characters in a result,
and results nested deeper than any parser goes. A real `mcp.Client`
talks to the real proxy over stdio and Streamable HTTP; what it receives (its callbacks' params,
the notifications it hears) must hold E2 at every string and key (`check_everything`).

Each test was written against a gap found in review (or a channel found sound), and pins it closed.
"""

from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext

from tests.harness import PY, REPO, Proc, proxy_http, proxy_stdio, records, write_policy
from tests.servers.adversary import EVIL, INVISIBLE_CHARS
from tests.test_fail_closed_e2e import check_everything

pytestmark = pytest.mark.anyio

ADVERSARY = [PY, str(REPO / "tests" / "servers" / "adversary.py")]
TRANSPORTS = ["stdio", "http"]
WAIT = 60.0


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Proc, Path]]:
    where = tmp_path_factory.mktemp("adversary")
    record = where / "upstream.jsonl"
    policy = write_policy(
        where / "adversary.yaml",
        {"adversary": {"command": [*ADVERSARY, "--record", str(record)]}},
        confirm={"destructive": False, "timeout_seconds": 60},
        trifecta={"action": "off"},
        sampling="allow",
        url_elicitation="allow",
        audit={"path": str(where / "audit.jsonl")},
    )
    with proxy_http(policy) as proc:
        yield policy, proc, record


@pytest.fixture(scope="module")
def modern_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Proc, Path]]:
    """The same policy in front of the adversary's 2026-07-28 SDK server (`--modern`)."""
    where = tmp_path_factory.mktemp("adversary-modern")
    record = where / "upstream.jsonl"
    policy = write_policy(
        where / "adversary.yaml",
        {"adversary": {"command": [*ADVERSARY, "--modern", "--record", str(record)]}},
        confirm={"destructive": False, "timeout_seconds": 60},
        trifecta={"action": "off"},
        sampling="allow",
        audit={"path": str(where / "audit.jsonl")},
    )
    with proxy_http(policy) as proc:
        yield policy, proc, record


class Heard:
    """What the client was sent: notifications, relayed questions, relayed sampling requests."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self.arrived: dict[str, anyio.Event] = {}

    def event(self, kind: str) -> anyio.Event:
        return self.arrived.setdefault(kind, anyio.Event())

    def add(self, kind: str, model: Any) -> None:
        self.items.append((kind, model.model_dump(by_alias=True, mode="json", exclude_none=True)))
        self.event(kind).set()

    async def message(self, message: Any) -> None:
        method = getattr(message, "method", None)
        if isinstance(method, str) and method.startswith("notifications/"):
            self.add(method, message)

    async def elicit(self, context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.add("elicitation/create", params)
        return types.ElicitResult(action="decline")

    async def sample(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        self.add("sampling/createMessage", params)
        return types.CreateMessageResult(role="assistant", content=types.TextContent(text="fine"), model="m")

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [params for k, params in self.items if k == kind]


@asynccontextmanager
async def connect(transport: str, mode: str, rig: tuple[Path, Proc, Path], heard: Heard) -> AsyncIterator[Client]:
    policy, proc, _ = rig
    target: Any = proxy_stdio(policy) if transport == "stdio" else proc.url
    async with Client(
        target,
        mode=mode,
        read_timeout_seconds=WAIT,
        message_handler=heard.message,
        elicitation_callback=heard.elicit,
        sampling_callback=heard.sample,
    ) as client:
        yield client


def raw_fields(value: Any, path: str = "$") -> list[str]:
    """Paths of every string or key that still holds the adversary's raw markup or bidi control."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if _raw(str(key)):
                found.append(f"{path} key")
            found += raw_fields(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += raw_fields(item, f"{path}[{i}]")
    elif isinstance(value, str) and _raw(value):
        found.append(path)
    return found


def _raw(text: str) -> bool:
    return any(bit in text for bit in ("<img", "</tool_output>", "\u202e", "\u200b", "![x]("))


def assert_clean(received: list[dict[str, Any]]) -> None:
    assert received, "nothing was relayed to the client"
    assert not raw_fields(received), f"raw upstream text reached the client at {raw_fields(received)}: {received}"
    check_everything(received)


async def wait(heard: Heard, kind: str) -> None:
    with anyio.fail_after(WAIT):
        await heard.event(kind).wait()


# --- notifications relayed outside a call (handshake era only: 2026-07-28 has no such channel) ---------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_list_changed_notification_meta_is_cleaned_or_dropped(
    transport: str, rig: tuple[Path, Proc, Path]
) -> None:
    """A relayed list_changed notification is rebuilt: the upstream's `_meta` stays behind."""
    heard = Heard()
    async with connect(transport, "legacy", rig, heard) as client:
        await client.list_tools()
        await client.call_tool("notify_list_changed", {})
        await wait(heard, "notifications/prompts/list_changed")
        await wait(heard, "notifications/resources/list_changed")
    assert_clean(heard.of("notifications/prompts/list_changed") + heard.of("notifications/resources/list_changed"))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resource_updated_notification_meta_is_cleaned_or_dropped(
    transport: str, rig: tuple[Path, Proc, Path]
) -> None:
    """The same for notifications/resources/updated of a subscribed resource (only its URI passes)."""
    heard = Heard()
    async with connect(transport, "legacy", rig, heard) as client:
        await client.subscribe_resource("note://1")
        await client.call_tool("notify_updated", {})
        await wait(heard, "notifications/resources/updated")
    updated = heard.of("notifications/resources/updated")
    assert [u["params"]["uri"] for u in updated] == ["note://1"]
    assert_clean(updated)


# --- upstream questions relayed to the human --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_url_elicitation_id_is_not_upstream_text(transport: str, mode: str, rig: tuple[Path, Proc, Path]) -> None:
    """A URL elicitation's `elicitationId` that is no plain token is replaced by mcp-guard's own."""
    heard = Heard()
    async with connect(transport, mode, rig, heard) as client:
        result = await client.call_tool("ask_url", {})
    assert not result.is_error, result
    asked = heard.of("elicitation/create")
    assert len(asked) == 1 and asked[0]["url"] == "https://example.com/login"
    assert_clean(asked)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_form_elicitation_meta_never_reaches_the_client(
    transport: str, mode: str, rig: tuple[Path, Proc, Path]
) -> None:
    """Sound: a form question is rebuilt (legacy) or its `_meta` never reaches the wire (2026-07-28)."""
    heard = Heard()
    async with connect(transport, mode, rig, heard) as client:
        result = await client.call_tool("ask_form", {})
    assert not result.is_error, result
    asked = heard.of("elicitation/create")
    assert len(asked) == 1 and "Your name?" in asked[0]["message"]
    assert "_meta" not in asked[0]
    assert_clean(asked)


# --- sampling relayed under `sampling: allow` (a handshake-era client: 2026-07-28 refuses it mid-call) -------


SAMPLING_TOOLS = {
    "sample_tools": "tools[].description and inputSchema descriptions",
    "sample_meta": "_meta, metadata, stopSequences",
    "sample_image": "an image block's mimeType",
    "sample_tool_result": "a tool_result block's text",
}


@pytest.mark.parametrize("tool", list(SAMPLING_TOOLS))
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_relayed_sampling_request_is_cleaned_everywhere(
    transport: str, tool: str, rig: tuple[Path, Proc, Path]
) -> None:
    """A relayed sampling request is rebuilt: tools, `_meta`, metadata, stop sequences, image types and
    tool results are cleaned or dropped (questions.sampling_request)."""
    heard = Heard()
    async with connect(transport, "legacy", rig, heard) as client:
        result = await client.call_tool(tool, {})
    assert not result.is_error, result
    sampled = heard.of("sampling/createMessage")
    assert len(sampled) == 1, sampled
    assert_clean(sampled)


@pytest.mark.parametrize("tool", ["sample_tools", "sample_tool_result"])
@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_sampling_asked_through_an_upstream_input_required_result_is_cleaned_everywhere(
    transport: str, mode: str, tool: str, modern_rig: tuple[Path, Proc, Path]
) -> None:
    """Both eras: a 2026-07-28 upstream's InputRequiredResult sampling request is rebuilt the same way
    (Pipeline._ask_client for a 2026-07-28 client, relay.answer_inputs for a handshake one)."""
    heard = Heard()
    async with connect(transport, mode, modern_rig, heard) as client:
        result = await client.call_tool(f"modern_{tool}", {})
    assert not result.is_error, result
    sampled = heard.of("sampling/createMessage")
    assert len(sampled) == 1, sampled
    assert_clean(sampled)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_input_request_keys_of_an_upstream_are_not_passed_on_raw(
    transport: str, modern_rig: tuple[Path, Proc, Path]
) -> None:
    """A 2026-07-28 client answers under the upstream's `inputRequests` keys, which nobody reads: one
    that is no plain token is not relayed at all, and the call ends in mcp-guard's words."""
    heard = Heard()
    async with connect(transport, "auto", modern_rig, heard) as client:
        asked = await client.session.call_tool("modern_ask_key", {}, allow_input_required=True)
    assert isinstance(asked, types.CallToolResult) and asked.is_error, asked
    assert "asked for input under a key that is no plain token" in asked.content[0].text  # type: ignore[union-attr]
    assert_clean([asked.model_dump(by_alias=True, mode="json", exclude_none=True)])


# --- text in base64: an HTML blob is text a client renders (SPEC §5: resource contents are cleaned) ----------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_html_blob_reaches_the_client_as_cleaned_text(
    transport: str, mode: str, rig: tuple[Path, Proc, Path]
) -> None:
    heard = Heard()
    async with connect(transport, mode, rig, heard) as client:
        result = await client.call_tool("html_blob", {})
        read = await client.read_resource("note://html")
    embedded = result.model_dump(by_alias=True, mode="json", exclude_none=True)["content"][0]["resource"]
    contents = read.model_dump(by_alias=True, mode="json", exclude_none=True)["contents"][0]
    for item in (embedded, contents):
        assert "blob" not in item and "evil" in item["text"] and "script" not in item["text"], item
    check_everything([embedded, contents])  # enveloped text: E1/E2 hold inside the envelope


# --- zero-width characters in a tool result (E2) ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_zero_width_carriers_do_not_survive_in_a_result(
    transport: str, mode: str, rig: tuple[Path, Proc, Path]
) -> None:
    """No variation selector but one VS15/VS16 after an emoji (VS17-VS256 carry a byte each), no
    Mongolian free variation selector, no default-ignorable unassigned code point (U+2065, U+E0080-)."""
    heard = Heard()
    async with connect(transport, mode, rig, heard) as client:
        result = await client.call_tool("invisible", {})
    [block] = result.content
    assert isinstance(block, types.TextContent) and "pay a" in block.text
    kept = [f"U+{ord(c):04X}" for c in INVISIBLE_CHARS if c in block.text]
    assert not kept, f"zero-width characters reached the client: {kept}"


# --- results no SDK server would send: deep nesting fails closed, deep JSON text is cleaned as text -------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_deeply_nested_results_fail_closed_and_the_proxy_keeps_serving(
    mode: str, rig: tuple[Path, Proc, Path]
) -> None:
    """Sound: structuredContent nested 20,000 deep ends the upstream connection (an isError naming it); JSON
    text nested 50,000 deep inside a text block is cleaned as plain text; the next call is served."""
    heard = Heard()
    async with connect("http", mode, rig, heard) as client:
        deep = await client.call_tool("deep_structured", {})
        assert deep.is_error
        [block] = deep.content
        assert isinstance(block, types.TextContent) and block.text.startswith("mcp-guard: upstream 'adversary'")
        text = await client.call_tool("deep_text", {})
        [block] = text.content
        assert isinstance(block, types.TextContent)
        body = block.text.rsplit("\n", 1)[0].split("\n", 3)[3]  # the envelope's body
        assert not _raw(html.unescape(body)) and "<" not in body, body[-300:]
        plain = await client.call_tool("plain", {})
        assert not plain.is_error


# --- controls: the adversary's own result comes back enveloped, and what reached it is what was asked -------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_adversary_is_reachable_and_its_plain_result_is_enveloped(
    mode: str, rig: tuple[Path, Proc, Path]
) -> None:
    heard = Heard()
    async with connect("http", mode, rig, heard) as client:
        result = await client.call_tool("plain", {})
    [block] = result.content
    assert isinstance(block, types.TextContent) and "called plain" in block.text
    check_everything(json.loads(json.dumps(result.model_dump(by_alias=True, mode="json", exclude_none=True))))
    assert any(r.get("method") == "tools/call" for r in records(rig[2]))
    assert EVIL not in block.text
