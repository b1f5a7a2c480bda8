"""Adversarial review of OAuth, shared state in Redis, and pinning (SPEC §10, §12, §13).

Every test drives real parts (a real redis-server, real `mcp-guard` processes, the real MCP SDK
client, real HTTP on 127.0.0.1) or pins a property of one function, and asserts the SECURE
behaviour: a failing test is a confirmed finding.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx2
import mcp.types as types
import pytest
import redis as redis_sync
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from proxy import federation
from proxy.pinning import Pins, read_lockfile
from proxy.redis_state import RedisState
from proxy.untrusted import plain_name
from proxy.upstream import credential_key
from tests.harness import PY, REPO, Proc, calls, proxy_http, proxy_stdio, run, spawn, write_policy
from tests.test_replicas import KEY, Redis, free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def redis_server() -> Iterator[Redis]:
    server = Redis(free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


UPSTREAM = [PY, str(REPO / "tests" / "servers" / "review_sa_upstream.py")]
SECRET_TEXT = "the vault code is 4711"


def text(result: types.CallToolResult) -> str:
    return "\n".join(getattr(b, "text", "") for b in result.content)


@contextmanager
def review_upstream(tmp: Path, redis_port: int | None = None) -> Iterator[tuple[Proc, Path]]:
    record = tmp / "upstream.jsonl"
    env = {"REVIEW_SA_REDIS_PORT": str(redis_port)} if redis_port else None
    with spawn([*UPSTREAM, "--port", "0", "--record", str(record)], env=env) as proc:
        yield proc, record


@asynccontextmanager
async def client_with(url: str, authorization: str | None = None, mode: str = "auto") -> Any:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx2.AsyncClient(timeout=30, headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


# =================================================================================================
# 1. Shared state in Redis (SPEC §12)
# =================================================================================================


@contextmanager
def redis_rig(tmp: Path, server: Redis, **sections: Any) -> Iterator[tuple[Proc, Path]]:
    with review_upstream(tmp, server.port) as (upstream, record):
        policy = write_policy(tmp / "team.yaml", {"rev": {"url": upstream.url}}, **sections)
        with proxy_http(policy, "--state", server.url, env=KEY) as proxy:
            yield proxy, record


async def test_redis_dying_while_a_call_is_in_flight_withholds_the_result(tmp_path: Path, redis_server: Redis) -> None:
    """The upstream read succeeds but Redis dies before its taint is recorded: the model must not
    read what the session could not remember having read (fail closed), and the proxy answers."""
    with redis_rig(tmp_path, redis_server, trifecta={"action": "block"}) as (proxy, record):
        async with client_with(proxy.url) as client:
            started = time.monotonic()
            result = await client.call_tool("read_inbox", {})
            elapsed = time.monotonic() - started
    assert len(calls(record, "read_inbox")) == 1  # it did reach the upstream
    assert result.is_error, text(result)
    assert SECRET_TEXT not in text(result)
    assert "shared state" in text(result)
    assert elapsed < 15


async def test_a_hung_redis_refuses_a_limited_call_quickly_and_clearly(tmp_path: Path, redis_server: Redis) -> None:
    """Redis accepts connections but answers nothing (CLIENT PAUSE): no hang, a clear refusal,
    and the upstream never sees the call."""
    limits = [{"tools": ["send_out"], "per_minute": 100}]
    with redis_rig(tmp_path, redis_server, limits=limits, trifecta={"action": "off"}) as (proxy, record):
        admin = redis_sync.Redis(port=redis_server.port)
        try:
            async with client_with(proxy.url) as client:
                assert not (await client.call_tool("send_out", {"text": "a"})).is_error
                admin.execute_command("CLIENT", "PAUSE", "30000", "ALL")
                started = time.monotonic()
                refused = await client.call_tool("send_out", {"text": "b"})
                elapsed = time.monotonic() - started
        finally:
            redis_sync.Redis(port=redis_server.port).execute_command("CLIENT", "UNPAUSE")
    assert refused.is_error and "shared state cannot be reached" in text(refused), text(refused)
    assert "redis://" not in text(refused)
    assert elapsed < 10, elapsed
    assert [c["arguments"]["text"] for c in calls(record, "send_out")] == ["a"]


async def test_a_crafted_redis_legs_value_fails_closed(tmp_path: Path, redis_server: Redis) -> None:
    """Someone with write access to Redis plants a taint record that is not UTF-8: the external call
    is refused (guard error = deny), never let through, and the proxy keeps serving."""
    token = "Bearer review-" + secrets.token_hex(8)
    principal = f"bearer:{credential_key(token)}"
    key = "mcp-guard:legs:" + hashlib.sha256(f"{principal}/stateless".encode()).hexdigest()[:32]
    with redis_rig(tmp_path, redis_server, trifecta={"action": "block"}) as (proxy, record):
        redis_sync.Redis(port=redis_server.port).hset(key, mapping={"untrusted": b"\xff\xfe", "sensitive": b"\xc3"})
        async with client_with(proxy.url, token) as client:
            refused = await client.call_tool("send_out", {"text": "x"})
            listed = await client.list_tools()
    assert refused.is_error, text(refused)
    assert calls(record, "send_out") == []
    assert {t.name for t in listed.tools} >= {"send_out", "read_inbox"}


async def test_redis_taint_is_per_session_and_sessions_are_stored_by_digest(redis_server: Redis) -> None:
    state = RedisState(redis_server.url)
    try:
        await state.touch("bearer:aaaa/s1", "rev:read_inbox", frozenset({"untrusted", "sensitive"}), None)
        assert set(await state.legs("bearer:aaaa/s1", None)) == {"untrusted", "sensitive"}
        assert await state.legs("bearer:bbbb/s1", None) == {}
        assert await state.legs("bearer:aaaa/s2", None) == {}
        keys = [k.decode() for k in redis_sync.Redis(port=redis_server.port).keys("*")]
        assert keys and not any("bearer" in k or "s1" in k.split(":")[-1] for k in keys), keys
    finally:
        await state.aclose()


async def test_redis_one_time_states_are_single_use_across_clients(redis_server: Redis) -> None:
    a, b = RedisState(redis_server.url), RedisState(redis_server.url)
    try:
        nonce = secrets.token_hex(16)
        assert await a.first_use(nonce, 60)
        assert not await b.first_use(nonce, 60)
        assert not await a.first_use(nonce, 60)
    finally:
        await a.aclose()
        await b.aclose()


# =================================================================================================
# 2. Credentials never cross the proxy (SPEC §8, §13)
# =================================================================================================


async def test_the_teams_upstream_credential_reflected_by_the_upstream_never_reaches_the_client(
    tmp_path: Path,
) -> None:
    """The policy's own upstream credential (`headers: Authorization: Bearer ${VAR}`) is mcp-guard's
    secret. An upstream that echoes the request's Authorization header (a debug page, a verbose
    error) must not hand it to the client or the model; nor may the client's own token go upstream."""
    upstream_token = "upstream-secret-" + secrets.token_hex(12)
    client_token = "client-secret-" + secrets.token_hex(12)
    with review_upstream(tmp_path) as (upstream, _):
        policy = write_policy(
            tmp_path / "team.yaml",
            {"rev": {"url": upstream.url, "headers": {"Authorization": "Bearer ${REVIEW_UPSTREAM_TOKEN}"}}},
            trifecta={"action": "off"},
        )
        with proxy_http(policy, env={"REVIEW_UPSTREAM_TOKEN": upstream_token}) as proxy:
            async with client_with(proxy.url, f"Bearer {client_token}") as client:
                result = await client.call_tool("whoami", {})
        logs = "".join(proxy.lines)
    shown = json.dumps(result.model_dump(mode="json"))
    assert client_token not in shown  # the upstream never saw the client's token
    assert upstream_token not in shown, shown  # and the client never sees the team's
    assert upstream_token not in logs and client_token not in logs


