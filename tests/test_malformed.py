"""SPEC §9: malformed requests get JSON-RPC errors and the proxy keeps serving, on HTTP and on stdio."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client

from tests.harness import PY, REPO, Proc, env_with, proxy_http, write_policy

pytestmark = pytest.mark.anyio

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policy(tmp_path_factory.mktemp("m") / "p.yaml", {"smsapi": {"builtin": "sandbox"}})


@pytest.fixture(scope="module")
def proxy(policy: Path) -> Iterator[Proc]:
    with proxy_http(policy) as proc:
        yield proc


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"jsonrpc": "2.0", "id": 1}',
        b'[{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]',
        b'{"jsonrpc": "2.0", "id": 1, "method": 5}',
    ],
)
async def test_malformed_http_bodies_get_jsonrpc_errors(proxy: Proc, body: bytes) -> None:
    async with httpx2.AsyncClient() as http:
        for extra in ({}, {"MCP-Protocol-Version": "2026-07-28"}):
            response = await http.post(proxy.url, content=body, headers={**HEADERS, **extra})
            assert 400 <= response.status_code < 500
            # One of JSON-RPC's reserved protocol errors: parse error .. invalid params.
            assert -32700 <= response.json()["error"]["code"] <= -32600
    async with Client(proxy.url) as client:
        assert (await client.list_tools()).tools


async def test_unknown_method_and_bad_params(proxy: Proc) -> None:
    async with httpx2.AsyncClient() as http:
        init = await http.post(proxy.url, json=INIT, headers=HEADERS)
        session = {"Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
        await http.post(
            proxy.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers={**HEADERS, **session}
        )
        unknown = await http.post(
            proxy.url, json={"jsonrpc": "2.0", "id": 2, "method": "nope/nope"}, headers={**HEADERS, **session}
        )
        bad = await http.post(
            proxy.url,
            json={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"arguments": 5}},
            headers={**HEADERS, **session},
        )
    assert "-32601" in unknown.text
    assert '"error"' in bad.text and "-32602" in bad.text


def test_garbage_on_stdio_gets_an_error_and_the_proxy_keeps_serving(policy: Path) -> None:
    proc = subprocess.Popen(
        [PY, "-m", "proxy", "stdio", "--policy", str(policy)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_with(),
        cwd=REPO,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write("this is not json\n")
        proc.stdin.write(json.dumps(INIT) + "\n")
        proc.stdin.flush()
        replies = [json.loads(proc.stdout.readline()) for _ in range(2)]
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)
    assert any(r.get("error", {}).get("code") == -32700 for r in replies)
    assert any(r.get("result", {}).get("serverInfo", {}).get("name") == "mcp-guard" for r in replies)
    assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


def test_listening_socket_is_tcp_so_asyncio_sets_nodelay() -> None:
    """A protocol-0 socket makes asyncio skip TCP_NODELAY, adding ~40 ms to every 2026-era response."""
    import socket

    from proxy.netutil import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        sock.close()
