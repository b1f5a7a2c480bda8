"""Issue 8 / SPEC §8: who a caller is, what the upstream sees, sessions bound to principals, no leaked secrets."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.harness import (
    CAPTURED,
    MODES,
    PY,
    REPO,
    Proc,
    calls,
    env_with,
    proxy_http,
    run,
    write_policy,
)

pytestmark = pytest.mark.anyio

CLIENT_TOKEN = "sk-test-CLIENT-7f3a9c1e5d"
OTHER_TOKEN = "sk-test-OTHER-2b8d4e6f0a"
UPSTREAM_TOKEN = "sk-test-UPSTREAM-9e1c3a5b7d"
SECRETS = (CLIENT_TOKEN, OTHER_TOKEN, UPSTREAM_TOKEN)
KEYS: dict[str, str] = {}

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def with_auth(url: str, authorization: str | None) -> Any:
    headers = {"Authorization": authorization} if authorization else {}
    return streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers))


@pytest.fixture(scope="module")
def passthrough(sandbox: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    policy = write_policy(
        tmp_path_factory.mktemp("pass") / "p.yaml",
        {"smsapi": {"url": sandbox[0].url, "profile": "smsapi"}},
        scopes=["profile", "sms"],
        auth={"mode": "passthrough", "required": True},
    )
    with proxy_http(policy) as proc:
        yield proc


@pytest.fixture(scope="module")
def keyed(sandbox: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Path]]:
    """Two teams in one server: ops sees the account tools, crm the contacts; keys pick the team."""
    where = tmp_path_factory.mktemp("keys")
    upstream = {"url": sandbox[0].url, "profile": "smsapi", "headers": {"Authorization": "Bearer ${UP_TOKEN}"}}
    audit = where / "audit.jsonl"
    ops = write_policy(
        where / "ops.yaml",
        {"smsapi": upstream},
        team="ops",
        scopes=["profile"],
        auth={"mode": "keys"},
        audit={"path": str(audit)},
    )
    crm = write_policy(
        where / "crm.yaml",
        {"smsapi": upstream},
        team="crm",
        scopes=["contacts"],
        auth={"mode": "keys"},
        audit={"path": str(audit)},
    )
    keys = where / "keys.yaml"
    for team in ("ops", "crm"):
        # Not through harness.run: the one intended print of a key must not count as a leak.
        made = subprocess.run(
            [PY, "-m", "proxy", "keys", "new", "--team", team, "--label", f"{team}-laptop", "--keys", str(keys)],
            capture_output=True,
            text=True,
            env=env_with(),
            cwd=REPO,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        assert "only time" in made.stderr
        KEYS[team] = made.stdout.strip()
    with proxy_http(ops, "--policy", str(crm), "--keys", str(keys), env={"UP_TOKEN": UPSTREAM_TOKEN}) as proc:
        yield proc, audit


def test_keys_file_holds_digests_only(keyed: tuple[Proc, Path]) -> None:
    keys_file = keyed[1].parent / "keys.yaml"
    text = keys_file.read_text()
    for team, key in KEYS.items():
        assert key.startswith("mcpg_") and len(key) > 40
        assert key not in text
        assert sha(key) in text
        assert f"team: {team}" in text


@pytest.mark.parametrize("mode", MODES)
async def test_passthrough_forwards_the_clients_exact_header(
    mode: str, sandbox: tuple[Proc, Path], passthrough: Proc
) -> None:
    before = len(calls(sandbox[1], "get_profile"))
    async with Client(with_auth(passthrough.url, f"Bearer {CLIENT_TOKEN}"), mode=mode) as client:
        result = await client.call_tool("get_profile", {})
    assert not result.is_error
    seen = calls(sandbox[1], "get_profile")[before:]
    assert [c["auth_sha256"] for c in seen] == [sha(f"Bearer {CLIENT_TOKEN}")]


async def test_passthrough_required_refuses_without_a_header(passthrough: Proc) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.post(passthrough.url, json=INIT, headers=MCP_HEADERS)
    assert response.status_code == 401
    assert "Authorization" in response.json()["error_description"]


@pytest.mark.parametrize("mode", MODES)
async def test_each_key_sees_its_own_teams_tools(mode: str, keyed: tuple[Proc, Path]) -> None:
    proc, _ = keyed
    async with Client(with_auth(proc.url, f"Bearer {KEYS['ops']}"), mode=mode) as ops:
        ops_tools = {t.name for t in (await ops.list_tools()).tools}
        refused = await ops.call_tool("get_contacts", {})
    async with Client(with_auth(proc.url, f"Bearer {KEYS['crm']}"), mode=mode) as crm:
        crm_tools = {t.name for t in (await crm.list_tools()).tools}
    assert "get_profile" in ops_tools and "get_contacts" not in ops_tools
    assert "get_contacts" in crm_tools and "get_profile" not in crm_tools
    assert refused.is_error


@pytest.mark.parametrize("mode", MODES)
async def test_keys_mode_upstream_sees_only_the_policy_credential(
    mode: str, sandbox: tuple[Proc, Path], keyed: tuple[Proc, Path]
) -> None:
    before = len(calls(sandbox[1], "get_profile"))
    async with Client(with_auth(keyed[0].url, f"Bearer {KEYS['ops']}"), mode=mode) as client:
        assert not (await client.call_tool("get_profile", {})).is_error
    seen = calls(sandbox[1], "get_profile")[before:]
    assert [c["auth_sha256"] for c in seen] == [sha(f"Bearer {UPSTREAM_TOKEN}")]


@pytest.mark.parametrize("authorization", [None, "Bearer mcpg_not-a-real-key", f"Bearer {CLIENT_TOKEN}", "Basic eDp5"])
async def test_missing_or_wrong_key_is_401_before_mcp(authorization: str | None, keyed: tuple[Proc, Path]) -> None:
    headers = dict(MCP_HEADERS)
    if authorization:
        headers["Authorization"] = authorization
    async with httpx2.AsyncClient() as http:
        legacy = await http.post(keyed[0].url, json=INIT, headers=headers)
        modern = await http.post(
            keyed[0].url,
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}},
            headers={**headers, "MCP-Protocol-Version": "2026-07-28"},
        )
    assert legacy.status_code == 401
    assert modern.status_code == 401
    assert "proxy key" in legacy.json()["error_description"]


async def _open_session(url: str, authorization: str) -> str:
    async with httpx2.AsyncClient() as http:
        response = await http.post(url, json=INIT, headers={**MCP_HEADERS, "Authorization": authorization})
        assert response.status_code == 200
        session = response.headers["mcp-session-id"]
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        headers = {
            **MCP_HEADERS,
            "Authorization": authorization,
            "Mcp-Session-Id": session,
            "MCP-Protocol-Version": "2025-11-25",
        }
        assert (await http.post(url, json=note, headers=headers)).status_code == 202
    return session


async def _list_in_session(url: str, authorization: str, session: str) -> int:
    headers = {
        **MCP_HEADERS,
        "Authorization": authorization,
        "Mcp-Session-Id": session,
        "MCP-Protocol-Version": "2025-11-25",
    }
    async with httpx2.AsyncClient() as http:
        response = await http.post(url, json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, headers=headers)
    return response.status_code


async def test_session_id_replayed_by_another_principal_is_404(passthrough: Proc, keyed: tuple[Proc, Path]) -> None:
    session = await _open_session(passthrough.url, f"Bearer {CLIENT_TOKEN}")
    assert await _list_in_session(passthrough.url, f"Bearer {CLIENT_TOKEN}", session) == 200
    assert await _list_in_session(passthrough.url, f"Bearer {OTHER_TOKEN}", session) == 404

    keyed_session = await _open_session(keyed[0].url, f"Bearer {KEYS['ops']}")
    assert await _list_in_session(keyed[0].url, f"Bearer {KEYS['ops']}", keyed_session) == 200
    assert await _list_in_session(keyed[0].url, f"Bearer {KEYS['crm']}", keyed_session) == 404


async def test_dns_rebinding_and_body_limit(passthrough: Proc) -> None:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {CLIENT_TOKEN}"}
    async with httpx2.AsyncClient() as http:
        rebound = await http.post(passthrough.url, json=INIT, headers={**headers, "Host": "evil.example"})
        huge = await http.post(passthrough.url, content=b'{"x":"' + b"a" * (2 * 1024 * 1024) + b'"}', headers=headers)
    assert rebound.status_code in (403, 421)
    assert huge.status_code == 413


def test_non_loopback_without_tls_warns(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.yaml", {"s": {"builtin": "sandbox"}})
    with proxy_http(policy, "--host", "0.0.0.0", "--allowed-host", "mcp.example.com") as proc:
        assert any("without" in line or "clear text" in line for line in proc.lines)


def test_no_secret_in_any_output(keyed: tuple[Proc, Path], passthrough: Proc, tmp_path: Path) -> None:
    """Runs last in this module: everything above has pushed the test tokens through every path."""
    audit = keyed[1]
    policy = write_policy(
        tmp_path / "check.yaml",
        {
            "smsapi": {
                "url": "https://mcp.smsapi.io/",
                "profile": "smsapi",
                "headers": {"Authorization": "Bearer ${UP_TOKEN}"},
            }
        },
        scopes=["sms"],
    )
    checked = run([PY, "-m", "proxy", "check", "--policy", str(policy)], env={"UP_TOKEN": UPSTREAM_TOKEN})
    assert checked.returncode == 0
    outputs = ["".join(CAPTURED), audit.read_text(), checked.stdout, checked.stderr]
    assert audit.read_text().strip(), "the audit log should have lines to check"
    for secret in [*SECRETS, *KEYS.values()]:
        for text in outputs:
            assert secret not in text
    for line in audit.read_text().splitlines():
        record = json.loads(line)
        assert record["principal"].startswith("key:")