# =================================================================================================
# 3. Federation: discovery of the upstream's authorization server (SPEC §13)
# =================================================================================================


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[tuple[str, str], tuple[int, dict[str, str], bytes]]] = {}
    seen: ClassVar[list[tuple[str, str]]] = []

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.seen.append((method, self.path))
        status, headers, body = self.routes.get((method, self.path), (404, {}, b"{}"))
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def log_message(self, *args: Any) -> None:
        return None


@contextmanager
def fake_resource_server(prm: dict[str, Any] | None, as_metadata: bytes | None) -> Iterator[str]:
    """An upstream MCP URL (/mcp) answering 401 with RFC 9728 metadata and RFC 8414 metadata of its choosing."""
    handler = type("H", (_Handler,), {"routes": {}, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    prm_url = f"{base}/.well-known/oauth-protected-resource/mcp"
    handler.routes[("POST", "/mcp")] = (401, {"WWW-Authenticate": f'Bearer resource_metadata="{prm_url}"'}, b"{}")
    if prm is not None:
        body = json.dumps({k: (v.replace("BASE", base) if isinstance(v, str) else v) for k, v in prm.items()})
        body = body.replace("BASE", base)
        handler.routes[("GET", "/.well-known/oauth-protected-resource/mcp")] = (200, {}, body.encode())
    if as_metadata is not None:
        handler.routes[("GET", "/.well-known/oauth-authorization-server")] = (
            200,
            {},
            as_metadata.replace(b"BASE", base.encode()),
        )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{base}/mcp"
    finally:
        server.shutdown()
        server.server_close()


AS_METADATA = json.dumps(
    {
        "issuer": "BASE",
        "authorization_endpoint": "BASE/authorize",
        "token_endpoint": "BASE/token",
        "registration_endpoint": "BASE/register",
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
    }
).encode()


async def test_federation_discovers_the_upstreams_own_resource() -> None:
    prm = {"resource": "BASE/mcp", "authorization_servers": ["BASE"]}
    with fake_resource_server(prm, AS_METADATA) as url:
        metadata, resource = await federation.discover(url)
    assert resource.rstrip("/") == url
    assert str(metadata.token_endpoint).startswith(url.rsplit("/", 1)[0])


async def test_federation_refuses_protected_resource_metadata_naming_another_resource() -> None:
    """RFC 9728 §3.3 / MCP authorization: the `resource` in the metadata must be the upstream the
    metadata was fetched for. Otherwise an upstream (or whoever serves its metadata) makes mcp-guard
    ask the authorization server for tokens of a different resource, which mcp-guard then sends to
    this upstream: the confused deputy the audience binding exists to stop."""
    prm = {"resource": "https://victim.example/mcp", "authorization_servers": ["BASE"]}
    with fake_resource_server(prm, AS_METADATA) as url:
        with pytest.raises(federation.FederationError):
            _, resource = await federation.discover(url)
            pytest.fail(f"discover accepted resource {resource!r} for upstream {url!r}")


async def test_federation_refuses_oversized_metadata_without_reading_it_all() -> None:
    prm = {"resource": "BASE/mcp", "authorization_servers": ["BASE"]}
    huge = b'{"issuer": "BASE", "pad": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    with fake_resource_server(prm, huge) as url:
        with pytest.raises(federation.FederationError) as caught:
            await federation.discover(url)
    assert "larger than" in str(caught.value)


async def test_federation_refuses_metadata_whose_issuer_is_not_the_named_server() -> None:
    prm = {"resource": "BASE/mcp", "authorization_servers": ["BASE"]}
    forged = AS_METADATA.replace(b'"issuer": "BASE"', b'"issuer": "https://evil.example"')
    with fake_resource_server(prm, forged) as url:
        with pytest.raises(federation.FederationError):
            await federation.discover(url)


# =================================================================================================
# 4. mcp-guard's own authorization server (SPEC §13)
# =================================================================================================


@pytest.mark.parametrize(
    "uri",
    [
        "http://evil.example/cb",
        "http://127.0.0.1.evil.example/cb",
        "http://localhost.evil.example/cb",
        "http://127.0.0.1@evil.example/cb",
        "http://localhost:80@evil.example/cb",
        "https://localhost/cb#frag",
        "javascript:alert(1)",
        "data:text/html,x",
        "file:///etc/passwd",
        "https:///nohost",
    ],
)
def test_registration_refuses_redirect_uris_that_leave_the_machine_or_are_not_urls(uri: str) -> None:
    from proxy.oauth_server import GuardAuthProvider

    provider = GuardAuthProvider.__new__(GuardAuthProvider)
    provider.redirect_schemes = frozenset({"com.example.app"})
    assert provider.redirect_problem(uri) is not None


# =================================================================================================
# 5. Pinning (SPEC §10)
# =================================================================================================


def _sandbox_policy(tmp: Path) -> Path:
    return write_policy(tmp / "team.yaml", {"notes": {"builtin": "sandbox"}}, audit={"path": "audit.jsonl"})


def _pin(policy: Path, *args: str) -> Any:
    return run([PY, "-m", "proxy", "pin", "--policy", str(policy), *args])


def _pinned_then_tampered(tmp: Path) -> tuple[Path, str]:
    """A pinned sandbox policy whose lockfile then had one tool's readable copy edited to look harmless."""
    policy = _sandbox_policy(tmp)
    assert _pin(policy).returncode == 0
    lock_path = tmp / "team.lock.json"
    lock = json.loads(lock_path.read_text())
    tools = lock["upstreams"]["notes"]["tools"]
    name = sorted(tools)[0]
    tools[name]["definition"]["description"] = "Harmless. Reviewed and approved."
    lock_path.write_text(json.dumps(lock))
    return policy, name


def test_a_lockfile_whose_readable_copy_disagrees_with_its_digest_is_not_trusted(tmp_path: Path) -> None:
    """Pin-file tampering: the readable `definition` is what a reviewer reads in the lockfile's diff,
    the `sha256` is what serve enforces. A lockfile where the two disagree (the copy says
    'harmless', the digest pins whatever the upstream serves now) must not pass as pinned."""
    policy, _ = _pinned_then_tampered(tmp_path)
    diff = _pin(policy, "--diff")
    assert diff.returncode != 0, diff.stdout + diff.stderr
    assert "Traceback" not in diff.stderr


def test_pins_see_a_removed_destructive_hint_a_rename_and_a_new_tool() -> None:
    from proxy.pinning import Lockfile, relock

    send = types.Tool(
        name="send",
        description="Send.",
        input_schema={"type": "object"},
        annotations=types.ToolAnnotations(destructive_hint=True),
    )
    pins = Pins(relock(Lockfile(), "up", [send]))
    calm = send.model_copy(update={"annotations": types.ToolAnnotations()})
    none = send.model_copy(update={"annotations": None})
    titled = send.model_copy(update={"annotations": types.ToolAnnotations(destructive_hint=True, title="Send")})
    assert pins.status("up", send) == "pinned"
    for changed in (calm, none, titled):
        assert pins.status("up", changed) == "drifted"
    assert pins.status("up", send.model_copy(update={"name": "send2"})) == "unpinned"
    assert pins.status("other", send) == "unpinned"


@pytest.mark.parametrize("name", ["ѕend_sms", "send_sms\u200b", "send\u2011sms", "ｓend_sms", "send_sms ", ""])
def test_confusable_tool_names_are_not_plain(name: str) -> None:
    assert not plain_name(name)


def test_the_lockfile_copy_and_digest_agree_after_pinning(tmp_path: Path) -> None:
    from proxy.pinning import digest

    policy = _sandbox_policy(tmp_path)
    assert _pin(policy).returncode == 0
    lock = read_lockfile(tmp_path / "team.lock.json")
    for pins in lock.upstreams.values():
        for entry in pins.tools.values():
            assert entry.sha256 == digest(entry.definition)


async def test_a_tampered_lockfile_copy_does_not_keep_a_tool_listed(tmp_path: Path) -> None:
    """The same tampering seen from serve: the tool whose pin is inconsistent is hidden (or start-up
    refuses), never served as approved."""
    policy, name = _pinned_then_tampered(tmp_path)
    try:
        async with Client(proxy_stdio(policy)) as client:
            listed = {t.name for t in (await client.list_tools()).tools}
    except Exception:  # start-up refused: also secure
        return
    assert name not in listed, listed


@contextmanager
def redis_with_password() -> Iterator[int]:
    """A redis-server that needs a password nobody in the test knows; yields its port."""
    port = free_port()
    argv = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--requirepass", "right-" + secrets.token_hex(8)]  # fmt: skip
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if "Ready to accept connections" in line:
                break
        yield port
    finally:
        server.kill()
        server.wait()


async def test_a_redis_password_never_appears_in_answers_health_or_logs(tmp_path: Path) -> None:
    """`--state redis://:PASSWORD@host/db` with a wrong password: calls are refused clearly, and the
    password is in no answer, no /healthz body and no log line."""
    with redis_with_password() as port:
        password = "wrongpw" + secrets.token_hex(8)
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        with review_upstream(tmp_path) as (upstream, record):
            policy = write_policy(
                tmp_path / "team.yaml",
                {"rev": {"url": upstream.url}},
                limits=[{"tools": ["send_out"], "per_minute": 5}],
                trifecta={"action": "block"},
            )
            with proxy_http(policy, "--state", url, env=KEY) as proxy:
                async with httpx2.AsyncClient(timeout=30) as http:
                    health = await http.get(proxy.url.rstrip("/") + "/healthz")
                async with client_with(proxy.url) as client:
                    refused = await client.call_tool("send_out", {"text": "x"})
                logs = "".join(proxy.lines)
    assert health.status_code == 503 and password not in health.text
    assert refused.is_error and "shared state cannot be reached" in text(refused)
    assert password not in json.dumps(refused.model_dump(mode="json"))
    assert password not in logs, logs[-2000:]
    assert calls(record, "send_out") == []
