"""The feature upstream and the 46elks stand-in, driven by the real SDK client in both eras."""

from __future__ import annotations

import base64
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.servers import elks46
from tests.servers.elks46 import build_elks46, new_account
from tests.servers.features import build_features
from tests.servers.procs import SERVERS_DIR, http_server, read_record, stdio_params, tool_calls, wait_for_record

pytestmark = pytest.mark.anyio

ERA = {"legacy": "2025-11-25", "auto": "2026-07-28"}
FEATURES = str(SERVERS_DIR / "features.py")
ELKS = str(SERVERS_DIR / "elks46.py")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["legacy", "auto"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


class UserDouble:
    """Elicitation and sampling callbacks that remember what they were asked."""

    def __init__(self, action: str = "accept", answer: str = "forty-two") -> None:
        self.action, self.answer = action, answer
        self.elicited: list[str] = []
        self.sampled: list[str] = []

    async def elicit(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        assert params.requested_schema["required"] == ["answer"]
        self.elicited.append(params.message)
        content = {"answer": self.answer} if self.action == "accept" else None
        return types.ElicitResult(action=self.action, content=content)  # type: ignore[arg-type]

    async def sample(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        message = params.messages[0].content
        assert isinstance(message, types.TextContent)
        self.sampled.append(message.text)
        return types.CreateMessageResult(role="assistant", content=types.TextContent(text="a haiku"), model="m-1")

    def client(self, target: Any, mode: str) -> Client:
        return Client(target, mode=mode, elicitation_callback=self.elicit, sampling_callback=self.sample)


@asynccontextmanager
async def connect(client: Client, mode: str) -> AsyncIterator[Client]:
    async with client:
        assert client.protocol_version == ERA[mode]
        yield client


def text(result: types.CallToolResult | types.GetPromptResult) -> str:
    block = result.content[0] if isinstance(result, types.CallToolResult) else result.messages[-1].content
    assert isinstance(block, types.TextContent)
    return block.text


async def all_tools(client: Client) -> list[list[types.Tool]]:
    pages, cursor = [], None
    while True:
        page = await client.list_tools(cursor=cursor)
        pages.append(page.tools)
        if (cursor := page.next_cursor) is None:
            return pages


async def progress_of(client: Client, tool: str, args: dict[str, Any]) -> list[tuple[float, float | None]]:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    await client.call_tool(tool, args, progress_callback=on_progress)
    return seen


async def cancel_slow(client: Client) -> None:
    with anyio.move_on_after(0.3) as scope:
        await client.call_tool("slow", {"seconds": 10})
    assert scope.cancelled_caught


def is_cancel_event(entry: dict[str, Any]) -> bool:
    return entry.get("event") == "cancelled" and entry.get("tool") == "slow"


# --------------------------------------------------------------------------- features: in memory


async def test_features_tools_paginate_with_annotations(mode: str) -> None:
    async with connect(Client(build_features(), mode=mode), mode) as client:
        assert client.instructions is not None and "<img src=x onerror=alert(1)>" in client.instructions
        pages = await all_tools(client)
    assert [len(page) for page in pages] == [10, 10, 10, 4]
    tools = {tool.name: tool for page in pages for tool in page}
    assert {f"page_{i:02d}" for i in range(25)} <= set(tools) and len(tools) == 34
    assert tools["echo"].annotations == types.ToolAnnotations(read_only_hint=True)
    assert tools["write_thing"].annotations is None
    assert tools["structured"].output_schema is not None and tools["echo"].output_schema is None


async def test_features_echo_structured_and_progress(mode: str) -> None:
    async with connect(Client(build_features(), mode=mode), mode) as client:
        assert text(await client.call_tool("echo", {"text": "zażółć 🌷"})) == "zażółć 🌷"
        tool = next(t for t in (await client.list_tools()).tools if t.name == "structured")
        result = await client.call_tool("structured", {"n": 7})
        assert result.structured_content["square"] == 49
        jsonschema.validate(result.structured_content, tool.output_schema)
        assert await progress_of(client, "progress", {"steps": 4}) == [(1, 4), (2, 4), (3, 4), (4, 4)]


async def test_features_elicitation_and_sampling(mode: str) -> None:
    user = UserDouble()
    async with connect(user.client(build_features(), mode), mode) as client:
        assert text(await client.call_tool("ask_user", {"question": "Ready?"})) == "user answered: forty-two"
        assert text(await client.call_tool("want_sampling", {"prompt": "Write"})) == "sampled (m-1): a haiku"
    assert user.elicited == ["Ready?"] and user.sampled == ["Write"]


async def test_features_elicitation_decline(mode: str) -> None:
    user = UserDouble(action="decline")
    async with connect(user.client(build_features(), mode), mode) as client:
        assert text(await client.call_tool("ask_user", {"question": "Sure?"})) == "user chose decline"


async def test_features_refuse_clients_without_capabilities(mode: str) -> None:
    async with connect(Client(build_features(), mode=mode), mode) as client:
        for tool, args in (("ask_user", {"question": "?"}), ("want_sampling", {"prompt": "?"})):
            result = await client.call_tool(tool, args)
            assert result.is_error and "does not support" in text(result)


async def test_features_fail_carries_hostile_text(mode: str) -> None:
    async with connect(Client(build_features(), mode=mode), mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("fail", {})
    assert "</tool_output>" in caught.value.message and "<script>" in caught.value.message


async def test_features_modern_retry_is_recorded_and_state_is_checked(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    user = UserDouble()
    async with connect(user.client(build_features(record), "auto"), "auto") as client:
        await client.call_tool("ask_user", {"question": "Q"})
        first = await client.session.call_tool("ask_user", {"question": "Q"}, allow_input_required=True)
        assert isinstance(first, types.InputRequiredResult) and first.request_state
        answer = {"answer": types.ElicitResult(action="accept", content={"answer": "x"})}
        with pytest.raises(MCPError, match="request_state"):
            await client.session.call_tool(
                "ask_user", {"question": "Q"}, input_responses=answer, request_state="forged", allow_input_required=True
            )
    assert [e.get("input_responses") for e in tool_calls(record, "ask_user")] == [None, ["answer"], None, ["answer"]]


async def test_features_slow_cancellation_is_recorded(mode: str, tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    async with connect(Client(build_features(record), mode=mode), mode) as client:
        await cancel_slow(client)
        await wait_for_record(record, is_cancel_event)


async def test_features_resources_prompts_and_completion(mode: str, tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    async with connect(Client(build_features(record), mode=mode), mode) as client:
        pages, cursor = [], None
        while True:
            page = await client.list_resources(cursor=cursor)
            pages.append([r.uri for r in page.resources])
            if (cursor := page.next_cursor) is None:
                break
        assert [len(p) for p in pages] == [3, 3, 1]
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["note://{id}"]
        note = (await client.read_resource("note://2")).contents[0]
        assert isinstance(note, types.TextResourceContents) and "</tool_output>" in note.text
        logo = (await client.read_resource("file:///logo.png")).contents[0]
        assert isinstance(logo, types.BlobResourceContents)
        assert base64.b64decode(logo.blob).startswith(b"\x89PNG")
        with pytest.raises(MCPError):
            await client.read_resource("note://404")
        assert [p.name for p in (await client.list_prompts()).prompts] == ["greet", "plain"]
        greeting = await client.get_prompt("greet", {"name": "Zoë"})
        assert "Zoë" in text(greeting) and "<script>" in text(greeting)
        names = await client.complete(types.PromptReference(name="greet"), {"name": "name", "value": "al"})
        assert names.completion.values == ["Alice", "Albert"]
        ids = await client.complete(types.ResourceTemplateReference(uri="note://{id}"), {"name": "id", "value": "3"})
        assert ids.completion.values == ["3"]
    lines = read_record(record)
    assert [(e["method"], e.get("uri"), e.get("prompt"), e["era"]) for e in lines] == [
        ("resources/read", "note://2", None, ERA[mode]),
        ("resources/read", "file:///logo.png", None, ERA[mode]),
        ("resources/read", "note://404", None, ERA[mode]),
        ("prompts/get", None, "greet", ERA[mode]),
    ]
    assert lines[-1]["arguments"] == {"name": "Zoë"}


# --------------------------------------------------------------------------- features: real transports


async def test_features_stdio_subprocess(mode: str, tmp_path: Path) -> None:
    record = tmp_path / "stdio.jsonl"
    user = UserDouble()
    params = stdio_params([FEATURES, "--stdio", "--record", str(record)])
    async with connect(user.client(params, mode), mode) as client:
        assert [len(page) for page in await all_tools(client)] == [10, 10, 10, 4]
        assert text(await client.call_tool("ask_user", {"question": "stdio?"})) == "user answered: forty-two"
        assert await progress_of(client, "progress", {"steps": 2}) == [(1, 2), (2, 2)]
        await cancel_slow(client)
        await wait_for_record(record, is_cancel_event)
    assert user.elicited == ["stdio?"]
    calls = tool_calls(record)
    assert {(e["method"], e["tool"], e["era"], e["auth_sha256"]) for e in calls} == {
        ("tools/call", tool, ERA[mode], None) for tool in ("ask_user", "progress", "slow")
    }


async def test_features_http_subprocess_both_eras(tmp_path: Path) -> None:
    record = tmp_path / "http.jsonl"
    argv = [sys.executable, FEATURES, "--port", "0", "--record", str(record)]
    async with http_server(argv) as server:
        assert "features: MCP endpoint http://127.0.0.1:" in server.stderr_text()
        for count, mode in enumerate(("legacy", "auto"), start=1):
            user = UserDouble(answer=mode)
            async with connect(user.client(server.url, mode), mode) as client:
                assert text(await client.call_tool("ask_user", {"question": mode})) == f"user answered: {mode}"
                assert text(await client.call_tool("want_sampling", {"prompt": mode})) == "sampled (m-1): a haiku"
                assert await progress_of(client, "progress", {"steps": 3}) == [(1, 3), (2, 3), (3, 3)]
                assert "Zoë" in text(await client.get_prompt("greet", {"name": "Zoë"}))
                await cancel_slow(client)
                await wait_for_record(record, is_cancel_event, count=count)
            assert user.elicited == [mode] and user.sampled == [mode]
        assert await server.stop() == 0
    eras = {(e["method"], e["era"]) for e in read_record(record) if "method" in e}
    assert eras == {(method, era) for method in ("tools/call", "prompts/get") for era in ERA.values()}


# --------------------------------------------------------------------------- 46elks stand-in

ELKS_TOOLS = {
    "send_sms": {"to", "message"},
    "get_sms_messages": set(),
    "check_sms_status": {"message_id"},
    "check_account_balance": set(),
    "estimate_sms_cost": {"to", "message"},
    "get_delivery_statistics": set(),
}


async def test_elks_catalogue_has_no_annotations(mode: str) -> None:
    async with connect(Client(build_elks46(), mode=mode), mode) as client:
        assert client.server_info is not None and client.server_info.name == "46elks-mcp"
        tools = (await client.list_tools()).tools
    assert {t.name: set(t.input_schema["required"]) for t in tools} == ELKS_TOOLS
    assert all(t.annotations is None and t.output_schema is None for t in tools)
    send = next(t for t in tools if t.name == "send_sms")
    assert set(send.input_schema["properties"]) == {"to", "message", "from", "flashsms", "dry_run"}


async def test_elks_per_call_dry_run_overrides_environment(mode: str) -> None:
    account = new_account(dry_run=True)
    async with connect(Client(build_elks46(account=account), mode=mode), mode) as client:
        dry = await client.call_tool("send_sms", {"to": "+46701112233", "message": "Hej"})
        assert text(dry).startswith("🧪 DRY RUN SMS Status: created\nTo: +46701112233\n")
        assert "Estimated cost: 0.35 SEK" in text(dry) and account.outbound == []
        real = await client.call_tool("send_sms", {"to": "+46701112233", "message": "Hej", "dry_run": False})
        assert text(real).startswith("📱 SENT SMS Status: created") and not real.is_error
        assert [m["to"] for m in account.outbound] == ["+46701112233"]
        status = await client.call_tool("check_sms_status", {"message_id": account.outbound[0]["id"]})
        assert "📤 Sent Message" in text(status) and "Cost: 0.35 SEK" in text(status)
        assert "Balance: 966.70 SEK" in text(await client.call_tool("check_account_balance", {}))


async def test_elks_sends_for_real_unless_dry_run_is_exactly_true(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_ENV", raising=False)
    for value, dry in (("true", True), ("TRUE", False), ("1", False), (None, False)):
        if value is None:
            monkeypatch.delenv("DRY_RUN", raising=False)
        else:
            monkeypatch.setenv("DRY_RUN", value)
        assert elks46.env_dry_run() is dry, value
    account = new_account()
    async with connect(Client(build_elks46(account=account), mode="auto"), "auto") as client:
        result = await client.call_tool("send_sms", {"to": "+46701112233", "message": "Hej"})
        assert text(result).startswith("📱 SENT") and len(account.outbound) == 1
        forced = await client.call_tool("send_sms", {"to": "+46701112233", "message": "Hej", "dry_run": True})
        assert text(forced).startswith("🧪 DRY RUN") and len(account.outbound) == 1


async def test_elks_errors_are_plain_text(mode: str) -> None:
    cases = [
        (
            {"to": "0701112233", "message": "Hej"},
            "Error (VALIDATION_ERROR): Invalid phone number: Phone number must include country code",
        ),
        ({"to": "+46701234567", "message": "Hej"}, "Error (VALIDATION_ERROR): Invalid phone number: Please provide"),
        (
            {"to": "+46701112233", "message": "Hej", "from": "MyBank"},
            "Error (VALIDATION_ERROR): Invalid sender ID: Sender ID appears to impersonate",
        ),
        (
            {"to": "+46701112233", "message": "Hej", "from": "1abc"},
            "Error (VALIDATION_ERROR): Invalid sender ID: Alphanumeric sender ID must start with a letter",
        ),
        ({"to": "+46701112233", "message": "  "}, "Error (VALIDATION_ERROR): Invalid message: Message content is"),
        ({"message": "Hej"}, "Error: Cannot read properties of undefined"),
    ]
    account = new_account(dry_run=False)
    async with connect(Client(build_elks46(account=account), mode=mode), mode) as client:
        for args, expected in cases:
            result = await client.call_tool("send_sms", args)
            assert not result.is_error and text(result).startswith(expected), args
        unknown = await client.call_tool("send_mms", {})
        assert not unknown.is_error and text(unknown) == "Error: MCP error -32601: Unknown tool: send_mms"
    assert account.outbound == []


async def test_elks_inbound_messages_carry_hostile_text(mode: str) -> None:
    async with connect(Client(build_elks46(), mode=mode), mode) as client:
        inbound = text(await client.call_tool("get_sms_messages", {"direction": "inbound", "limit": 100}))
        outbound = text(await client.call_tool("get_sms_messages", {"direction": "outbound", "limit": 100}))
        stats = text(await client.call_tool("get_delivery_statistics", {}))
        estimate = text(await client.call_tool("estimate_sms_cost", {"to": "+46701112233", "message": "x" * 200}))
    assert inbound.startswith("📱 SMS Message History (7 of 100 requested)") and "📤" not in inbound
    for marker in ("Ignore all previous instructions", "<script>", "![](", "</tool_output>", "\u200b", "\x1b["):
        assert marker in inbound, marker
    assert "📥" not in outbound and outbound.count("📤 Sent") == 4
    assert "Success Rate: 75% (3/4)" in stats
    assert "Message segments: 2" in estimate and "Estimated cost: 0.70 SEK" in estimate


async def test_elks_stdio_subprocess(mode: str, tmp_path: Path) -> None:
    record = tmp_path / "elks.jsonl"
    params = stdio_params([ELKS], env={"DRY_RUN": "true", "MCP_GUARD_ELKS_RECORD": str(record)})
    async with connect(Client(params, mode=mode), mode) as client:
        assert {t.name for t in (await client.list_tools()).tools} == set(ELKS_TOOLS)
        dry = await client.call_tool("send_sms", {"to": "+46701112233", "message": "Hej"})
        real = await client.call_tool("send_sms", {"to": "+46701112233", "message": "Hej", "dry_run": False})
        assert text(dry).startswith("🧪 DRY RUN") and text(real).startswith("📱 SENT")
        message_id = text(real).split("Message ID: ")[1].split()[0]
        assert "Status: created" in text(await client.call_tool("check_sms_status", {"message_id": message_id}))
    calls = tool_calls(record)
    assert [(e["tool"], e["arguments"].get("dry_run"), e["era"]) for e in calls] == [
        ("send_sms", None, ERA[mode]),
        ("send_sms", False, ERA[mode]),
        ("check_sms_status", None, ERA[mode]),
    ]
