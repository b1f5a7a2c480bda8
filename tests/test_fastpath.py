"""The fast path answers the hot methods of 2026-07-28 requests exactly as the SDK's path would, and
hands everything else to the SDK untouched."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY
from starlette.types import Message, Receive, Scope, Send

from proxy.fastpath import FastPath
from proxy.gateway import IDENTITY_KEY, Gateway, Identity
from proxy.http import MAX_BODY_BYTES, transport_security
from proxy.policy import load_policy
from proxy.server import build_server
from tests.harness import Proc, proxy_http, write_policy

pytestmark = pytest.mark.anyio

VERSION = "2026-07-28"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def modern(method: str, params: dict[str, Any], *, meta: dict[str, Any] | None = None, rid: int = 1) -> tuple:
    envelope = {
        PROTOCOL_VERSION_META_KEY: VERSION,
        CLIENT_CAPABILITIES_META_KEY: {"elicitation": {"form": {}}},
        CLIENT_INFO_META_KEY: {"name": "t", "version": "1"},
        **(meta or {}),
    }
    body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": {**params, "_meta": envelope}}
    headers = {**HEADERS, "MCP-Protocol-Version": VERSION, "Mcp-Method": method}
    if "name" in params:
        headers["Mcp-Name"] = params["name"]
    return json.dumps(body).encode(), headers


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policy(
        tmp_path_factory.mktemp("fast") / "p.yaml",
        {"smsapi": {"builtin": "sandbox"}},
        scopes=["sms", "profile", "contacts"],
        confirm={"destructive": True},
    )


@pytest.fixture(scope="module")
def proxy(policy: Path) -> Iterator[Proc]:
    with proxy_http(policy) as proc:
        yield proc


# A progress token sends a request down the SDK's path (it may need a stream): the same request
# with and without one must get the same answer.
SDK_PATH = {"progressToken": "p-1"}


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("tools/call", {"name": "get_profile", "arguments": {}}),
        ("tools/call", {"name": "get_sms", "arguments": {"limit": 3}}),
        ("tools/call", {"name": "no_such_tool", "arguments": {}}),
        ("tools/call", {"name": "clear_blacklist", "arguments": {}}),
        ("tools/list", {}),
    ],
)
async def test_same_answer_as_the_sdk_path(proxy: Proc, method: str, params: dict[str, Any]) -> None:
    async with httpx2.AsyncClient() as http:
        body, headers = modern(method, params)
        fast = await http.post(proxy.url, content=body, headers=headers)
        body, headers = modern(method, params, meta=SDK_PATH)
        sdk = await http.post(proxy.url, content=body, headers=headers)
    assert fast.status_code == sdk.status_code == 200
    assert fast.headers["content-type"] == "application/json"
    answer, expected = fast.json(), sdk.json()
    if method == "tools/call" and params["name"] == "clear_blacklist":
        # A destructive tool asks the human: a sealed, single-use state, different on every answer.
        assert answer["result"]["resultType"] == expected["result"]["resultType"] == "input_required"
        assert answer["result"]["inputRequests"] == expected["result"]["inputRequests"]
        assert answer["result"]["requestState"] != expected["result"]["requestState"]
        return
    assert _nonce_free(answer) == _nonce_free(expected)


def _nonce_free(message: dict[str, Any]) -> str:
    # Every envelope has a fresh nonce.
    return re.sub(r'nonce=\\"[0-9a-f]+\\"', "nonce", json.dumps(message))


async def test_a_state_sealed_on_the_fast_path_resumes_on_the_sdk_path(proxy: Proc) -> None:
    params = {"name": "clear_blacklist", "arguments": {}}
    async with httpx2.AsyncClient() as http:
        body, headers = modern("tools/call", params)
        asked = (await http.post(proxy.url, content=body, headers=headers)).json()["result"]
        answer = {"mcp_guard_confirm": {"action": "decline"}}
        resumed = {**params, "requestState": asked["requestState"], "inputResponses": answer}
        body, headers = modern("tools/call", resumed, rid=2)
        result = (await http.post(proxy.url, content=body, headers=headers)).json()["result"]
        assert result["isError"] is True
        assert "declined" in result["content"][0]["text"]
        # The state is bound to the call it was minted for: other arguments are refused by the SDK.
        forged = {**resumed, "arguments": {"x": 1}}
        body, headers = modern("tools/call", forged, rid=3)
        refused = await http.post(proxy.url, content=body, headers=headers)
        assert refused.json()["error"]["message"] == "Invalid or expired requestState"


# -- the handshake era -----------------------------------------------------------------------------------

LEGACY = "2025-11-25"


def answer_of(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a POST, whether it came as JSON or as an event stream."""
    if response.headers["content-type"].startswith("application/json"):
        return response.json()
    events = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    answers = [e for e in events if "result" in e or "error" in e]
    assert len(answers) == 1, events
    return answers[0]


