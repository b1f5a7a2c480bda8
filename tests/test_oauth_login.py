"""mcp-guard as an OAuth client of its upstream (SPEC §13, step 1), fully offline.

`mcp-guard login` against a fake SMSAPI that is its own authorization server
(tests/servers/oauth_upstream.py): the test plays the browser (an HTTP client following the
login URL's redirects), the grant lands encrypted, and `serve`/`stdio` then call the upstream
with it, refresh it once for many concurrent calls, and never pass a client's token on.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client

from tests.harness import PY, REPO, Proc, env_with, proxy_http, proxy_stdio, run, spawn, write_policy
from tests.test_policies_e2e import Human, bearer

pytestmark = pytest.mark.anyio

SERVER = [PY, str(REPO / "tests" / "servers" / "oauth_upstream.py")]
KEY = {"MCP_GUARD_STORE_KEY": secrets.token_hex(32)}
URL = re.compile(r"https?://\S+")


@contextmanager
def upstream(tmp: Path, *flags: str) -> Iterator[tuple[Proc, Path]]:
    record = tmp / "oauth.jsonl"
    with spawn([*SERVER, "--port", "0", "--record", str(record), *flags]) as proc:
        yield proc, record


def events(record: Path, kind: str) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [r for r in map(json.loads, record.read_text().splitlines()) if r.get("event") == kind]


def refreshes(record: Path) -> list[dict[str, Any]]:
    return [e for e in events(record, "token") if e["grant_type"] == "refresh_token"]


def policy(tmp: Path, url: str) -> Path:
    return write_policy(
        tmp / "team.yaml",
        {"smsapi": {"url": url, "profile": "smsapi", "oauth": {}}},
        scopes=["sms", "contacts", "profile"],
        trifecta={"action": "off"},
    )


async def login(policy_path: Path, env: dict[str, str] = KEY) -> tuple[int, str]:
    """`mcp-guard login`, with this test as the browser: it follows the printed URL's redirects."""
    argv = [PY, "-m", "proxy", "login", "--policy", str(policy_path), "--no-browser"]
    async with await anyio.open_process(argv, env=env_with(env), cwd=REPO) as process:
        assert process.stderr is not None and process.stdout is not None
        err = b""
        with anyio.fail_after(60):
            while not (m := URL.search(err.decode(errors="replace"))):
                chunk = await process.stderr.receive()
                err += chunk
            async with httpx2.AsyncClient(follow_redirects=True, timeout=30) as browser:
                page = await browser.get(m.group())
            assert page.status_code == 200 and "Logged in" in page.text
            out = b""
            async for chunk in process.stdout:
                out += chunk
            await process.wait()
    return int(process.returncode or 0), out.decode()


async def test_login_then_stdio_and_serve_call_with_the_grant_never_the_clients_token(tmp_path: Path) -> None:
    with upstream(tmp_path) as (server, record):
        path = policy(tmp_path, server.url)
        code, out = await login(path)
        assert code == 0 and "granted scopes: contacts profile sms" in out
        grant = tmp_path / "team.smsapi.grant"
        assert stat.S_IMODE(grant.stat().st_mode) == 0o600
        assert b"access_token" not in grant.read_bytes()
        (issued,) = events(record, "token")
        assert issued["grant_type"] == "authorization_code"

        async with Client(proxy_stdio(path, env=KEY)) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"get_profile", "get_contacts", "send_sms"} <= names
            assert not (await client.call_tool("get_profile", {})).is_error

        with proxy_http(path, env=KEY) as proxy:
            async with bearer(proxy.url, "the-clients-own-token", "legacy", elicitation_callback=Human()) as client:
                assert not (await client.call_tool("get_profile", {})).is_error
        theirs = hashlib.sha256(b"the-clients-own-token").hexdigest()[:12]
        used = {c["token_sha256_prefix"] for c in events(record, "call")}
        assert used and theirs not in used  # only mcp-guard's own grant ever reached the upstream


async def test_a_partial_grant_hides_the_tools_it_does_not_cover(tmp_path: Path) -> None:
    with upstream(tmp_path, "--grant-scopes", "profile") as (server, record):
        path = policy(tmp_path, server.url)
        code, out = await login(path)
        assert code == 0 and "granted scopes: profile" in out
        async with Client(proxy_stdio(path, env=KEY)) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            refused = await client.call_tool("send_sms", {"to": "48500100200", "message": "Hej"})
        assert "get_profile" in names and "send_sms" not in names and "get_contacts" not in names
        assert refused.is_error
        assert not [c for c in events(record, "call") if c["tool"] == "send_sms"]


async def test_twenty_calls_after_expiry_cause_one_refresh_and_the_rotated_grant_survives_a_restart(
    tmp_path: Path,
) -> None:
    with upstream(tmp_path, "--token-lifetime", "2", "--rotate-refresh") as (server, record):
        path = policy(tmp_path, server.url)
        assert (await login(path))[0] == 0
        with proxy_http(path, env=KEY) as proxy:
            async with Client(proxy.url, mode="auto") as client:
                await anyio.sleep(2.2)  # the access token's lifetime (2 s) must run out: that is the case
                # A slow start may already have refreshed once (the token is 2 s old by then): only the
                # calls' own refreshes count.
                earlier = len(refreshes(record))
                results: list[bool] = []
                async with anyio.create_task_group() as tg:
                    for _ in range(20):

                        async def one() -> None:
                            results.append((await client.call_tool("get_profile", {})).is_error)

                        tg.start_soon(one)
        assert results == [False] * 20
        assert len(refreshes(record)) - earlier == 1 and not events(record, "refresh_reuse")
        # A new process reads the rotated refresh token from the store (the old one would revoke).
        await anyio.sleep(2.2)
        async with Client(proxy_stdio(path, env=KEY)) as client:
            assert not (await client.call_tool("get_profile", {})).is_error
        assert not events(record, "refresh_reuse")


async def test_no_grant_or_a_wrong_key_refuses_to_start(tmp_path: Path) -> None:
    with upstream(tmp_path) as (server, _):
        path = policy(tmp_path, server.url)
        before = run([PY, "-m", "proxy", "stdio", "--policy", str(path)], env=KEY)
        assert before.returncode == 2 and "mcp-guard login" in before.stderr
        assert (await login(path))[0] == 0
        wrong = run([PY, "-m", "proxy", "stdio", "--policy", str(path)], env={"MCP_GUARD_STORE_KEY": "x" * 64})
        missing = run([PY, "-m", "proxy", "stdio", "--policy", str(path)], env={"MCP_GUARD_STORE_KEY": ""})
    assert wrong.returncode == 2 and "cannot decrypt" in wrong.stderr and "Traceback" not in wrong.stderr
    assert missing.returncode == 2 and "MCP_GUARD_STORE_KEY" in missing.stderr


async def test_the_policy_refuses_oauth_with_a_static_authorization_header(tmp_path: Path) -> None:
    path = write_policy(
        tmp_path / "p.yaml",
        {"s": {"url": "https://example.com/mcp", "oauth": {}, "headers": {"Authorization": "Bearer x"}}},
    )
    done = run([PY, "-m", "proxy", "check", "--policy", str(path)])
    assert done.returncode == 2 and "Authorization from the grant" in done.stderr
