"""mcp-guard as its clients' authorization and resource server (SPEC §13, `auth.mode: oauth`), end
to end: an SDK client logs in through mcp-guard's consent page, the login is federated to a fake
SMSAPI's own authorization server (the SDK's, and an independent one built with authlib), and calls
go upstream with that login's upstream grant, never the client's token. Both eras; the upstream's
record shows which token each call carried."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest

from tests.harness import MODES, PY, records, run, spawn
from tests.oauth_flow import STORE_KEY, UPSTREAMS, Memory, User, fake_smsapi, free_port, guard, guard_policy, logged_in
from tests.test_policies_e2e import Human, text

pytestmark = pytest.mark.anyio

KINDS = ["sdk", "authlib"]


def prefix(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def events(record: Path, kind: str) -> list[dict[str, Any]]:
    return [r for r in records(record) if r.get("event") == kind]


def audit(tmp: Path) -> list[dict[str, Any]]:
    return records(tmp / "audit.jsonl")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
async def test_a_client_logs_in_through_the_consent_page_and_calls_with_the_upstream_grant(
    tmp_path: Path, kind: str, mode: str
) -> None:
    with fake_smsapi(tmp_path, kind) as (upstream, record):
        port = free_port()
        with guard(guard_policy(tmp_path, upstream.url, port), port) as proxy:
            storage, user = Memory(), User()
            async with logged_in(proxy.url, storage, user, mode) as client:
                names = {t.name for t in (await client.list_tools()).tools}
                profile = await client.call_tool("get_profile", {})
    assert names == {"get_profile", "get_contacts", "send_sms"}
    assert not profile.is_error and "oauth-user" in text(profile) and "<tool_output" in text(profile)
    consent = user.pages[0]
    assert consent.status == 200 and "Approve this MCP client?" in consent.text
    ours = storage.issued[-1]
    assert ours.access_token.startswith("mcpg_at_") and (ours.refresh_token or "").startswith("mcpg_rt_")
    assert user.answers[0].iss == f"http://127.0.0.1:{port}/"
    # The upstream saw its own token (issued to mcp-guard's client), never the one the client holds.
    calls = events(record, "call")
    assert [c["tool"] for c in calls] == ["get_profile"]
    assert calls[0]["token_sha256_prefix"] != prefix(ours.access_token)
    issued = events(record, "token")
    assert len(issued) == 1 and issued[0]["client_id"] != storage.client.client_id  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", KINDS)
async def test_two_logins_use_their_own_upstream_grants(tmp_path: Path, kind: str) -> None:
    with fake_smsapi(tmp_path, kind) as (upstream, record):
        port = free_port()
        with guard(guard_policy(tmp_path, upstream.url, port), port) as proxy:
            for _ in range(2):
                async with logged_in(proxy.url, Memory(), User()) as client:
                    assert not (await client.call_tool("get_profile", {})).is_error
    calls = events(record, "call")
    assert len(calls) == 2 and calls[0]["token_sha256_prefix"] != calls[1]["token_sha256_prefix"]
    assert len(events(record, "token")) == 2  # one upstream login each
    principals = {r["principal"] for r in audit(tmp_path) if r.get("tool") == "get_profile"}
    assert len(principals) == 2


@pytest.mark.parametrize("kind", KINDS)
async def test_a_narrower_upstream_grant_hides_the_tools_it_does_not_cover(tmp_path: Path, kind: str) -> None:
    with fake_smsapi(tmp_path, kind, "--grant-scopes", "profile contacts") as (upstream, record):
        port = free_port()
        with guard(guard_policy(tmp_path, upstream.url, port), port) as proxy:
            storage = Memory()
            async with logged_in(proxy.url, storage, User()) as client:
                names = {t.name for t in (await client.list_tools()).tools}
                refused = await client.call_tool("send_sms", {"to": "48500100200", "message": "Hej"})
    assert names == {"get_profile", "get_contacts"}
    assert refused.is_error and "'sms' scope" in text(refused)
    assert set((storage.issued[-1].scope or "").split()) == {"profile", "contacts"}
    assert events(record, "call") == []


async def test_twenty_concurrent_calls_after_the_upstream_token_expired_cause_one_refresh(tmp_path: Path) -> None:
    with fake_smsapi(tmp_path, "sdk", "--token-lifetime", "1", "--rotate-refresh") as (upstream, record):
        port = free_port()
        with guard(guard_policy(tmp_path, upstream.url, port), port) as proxy:
            async with logged_in(proxy.url, Memory(), User()) as client:
                assert not (await client.call_tool("get_profile", {})).is_error
                await anyio.sleep(1.1)  # nothing can announce that a one-second upstream token ran out
                results: list[types.CallToolResult] = []

                async def call() -> None:
                    results.append(await client.call_tool("get_profile", {}))

                async with anyio.create_task_group() as tg:
                    for _ in range(20):
                        tg.start_soon(call)
    assert len(results) == 20 and not any(r.is_error for r in results), [text(r) for r in results if r.is_error]
    refreshes = [e for e in events(record, "token") if e["grant_type"] == "refresh_token"]
    assert len(refreshes) == 1 and events(record, "refresh_reuse") == []
    assert len(events(record, "call")) == 21


async def test_a_restart_keeps_clients_tokens_and_upstream_grants(tmp_path: Path) -> None:
    with fake_smsapi(tmp_path, "sdk") as (upstream, record):
        port = free_port()
        policy = guard_policy(tmp_path, upstream.url, port)
        storage, user = Memory(), User()
        for _ in range(2):
            with guard(policy, port) as proxy:
                async with logged_in(proxy.url, storage, user) as client:
                    assert not (await client.call_tool("get_profile", {})).is_error
    assert len(user.answers) == 1  # one login: the second process knew the client and its token
    assert len(events(record, "token")) == 1 and len(events(record, "call")) == 2


@pytest.mark.parametrize("mode", MODES)
async def test_the_confirmation_gate_and_audit_hold_for_an_oauth_principal(tmp_path: Path, mode: str) -> None:
    with fake_smsapi(tmp_path, "sdk") as (upstream, record):
        port = free_port()
        with guard(guard_policy(tmp_path, upstream.url, port), port) as proxy:
            for human in (Human("decline"), Human()):
                async with logged_in(proxy.url, Memory(), User(), mode, elicitation=human) as client:
                    result = await client.call_tool("send_sms", {"to": "48500100200", "message": "Hej"})
                assert len(human.messages) == 1 and "send_sms" in human.messages[0]
                assert result.is_error is (human.action == "decline")
    assert [c["tool"] for c in events(record, "call")] == ["send_sms"]  # the declined one never went
    lines = [r for r in audit(tmp_path) if r.get("tool") == "send_sms"]
    assert [r["decision"] for r in lines if r["decision"] != "pending"] == ["declined", "confirmed"]
    assert all(r["principal"] != "anonymous" for r in lines)


@pytest.mark.parametrize("mode", MODES)
async def test_an_upstream_grant_that_cannot_be_refreshed_asks_the_client_to_log_in_again(
    tmp_path: Path, mode: str
) -> None:
    """The upstream forgets every token (it restarted with its state lost): the call fails naming the
    new login it needs, is never sent without a grant, and the client's next request is 401 (its own
    tokens were ended with the grant), so it logs in again and goes on."""
    port, upstream_port = free_port(), free_port()
    static = {"client_id": "static-client", "client_secret": "static-secret"}  # DCR state dies with the fake
    record = tmp_path / "upstream.jsonl"
    argv = [*UPSTREAMS["sdk"], "--port", str(upstream_port), "--record", str(record)]
    storage, user = Memory(), User()
    with spawn(argv) as upstream:
        policy = guard_policy(tmp_path, upstream.url, port, oauth=static)
    with guard(policy, port) as proxy:
        with spawn(argv):
            async with logged_in(proxy.url, storage, user, mode) as client:
                assert not (await client.call_tool("get_profile", {})).is_error
        with spawn(argv):  # the same URL, every grant forgotten
            async with logged_in(proxy.url, storage, user, mode) as client:
                failed = await client.call_tool("get_profile", {})
            # A new session: a handshake-era session stays bound to the login that opened it.
            async with logged_in(proxy.url, storage, user, mode) as client:
                again = await client.call_tool("get_profile", {})
    assert failed.is_error and "log in again from your MCP client" in text(failed)
    assert not again.is_error, text(again)
    assert len(user.answers) == 2  # the second login
    assert len(events(record, "call")) == 2  # the failed call never reached the upstream


async def test_an_expired_access_token_is_refused_and_the_client_refreshes_at_mcp_guard(tmp_path: Path) -> None:
    with fake_smsapi(tmp_path, "sdk") as (upstream, record):
        port = free_port()
        policy = guard_policy(tmp_path, upstream.url, port, auth={"access_token_seconds": 1})
        with guard(policy, port) as proxy:
            storage, user = Memory(), User()
            async with logged_in(proxy.url, storage, user) as client:
                assert not (await client.call_tool("get_profile", {})).is_error
                expired = storage.issued[-1].access_token
                await anyio.sleep(1.1)  # nothing can announce that a one-second token ran out
                async with httpx2.AsyncClient() as http:
                    refused = await http.post(
                        proxy.url,
                        headers={"Authorization": f"Bearer {expired}", "Accept": "application/json, text/event-stream"},
                        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                    )
                # The SDK client notices the expiry itself and refreshes at mcp-guard before calling.
                assert not (await client.call_tool("get_profile", {})).is_error
    assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert len(user.answers) == 1 and len(storage.issued) == 2  # refreshed, not logged in again
    assert storage.issued[1].access_token != expired
    assert len(events(record, "call")) == 2 and len(events(record, "token")) == 1  # the upstream grant still served


def test_stdio_under_auth_mode_oauth_needs_a_grant_of_its_own(tmp_path: Path) -> None:
    policy = guard_policy(tmp_path, "http://127.0.0.1:9/mcp", free_port())
    done = run([PY, "-m", "proxy", "stdio", "--policy", str(policy)], env={"MCP_GUARD_STORE_KEY": STORE_KEY})
    assert done.returncode == 2 and "mcp-guard login" in done.stderr and "Traceback" not in done.stderr