async def open_session(http: httpx2.AsyncClient, url: str, capabilities: dict[str, Any]) -> dict[str, str]:
    client = {"name": "t", "version": "1"}
    params = {"protocolVersion": LEGACY, "capabilities": capabilities, "clientInfo": client}
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
    opened = await http.post(url, json=init, headers=HEADERS)
    session = {**HEADERS, "Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": LEGACY}
    done = await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
    assert done.status_code == 202
    return session


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("tools/call", {"name": "get_profile", "arguments": {}}),
        ("tools/call", {"name": "get_sms", "arguments": {"limit": 3}, "_meta": {"progressToken": 7}}),
        ("tools/call", {"name": "no_such_tool", "arguments": {}}),
        ("tools/call", {"name": "get_sms", "arguments": {"limit": "many"}}),
        ("tools/list", None),
    ],
)
async def test_same_answer_as_the_sdk_path_in_the_handshake_era(
    proxy: Proc, method: str, params: dict[str, Any] | None
) -> None:
    async with httpx2.AsyncClient() as http:
        session = await open_session(http, proxy.url, {})
        body = {"jsonrpc": "2.0", "id": "a-1", "method": method, **({"params": params} if params is not None else {})}
        fast = await http.post(proxy.url, json=body, headers=session)
        # The handshake-era transport ignores Mcp-Param headers; the fast path hands such a request on.
        # (A new id: a session never reuses one, and the proxy refuses one still in flight.)
        sdk = await http.post(proxy.url, json={**body, "id": "a-2"}, headers={**session, "Mcp-Param-Anything": "1"})
    assert fast.status_code == sdk.status_code == 200
    assert fast.headers["content-type"] == "application/json"  # nothing to stream: one JSON answer
    assert sdk.headers["content-type"].startswith("text/event-stream")
    assert fast.headers["mcp-session-id"] == session["Mcp-Session-Id"]
    assert _nonce_free(answer_of(fast)) == _nonce_free({**answer_of(sdk), "id": "a-1"})


async def test_a_session_is_served_only_to_the_caller_that_opened_it(proxy: Proc) -> None:
    async with httpx2.AsyncClient() as http:
        session = await open_session(http, proxy.url, {})
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        other = await http.post(proxy.url, json=body, headers={**session, "Authorization": "Bearer someone-else"})
        assert other.status_code == 404
        gone = await http.post(proxy.url, json=body, headers={**session, "Mcp-Session-Id": "not-a-session"})
        assert gone.status_code == 404
        assert (await http.post(proxy.url, json=body, headers=session)).status_code == 200


async def test_a_confirmation_is_asked_on_the_call_s_own_stream(proxy: Proc) -> None:
    """The prompt goes out as an event of the call's response; the client's answer, POSTed on its
    session, reaches the call waiting on it, and the answer ends the same stream."""
    async with httpx2.AsyncClient() as http:
        session = await open_session(http, proxy.url, {"elicitation": {"form": {}}})
        call = {"name": "clear_blacklist", "arguments": {}}
        body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": call}
        async with http.stream("POST", proxy.url, json=body, headers=session) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith("data:"):
                    asked = json.loads(line[5:])
                    break
            assert asked["method"] == "elicitation/create"
            assert "clear_blacklist" in asked["params"]["message"]
            decline = {"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "decline"}}
            assert (await http.post(proxy.url, json=decline, headers=session)).status_code == 202
            async for line in lines:
                if line.startswith("data:"):
                    final = json.loads(line[5:])
                    break
        assert final["id"] == 9 and final["result"]["isError"] is True
        assert "declined" in final["result"]["content"][0]["text"]
        # An answer nobody waits for is the SDK's to refuse; it never reaches a call.
        stray = {"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"confirm": True}}}
        assert (await http.post(proxy.url, json=stray, headers=session)).status_code == 202


# -- in process: what the fast path takes and what it hands on -------------------------------------


class Recorder:
    """The SDK app's stand-in: records what reaches it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.bodies.append(b"".join(chunks))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"sdk"})


async def exchange(app: Any, body: bytes, headers: dict[str, str], chunk: int = 1 << 20) -> tuple[int, bytes]:
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    queue: list[Message] = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)
    ]
    never = anyio.Event()

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await never.wait()
        raise AssertionError("unreachable")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"host", b"127.0.0.1:9")] + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        IDENTITY_KEY: Identity(team="test", principal="anonymous"),
    }
    with anyio.fail_after(20):
        await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_what_the_fast_path_takes_and_what_it_replays(policy: Path) -> None:
    gateway = Gateway([load_policy(policy)])
    server = build_server(gateway)
    recorder = Recorder()
    security = transport_security("127.0.0.1", [])
    fast = FastPath(recorder, gateway, server, security, max_body_bytes=MAX_BODY_BYTES, session_open=lambda *_: True)
    async with gateway.running():
        body, headers = modern("tools/call", {"name": "get_profile", "arguments": {}})
        status, answer = await exchange(fast, body, headers, chunk=7)
        assert status == 200 and json.loads(answer)["result"]["content"]
        assert recorder.bodies == []  # answered without the SDK

        call = {"name": "get_profile", "arguments": {}}
        replayed = [
            modern("tools/call", call, meta=SDK_PATH),
            modern("tools/call", call, meta={"io.modelcontextprotocol/logLevel": "info"}),
            modern("tools/call", {**call, "requestState": "x"}),
            modern("resources/subscribe", {"uri": "x://y"}),
            (modern("tools/call", call)[0], {**HEADERS, "MCP-Protocol-Version": VERSION}),  # no Mcp-Name
            (b"{not json", modern("tools/list", {})[1]),
            (b"x" * (MAX_BODY_BYTES + 10), modern("tools/list", {})[1]),
        ]
        for body, headers in replayed:
            status, answer = await exchange(fast, body, headers, chunk=4096)
            assert (status, answer) == (299, b"sdk")
            assert recorder.bodies[-1] == body  # handed on byte for byte
        # The handshake era, and headers the SDK's ladder must judge.
        body, headers = modern("tools/list", {})
        for extra in ({"MCP-Protocol-Version": "2025-11-25"}, {"Mcp-Param-X": "1"}, {"Accept": "application/json"}):
            status, _ = await exchange(fast, body, {**headers, **extra})
            assert status == 299
        assert len(recorder.bodies) == len(replayed) + 3
