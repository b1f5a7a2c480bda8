"""Two `mcp-guard serve` replicas sharing state in a real redis-server (SPEC §12).

Clients reach the replicas through a transport that sends each HTTP request to the next replica
in turn, as a round-robin load balancer would, so a confirmation asked on one is answered on
the other, and a session's history and a team's limits must hold across both.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.harness import SANDBOX, Proc, calls, proxy_http, spawn, write_policy
from tests.test_policies_e2e import Human, text

pytestmark = pytest.mark.anyio

KEY = {"MCP_GUARD_STATE_KEY": secrets.token_hex(32)}
SEND = {"to": "48500100200", "message": "Hej", "test": True}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """A redis-server on a loopback port, which the test may kill and start again on that port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.popen: subprocess.Popen[str] | None = None
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (`.ci/run` installs Debian's redis-server)"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.popen.stdout is not None
        for line in self.popen.stdout:  # bounded: the server exits (EOF) if it cannot start
            if "Ready to accept connections" in line:
                return
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.popen is not None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def redis() -> Iterator[Redis]:
    server = Redis(free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def replicas(tmp: Path, redis: Redis, **sections: Any) -> Iterator[tuple[Proc, Proc, Path]]:
    record = tmp / "calls.jsonl"
    with spawn([*SANDBOX, "--port", "0", "--record", str(record)]) as upstream:
        policy = write_policy(
            tmp / "team.yaml",
            {"smsapi": {"url": upstream.url, "profile": "smsapi"}},
            scopes=["sms", "profile"],
            **{"trifecta": {"action": "off"}, **sections},
        )
        with (
            proxy_http(policy, "--state", redis.url, env=KEY) as a,
            proxy_http(policy, "--state", redis.url, env=KEY) as b,
        ):
            yield a, b, record


class RoundRobin(httpx2.AsyncBaseTransport):
    """Each request to the next replica, as a load balancer without affinity would send it."""

    def __init__(self, *urls: str) -> None:
        self.ports = [httpx2.URL(u).port for u in urls]
        self.inner = httpx2.AsyncHTTPTransport()
        self.sent = 0
        self.sent_requests: list[tuple[dict[str, str], bytes]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = self.ports[self.sent % len(self.ports)]
        self.sent += 1
        body = await request.aread()
        self.sent_requests.append((dict(request.headers), body))
        routed = httpx2.Request(request.method, request.url.copy_with(port=port), headers=request.headers, content=body)
        return await self.inner.handle_async_request(routed)

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def balanced(a: Proc, b: Proc, **kwargs: Any) -> AsyncIterator[tuple[Client, RoundRobin]]:
    lb = RoundRobin(a.url, b.url)
    async with httpx2.AsyncClient(transport=lb, timeout=30) as http:
        async with Client(streamable_http_client(a.url, http_client=http), mode="auto", **kwargs) as client:
            yield client, lb


def audited(proc: Proc, tool: str) -> list[dict[str, Any]]:
    """The audit lines one replica wrote (to its log: the policy names no audit file)."""
    lines = [line.split("mcp_guard.audit: ", 1)[1] for line in proc.lines if "mcp_guard.audit: " in line]
    return [r for r in map(json.loads, lines) if r["tool"] == tool]


async def test_a_confirmation_asked_on_one_replica_is_redeemed_once_on_the_other(tmp_path: Path, redis: Redis) -> None:
    with replicas(tmp_path, redis) as (a, b, record):
        async with balanced(a, b, elicitation_callback=Human()) as (client, lb):
            result = await client.call_tool("send_sms", SEND)
            assert not result.is_error, text(result)
            headers, retry = next(r for r in reversed(lb.sent_requests) if b"requestState" in r[1])
        # Asked on one replica, answered on the other: a per-process key or memory would refuse it.
        pending = audited(a, "send_sms") + audited(b, "send_sms")
        assert sorted(r["decision"] for r in pending) == ["confirmed", "pending"]
        assert {r["decision"] for r in audited(a, "send_sms")} != {r["decision"] for r in audited(b, "send_sms")}
        assert len(calls(record, "send_sms")) == 1
        # The same answer again, to either replica: used once, so refused, and never forwarded.
        async with httpx2.AsyncClient(timeout=30) as http:
            for replica in (a, b):
                headers.pop("host", None)
                replay = (await http.post(replica.url, content=retry, headers=headers)).json()
                assert replay["result"]["isError"] and "already used" in json.dumps(replay)
        assert len(calls(record, "send_sms")) == 1


async def test_a_rate_limit_holds_across_replicas(tmp_path: Path, redis: Redis) -> None:
    limits = [{"tools": ["get_profile"], "per_minute": 3}]
    with replicas(tmp_path, redis, limits=limits) as (a, b, record):
        async with balanced(a, b) as (client, _):
            results = [await client.call_tool("get_profile", {}) for _ in range(5)]
    assert [r.is_error for r in results] == [False, False, False, True, True]
    assert "Rate limit reached" in text(results[3])
    assert len(calls(record, "get_profile")) == 3
    assert audited(a, "get_profile") and audited(b, "get_profile")  # both replicas served


async def test_a_principal_tainted_on_one_replica_is_blocked_on_the_other(tmp_path: Path, redis: Redis) -> None:
    with replicas(tmp_path, redis, trifecta={"action": "block"}) as (a, b, record):
        async with Client(a.url, mode="auto") as on_a:  # sessionless: the principal is the session
            assert not (await on_a.call_tool("get_sms", {})).is_error  # untrusted + sensitive
        async with Client(b.url, mode="auto", elicitation_callback=Human()) as on_b:
            blocked = await on_b.call_tool("send_sms", SEND)
    assert blocked.is_error and "Blocked:" in text(blocked) and "get_sms" in text(blocked)
    assert calls(record, "send_sms") == []
    assert [r["decision"] for r in audited(b, "send_sms")] == ["blocked"]


async def test_redis_down_fails_closed_and_recovers(tmp_path: Path, redis: Redis) -> None:
    limits = [{"tools": ["get_profile"], "per_minute": 100}]
    with replicas(tmp_path, redis, limits=limits) as (a, b, record):
        async with httpx2.AsyncClient(timeout=30) as http:
            assert (await http.get(a.url.rstrip("/") + "/healthz")).json()["state"] == {"backend": "redis", "ok": True}
            redis.kill()
            health = await http.get(a.url.rstrip("/") + "/healthz")
            assert health.status_code == 503 and health.json()["state"]["ok"] is False
        async with balanced(a, b, elicitation_callback=Human()) as (client, _):
            send = await client.call_tool("send_sms", SEND)
            limited = await client.call_tool("get_profile", {})
            for refused in (send, limited):
                assert refused.is_error and "shared state cannot be reached" in text(refused)
            assert calls(record) == []
            redis.start()  # the same port: the replicas reconnect by themselves
            assert not (await client.call_tool("get_profile", {})).is_error
            assert not (await client.call_tool("send_sms", SEND)).is_error
    assert len(calls(record, "send_sms")) == 1


async def test_a_handshake_era_session_on_another_replica_is_not_found(tmp_path: Path, redis: Redis) -> None:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    with replicas(tmp_path, redis) as (a, b, _):
        async with httpx2.AsyncClient(timeout=30) as http:
            opened = await http.post(a.url, json=init, headers=headers)
            session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
            listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
            elsewhere = await http.post(b.url, json=listing, headers={**headers, **session})
    assert elsewhere.status_code == 404  # the client starts a new session (see README, Deployment)


async def test_serve_with_shared_state_refuses_to_start_without_a_key(tmp_path: Path, redis: Redis) -> None:
    policy = write_policy(tmp_path / "p.yaml", {"smsapi": {"builtin": "sandbox"}})
    from tests.harness import PY, run

    done = run([PY, "-m", "proxy", "serve", "--policy", str(policy), "--port", "0", "--state", redis.url])
    assert done.returncode != 0 and "MCP_GUARD_STATE_KEY" in done.stderr and "Traceback" not in done.stderr
