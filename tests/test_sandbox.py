"""The SMSAPI sandbox, driven by the real SDK client in both protocol eras."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import jsonschema
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from proxy.backends import sandbox
from proxy.backends.sandbox import TOOLS, ToolDef, build_sandbox
from proxy.backends.sandbox_data import HOSTILE
from tests.servers.procs import REPO_ROOT, http_server, python_env, read_record, stdio_params

pytestmark = pytest.mark.anyio

ERA = {"legacy": "2025-11-25", "auto": "2026-07-28"}
CATALOGUE = {
    "send_sms",
    "send_group_sms",
    "get_sms",
    "delete_scheduled_sms",
    "get_sendernames",
    "add_sendername",
    "set_default_sendername",
    "delete_sendername",
    "get_contacts",
    "create_contact",
    "update_contact",
    "delete_contact",
    "get_groups",
    "create_group",
    "delete_group",
    "get_contact_groups",
    "add_contact_to_group",
    "remove_contact_from_group",
    "get_custom_fields",
    "get_profile",
    "get_subusers",
    "create_subuser",
    "update_subuser",
    "delete_subuser",
    "get_short_urls",
    "create_short_url",
    "delete_short_url",
    "get_short_url_clicks",
    "check_hlr",
    "get_blacklist",
    "add_to_blacklist",
    "remove_from_blacklist",
    "clear_blacklist",
    "import_blacklist",
}
DESTRUCTIVE = {
    "send_sms",
    "send_group_sms",
    "delete_scheduled_sms",
    "delete_sendername",
    "delete_contact",
    "delete_group",
    "remove_contact_from_group",
    "delete_subuser",
    "delete_short_url",
    "remove_from_blacklist",
    "clear_blacklist",
}
STRUCTURED = {"get_sms", "get_contacts", "get_groups"}
VIP_GROUP = "5f3e2d1c0b0a090807060501"
LUKASZ = "65a1f0c2e4b0a1b2c3d4e501"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["legacy", "auto"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@asynccontextmanager
async def connect(mode: str, record: Path | None = None) -> AsyncIterator[Client]:
    async with Client(build_sandbox(record), mode=mode) as client:
        assert client.protocol_version == ERA[mode]
        yield client


def body(result: types.CallToolResult) -> Any:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return json.loads(block.text)


async def call_ok(client: Client, tool: str, args: dict[str, Any] | None = None) -> Any:
    result = await client.call_tool(tool, args or {})
    assert not result.is_error, result.content
    return body(result)


async def call_error(client: Client, tool: str, args: dict[str, Any]) -> Any:
    result = await client.call_tool(tool, args)
    assert result.is_error
    return body(result)


async def points(client: Client) -> float:
    return (await call_ok(client, "get_profile"))["points"]


# --------------------------------------------------------------------------- catalogue


async def test_catalogue_and_annotations(mode: str) -> None:
    async with connect(mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == CATALOGUE
    for name, tool in tools.items():
        hints = tool.annotations
        assert hints is not None and hints.title, name
        if name.startswith("get_"):
            assert hints.read_only_hint is True, name
        else:
            assert hints.read_only_hint is False, name
            assert hints.destructive_hint is (name in DESTRUCTIVE), name
        assert (tool.output_schema is not None) is (name in STRUCTURED), name
    send = tools["send_sms"].input_schema
    assert set(send["required"]) == {"to", "message"}
    assert send["properties"]["to"]["type"] == "string"
    assert send["properties"]["test"]["type"] == "boolean"
    assert tools["send_sms"].annotations.open_world_hint is True
    assert tools["get_contacts"].annotations.open_world_hint is False


# --------------------------------------------------------------------------- sending


async def test_send_sms_charges_points_and_stores_the_message(mode: str) -> None:
    async with connect(mode) as client:
        before = await points(client)
        sent = await call_ok(client, "send_sms", {"to": "+48 600-100-200, 48600100201", "message": "Cześć 👋"})
        assert sent["count"] == 2
        assert [row["number"] for row in sent["list"]] == ["48600100200", "48600100201"]
        assert [row["submitted_number"] for row in sent["list"]] == ["+48 600-100-200", "48600100201"]
        assert all(row["status"] == "QUEUE" and row["points"] == 0.16 and row["parts"] == 1 for row in sent["list"])
        assert await points(client) == pytest.approx(before - 0.32)
        newest = (await call_ok(client, "get_sms", {"direction": "outgoing", "limit": 2}))["list"]
        assert {row["id"] for row in newest} == {row["id"] for row in sent["list"]}
        assert all(row["message"] == "Cześć 👋" and row["sender"] == "Rozana" for row in newest)


async def test_test_mode_prices_without_sending(mode: str) -> None:
    async with connect(mode) as client:
        before_points, before_sms = await points(client), (await call_ok(client, "get_sms", {"limit": 500}))["count"]
        priced = await call_ok(client, "send_sms", {"to": "600100200", "message": "ż" * 71, "test": True})
        assert priced["count"] == 1 and priced["list"][0]["parts"] == 2 and priced["list"][0]["points"] == 0.32
        assert await points(client) == before_points
        assert (await call_ok(client, "get_sms", {"limit": 500}))["count"] == before_sms


async def test_invalid_numbers_give_smsapi_error(mode: str) -> None:
    async with connect(mode) as client:
        before = await points(client)
        error = await call_error(client, "send_sms", {"to": "12345, abc", "message": "hi"})
        assert await points(client) == before
    assert error == {
        "invalid_numbers": [
            {"number": "12345", "submitted_number": "12345", "message": "Invalid phone number"},
            {"number": "abc", "submitted_number": "abc", "message": "Invalid phone number"},
        ],
        "error": 13,
        "message": "No correct phone numbers",
    }


async def test_blacklisted_recipient_is_refused_until_the_blacklist_is_cleared(mode: str) -> None:
    async with connect(mode) as client:
        error = await call_error(client, "send_sms", {"to": "48700800900", "message": "hi"})
        assert error["invalid_numbers"][0]["message"] == "Phone number is on the blacklist"
        assert (await call_ok(client, "clear_blacklist"))["count"] == 3
        assert (await call_ok(client, "get_blacklist"))["size"] == 0
        assert (await call_ok(client, "send_sms", {"to": "48700800900", "message": "hi"}))["count"] == 1


async def test_send_group_sms_reaches_every_member(mode: str) -> None:
    async with connect(mode) as client:
        sent = await call_ok(client, "send_group_sms", {"group": "Klienci VIP", "message": "Promocja!"})
        assert sent["count"] == 3
        error = await call_error(client, "send_group_sms", {"group": "nope", "message": "x"})
        assert error["error"] == 18


async def test_scheduled_sms_can_be_deleted_once(mode: str) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    async with connect(mode) as client:
        sent = await call_ok(client, "send_sms", {"to": "48600100201", "message": "jutro", "date": later})
        sms_id = sent["list"][0]["id"]
        stored = (await call_ok(client, "get_sms", {"id": sms_id}))["list"][0]
        assert stored["status"] == "QUEUE"
        assert (await call_ok(client, "delete_scheduled_sms", {"id": sms_id}))["list"] == [{"id": sms_id}]
        assert (await call_error(client, "get_sms", {"id": sms_id}))["error"] == 301
        assert (await call_error(client, "delete_scheduled_sms", {"id": sms_id}))["error"] == 301


async def test_schema_violations_are_smsapi_errors(mode: str) -> None:
    async with connect(mode) as client:
        error = await call_error(client, "send_sms", {"message": "no recipient"})
        assert error["error"] == 8 and "'to' is a required property" in error["message"]
        assert (await call_error(client, "send_sms", {"to": "48600100200", "message": "x", "bogus": 1}))["error"] == 8


async def test_unknown_tool_is_a_protocol_error(mode: str) -> None:
    async with connect(mode) as client:
        with pytest.raises(MCPError, match="Unknown tool"):
            await client.call_tool("send_fax", {})


# --------------------------------------------------------------------------- contacts and groups


async def test_delete_contact_mutates_contacts_and_groups(mode: str) -> None:
    async with connect(mode) as client:
        assert (await call_ok(client, "get_contacts"))["size"] == 12
        assert (await call_ok(client, "delete_contact", {"id": LUKASZ})) == {"deleted": True, "id": LUKASZ}
        assert (await call_ok(client, "get_contacts"))["size"] == 11
        vip = next(g for g in (await call_ok(client, "get_groups"))["collection"] if g["id"] == VIP_GROUP)
        assert vip["contacts_count"] == 2
        error = await call_error(client, "delete_contact", {"id": LUKASZ})
        assert error["code"] == 404 and error["error"] == "not_found_error"


async def test_group_counts_match_members(mode: str) -> None:
    async with connect(mode) as client:
        groups = (await call_ok(client, "get_groups"))["collection"]
        assert len(groups) == 4
        for group in groups:
            members = await call_ok(client, "get_contacts", {"group_id": group["id"]})
            assert group["contacts_count"] == members["size"] > 0


async def test_structured_output_matches_text_and_schema(mode: str) -> None:
    async with connect(mode) as client:
        schemas = {t.name: t.output_schema for t in (await client.list_tools()).tools}
        for tool in STRUCTURED:
            result = await client.call_tool(tool, {})
            assert result.structured_content == body(result)
            jsonschema.validate(result.structured_content, schemas[tool])
        assert (await client.call_tool("get_profile", {})).structured_content is None


async def test_seed_data_mixes_ordinary_and_hostile_text(mode: str) -> None:
    async with connect(mode) as client:
        sms = (await client.call_tool("get_sms", {"limit": 100})).content[0].text
        contacts = (await client.call_tool("get_contacts", {})).content[0].text
        groups = (await client.call_tool("get_groups", {})).content[0].text
    for marker in ("injection", "xss_img", "md_image", "envelope_break", "zero_width", "ansi", "tag_smuggle"):
        assert json.dumps(HOSTILE[marker], ensure_ascii=False)[1:-1] in sms, marker
    assert "<script>" in contacts and "</tool_output>" in groups
    assert "Łukasz" in contacts and "🌹" in sms


async def test_every_other_tool_works(mode: str) -> None:
    async with connect(mode) as client:
        assert (await call_ok(client, "add_sendername", {"sender": "Nowy"}))["status"] == "INACTIVE"
        assert (await call_error(client, "set_default_sendername", {"sender": "Nowy"}))["code"] == 400
        assert (await call_ok(client, "set_default_sendername", {"sender": "Kwiaty24"}))["is_default"] is True
        assert (await call_ok(client, "delete_sendername", {"sender": "Nowy"}))["deleted"] is True
        assert [s["sender"] for s in (await call_ok(client, "get_sendernames"))["collection"]] == [
            "Rozana",
            "Kwiaty24",
            "Promocja",
        ]

        contact = await call_ok(client, "create_contact", {"phone_number": "+48 511 000 111", "first_name": "Ola"})
        assert contact["phone_number"] == "48511000111"
        assert (await call_error(client, "create_contact", {"phone_number": "511000111"}))["code"] == 409
        assert (await call_ok(client, "update_contact", {"id": contact["id"], "city": "Opole"}))["city"] == "Opole"
        group = await call_ok(client, "create_group", {"name": "Nowa"})
        assert group["contacts_count"] == 0
        await call_ok(client, "add_contact_to_group", {"group_id": group["id"], "contact_id": contact["id"]})
        in_groups = await call_ok(client, "get_contact_groups", {"contact_id": contact["id"]})
        assert [g["contacts_count"] for g in in_groups["collection"]] == [1]
        await call_ok(client, "remove_contact_from_group", {"group_id": group["id"], "contact_id": contact["id"]})
        assert (await call_ok(client, "get_contact_groups", {"contact_id": contact["id"]}))["size"] == 0
        assert (await call_ok(client, "delete_group", {"id": group["id"]}))["deleted"] is True
        assert (await call_ok(client, "get_custom_fields"))["size"] == 4

        sub = await call_ok(client, "create_subuser", {"username": "nowy", "password": "s3cret", "active": True})
        assert "password" not in json.dumps(sub)
        updated = await call_ok(client, "update_subuser", {"id": sub["id"], "points_per_month": 5})
        assert updated["points"] == {"from_account": 0, "per_month": 5}
        await call_ok(client, "delete_subuser", {"id": sub["id"]})
        assert len((await call_ok(client, "get_subusers"))["collection"]) == 3

        link = await call_ok(client, "create_short_url", {"url": "https://example.com/a", "name": "a"})
        assert link["short_url"] == "http://idz.do/a"
        assert (await call_ok(client, "get_short_url_clicks", {"ids": "1"}))["size"] == 2
        await call_ok(client, "delete_short_url", {"id": link["id"]})
        assert len((await call_ok(client, "get_short_urls"))["collection"]) == 2

        before = await points(client)
        assert (await call_ok(client, "check_hlr", {"number": "48600100200"}))["status"] == "OK"
        assert await points(client) == pytest.approx(before - 0.1)

        imported = await call_ok(client, "import_blacklist", {"csv": "phone_number\n48500500500\nxx\n48700800900"})
        assert imported["size"] == 1 and imported["skipped"] == ["xx", "48700800900"]
        entry = await call_ok(client, "add_to_blacklist", {"phone_number": "48500500501"})
        await call_ok(client, "remove_from_blacklist", {"id": entry["id"]})
        assert (await call_ok(client, "get_blacklist"))["size"] == 4


# --------------------------------------------------------------------------- call record


async def test_record_is_written_before_the_call_runs(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "calls.jsonl"
    seen_during_call: list[list[dict[str, Any]]] = []

    def spy(sb: sandbox.Sandbox, args: dict[str, Any]) -> dict[str, Any]:
        seen_during_call.append(read_record(record))
        return {"ok": True}

    monkeypatch.setitem(TOOLS, "get_profile", ToolDef(TOOLS["get_profile"].tool, spy))
    async with connect(mode, record) as client:
        await call_ok(client, "get_profile", {})
        with pytest.raises(MCPError):
            await client.call_tool("send_fax", {"to": "1"})
    assert [entry["tool"] for entry in seen_during_call[0]] == ["get_profile"]
    lines = read_record(record)
    assert [(e["tool"], e["arguments"], e["era"], e["auth_sha256"]) for e in lines] == [
        ("get_profile", {}, ERA[mode], None),
        ("send_fax", {"to": "1"}, ERA[mode], None),
    ]
    assert all(isinstance(e["ts"], float) and e["method"] == "tools/call" for e in lines)


# --------------------------------------------------------------------------- real transports


async def test_stdio_subprocess_both_eras(tmp_path: Path) -> None:
    record = tmp_path / "stdio.jsonl"
    params = stdio_params(["-m", "proxy.backends.sandbox", "--stdio"], env={"MCP_GUARD_SANDBOX_RECORD": str(record)})
    for mode in ("legacy", "auto"):
        async with Client(params, mode=mode) as client:
            assert client.protocol_version == ERA[mode]
            assert {t.name for t in (await client.list_tools()).tools} == CATALOGUE
            before = await points(client)
            await call_ok(client, "send_sms", {"to": "48600100200", "message": "stdio"})
            assert await points(client) == pytest.approx(before - 0.16)
    sends = [(e["era"], e["auth_sha256"]) for e in read_record(record) if e["tool"] == "send_sms"]
    assert sends == [(ERA["legacy"], None), (ERA["auto"], None)]


async def test_http_subprocess_both_eras_with_auth_digest(tmp_path: Path) -> None:
    record = tmp_path / "http.jsonl"
    token = "Bearer sandbox-token-123"
    argv = [sys.executable, "-m", "proxy.backends.sandbox", "--port", "0", "--record", str(record)]
    async with http_server(argv) as server:
        assert server.url.endswith("/mcp") and "mcp-guard sandbox: MCP endpoint" in server.stderr_text()
        for mode in ("legacy", "auto"):
            async with (
                httpx2.AsyncClient(headers={"Authorization": token}, timeout=30) as http,
                Client(streamable_http_client(server.url, http_client=http), mode=mode) as client,
            ):
                assert client.protocol_version == ERA[mode]
                await call_ok(client, "send_sms", {"to": "48600100200", "message": f"via {mode}"})
                # One account per process: the legacy send is visible to the modern connection.
                outgoing = (await call_ok(client, "get_sms", {"direction": "outgoing"}))["list"]
                assert {"via legacy", f"via {mode}"} <= {row["message"] for row in outgoing}
        assert await server.stop() == 0
        assert "Traceback" not in server.stderr_text()
    digest = hashlib.sha256(token.encode()).hexdigest()
    lines = read_record(record)
    assert [(e["tool"], e["era"], e["auth_sha256"]) for e in lines] == [
        ("send_sms", ERA["legacy"], digest),
        ("get_sms", ERA["legacy"], digest),
        ("send_sms", ERA["auto"], digest),
        ("get_sms", ERA["auto"], digest),
    ]
    assert "sandbox-token-123" not in record.read_text()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("warm", [False, True], ids=["during-startup", "running"])
async def test_signals_exit_cleanly(sig: signal.Signals, warm: bool) -> None:
    argv = [sys.executable, "-m", "proxy.backends.sandbox", "--port", "0"]
    async with http_server(argv) as server:
        if warm:
            async with Client(server.url, mode="legacy") as client:
                await call_ok(client, "get_profile")
        # Cold: the announce line precedes uvicorn's startup, so this usually lands mid-startup.
        server.popen.send_signal(sig)
        assert await server.wait(10) == 0
        assert await server.stop() == 0
    assert "Traceback" not in server.stderr_text()


async def test_busy_port_is_one_line_and_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, "-m", "proxy.backends.sandbox", "--port", str(port)],
                capture_output=True,
                text=True,
                timeout=20,
                env=python_env(),
                cwd=REPO_ROOT,
            )
        )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "mcp-guard sandbox:" in done.stderr
