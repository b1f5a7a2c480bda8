"""Both fake OAuth upstreams, the SDK-built one and the authlib-built one, behave the same.

Every case runs against tests/servers/oauth_upstream.py (authorization server from the mcp SDK)
and tests/servers/authlib_upstream.py (authorization server from authlib), over real HTTP on
loopback: the SDK's `OAuthClientProvider` discovering (401, RFC 9728, RFC 8414), registering
(RFC 7591) and logging in through the scripted browser (tests/browser.py), and hand-made
requests for what a well-behaved client never sends: no PKCE, a reused code, a replayed refresh
token, a foreign resource. The servers' records show what they issued and which token each call
carried.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata
from pydantic import AnyUrl

from tests.browser import Browser, Page
from tests.harness import MODES, PY, REPO, Proc, records, spawn
from tests.test_oauth_upstream_server import Memory, base, events, prefix, text

pytestmark = pytest.mark.anyio

SERVERS = {
    "sdk": [PY, str(REPO / "tests" / "servers" / "oauth_upstream.py")],
    "authlib": [PY, str(REPO / "tests" / "servers" / "authlib_upstream.py")],
}
REDIRECT_URI = "http://127.0.0.1:8765/callback"  # the browser stops there; nothing listens
STATIC = {"client_id": "static-client", "client_secret": "static-secret"}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
TIMEOUT = 30


@contextmanager
def upstream(kind: str, tmp: Path, *flags: str) -> Iterator[tuple[Proc, Path]]:
    record = tmp / f"{kind}.jsonl"
    with spawn([*SERVERS[kind], "--port", "0", "--record", str(record), *flags]) as proc:
        yield proc, record


class Login:
    """The user's side of the SDK client's login: the browser opens the URL and lands on the callback."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.pages: list[Page] = []

    async def redirect(self, url: str) -> None:
        page = await self.browser.open(url)
        assert page.stopped_at is not None and page.stopped_at.startswith(REDIRECT_URI + "?"), page.text
        self.pages.append(page)

    async def callback(self) -> AuthorizationCodeResult:
        query = self.pages[-1].query
        return AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))


@asynccontextmanager
async def connect(
    url: str, storage: Memory, login: Login, sent: list[str], mode: str = "auto"
) -> AsyncIterator[Client]:
    async def note(request: httpx2.Request) -> None:
        sent.append(f"{request.method} {request.url.path}")

    metadata = OAuthClientMetadata(redirect_uris=[AnyUrl(REDIRECT_URI)], client_name="mcp-guard tests")
    auth = OAuthClientProvider(url, metadata, storage, login.redirect, login.callback)
    async with httpx2.AsyncClient(auth=auth, timeout=TIMEOUT, event_hooks={"request": [note]}) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:  # type: ignore[arg-type]
            yield client


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def authorize(browser: Browser, url: str, challenge: str | None, **params: str) -> dict[str, str]:
    """Open /authorize for the static client (or `client_id=`); the query the browser came back with."""
    query = {"response_type": "code", "client_id": "static-client", "redirect_uri": REDIRECT_URI, "state": "st"}
    if challenge is not None:
        query |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    page = await browser.open(f"{base(url)}/authorize?{urlencode(query | params)}")
    assert page.status == 302 and page.stopped_at is not None, (page.status, page.text)
    return page.query


async def token(url: str, **form: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=10) as http:
        return await http.post(f"{base(url)}/token", data=form)


async def exchange(url: str, code: str, verifier: str, **extra: str) -> httpx2.Response:
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": REDIRECT_URI}
    return await token(url, **(STATIC | form | extra))


async def login_static(browser: Browser, url: str) -> dict[str, Any]:
    verifier, challenge = pkce()
    answer = await authorize(browser, url, challenge)
    issued = await exchange(url, answer["code"], verifier)
    assert issued.status_code == 200, issued.text
    return dict(issued.json())


async def mcp_post(url: str, access_token: str | None) -> httpx2.Response:
    headers = MCP_HEADERS | ({"Authorization": f"Bearer {access_token}"} if access_token else {})
    async with httpx2.AsyncClient(timeout=10) as http:
        return await http.post(url, json=INITIALIZE, headers=headers)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", SERVERS)
async def test_the_sdk_client_discovers_registers_logs_in_and_calls(tmp_path: Path, kind: str, mode: str) -> None:
    storage, sent = Memory(), []
    with upstream(kind, tmp_path) as (server, record), anyio.fail_after(TIMEOUT):
        async with Browser() as browser:
            login = Login(browser)
            async with connect(server.url, storage, login, sent, mode) as client:
                tools = {t.name for t in (await client.list_tools()).tools}
                profile = await client.call_tool("get_profile", {})
    assert tools == {"get_profile", "get_contacts", "send_sms"}
    assert not profile.is_error and json.loads(text(profile)) == {"username": "oauth-user", "points": 100}
    # 401 first, then RFC 9728 and RFC 8414 discovery, RFC 7591 registration, the code exchange.
    expected = [
        "POST /mcp",
        "GET /.well-known/oauth-protected-resource/mcp",
        "GET /.well-known/oauth-authorization-server",
        "POST /register",
        "POST /token",
        "POST /mcp",
    ]
    assert sent[: len(expected)] == expected
    (page,) = login.pages
    assert page.query["iss"] == base(server.url)  # RFC 9207, checked by the SDK against the metadata
    assert storage.client is not None and storage.client.client_id != "static-client"
    assert storage.client.token_endpoint_auth_method == "client_secret_post" and storage.client.client_secret
    (issued,) = storage.issued
    assert issued.scope == "sms contacts profile" and issued.expires_in == 3600 and issued.refresh_token
    assert events(record, "token") == [
        {"event": "token", "grant_type": "authorization_code", "client_id": storage.client.client_id}
    ]
    assert [c["token_sha256_prefix"] for c in events(record, "call")] == [prefix(issued.access_token)]
    assert issued.access_token not in record.read_text()


@pytest.mark.parametrize("kind", SERVERS)
async def test_a_public_client_registers_without_a_secret_and_logs_in_with_pkce_alone(
    tmp_path: Path, kind: str
) -> None:
    with upstream(kind, tmp_path) as (server, record), anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            register = f"{base(server.url)}/register"
            public = await http.post(
                register, json={"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"}
            )
            refused = await http.post(register, json={"redirect_uris": [REDIRECT_URI], "scope": "sms root"})
        assert public.status_code == 201, public.text
        client = public.json()
        assert client["token_endpoint_auth_method"] == "none" and "client_secret" not in client
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_client_metadata"
        verifier, challenge = pkce()
        async with Browser() as browser:
            answer = await authorize(browser, server.url, challenge, client_id=client["client_id"])
        issued = await exchange(server.url, answer["code"], verifier, client_id=client["client_id"], client_secret="")
    assert issued.status_code == 200, issued.text
    assert events(record, "token")[0]["client_id"] == client["client_id"]


@pytest.mark.parametrize("kind", SERVERS)
async def test_without_dcr_or_iss_the_static_client_still_logs_in(tmp_path: Path, kind: str) -> None:
    static = OAuthClientInformationFull(
        token_endpoint_auth_method="client_secret_post", redirect_uris=[AnyUrl(REDIRECT_URI)], **STATIC
    )
    storage, sent = Memory(static), []
    with upstream(kind, tmp_path, "--no-dcr", "--no-iss") as (server, record), anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            metadata = (await http.get(f"{base(server.url)}/.well-known/oauth-authorization-server")).json()
            register = await http.post(f"{base(server.url)}/register", json={"redirect_uris": [REDIRECT_URI]})
        async with Browser() as browser:
            login = Login(browser)
            async with connect(server.url, storage, login, sent) as client:
                assert not (await client.call_tool("get_profile", {})).is_error
    assert "registration_endpoint" not in metadata and "authorization_response_iss_parameter_supported" not in metadata
    assert metadata["code_challenge_methods_supported"] == ["S256"] and metadata["issuer"] == base(server.url)
    assert register.status_code in (400, 404) and "POST /register" not in sent
    assert "iss" not in login.pages[0].query
    assert [e["client_id"] for e in events(record, "token")] == ["static-client"]


@pytest.mark.parametrize("kind", SERVERS)
async def test_pkce_s256_is_required_and_a_foreign_resource_is_refused(tmp_path: Path, kind: str) -> None:
    _, challenge = pkce()
    with upstream(kind, tmp_path) as (server, record), anyio.fail_after(TIMEOUT):
        async with Browser() as browser:
            bare = await authorize(browser, server.url, None)
            plain = await authorize(browser, server.url, None, code_challenge=challenge, code_challenge_method="plain")
            foreign = await authorize(browser, server.url, challenge, resource="http://127.0.0.1:1/mcp")
            ours = await authorize(browser, server.url, challenge, resource=server.url)
    for refused in (bare, plain):
        assert refused["error"] == "invalid_request" and refused["state"] == "st" and "code" not in refused
    assert foreign["error"] == "invalid_target" and "code" not in foreign
    assert ours["code"] and ours["state"] == "st" and ours["iss"] == base(server.url)
    assert records(record) == []


@pytest.mark.parametrize("kind", SERVERS)
async def test_a_code_needs_its_verifier_and_redirect_uri_and_works_once(tmp_path: Path, kind: str) -> None:
    verifier, challenge = pkce()
    with upstream(kind, tmp_path) as (server, record), anyio.fail_after(TIMEOUT):
        async with Browser() as browser:
            code = (await authorize(browser, server.url, challenge))["code"]
        elsewhere = await exchange(server.url, code, verifier, redirect_uri="http://127.0.0.1:8766/callback")
        wrong = await exchange(server.url, code, pkce()[0])
        stranger = await exchange(server.url, code, verifier, client_secret="guess")
        first = await exchange(server.url, code, verifier)
        again = await exchange(server.url, code, verifier)
    assert elsewhere.status_code == 400 and elsewhere.json()["error"] in ("invalid_grant", "invalid_request")
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert stranger.status_code == 401 and stranger.json()["error"] == "invalid_client"
    assert first.status_code == 200 and first.json()["token_type"].lower() == "bearer"
    assert first.headers["cache-control"] == "no-store"
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert [e["grant_type"] for e in events(record, "token")] == ["authorization_code"]


@pytest.mark.parametrize("kind", SERVERS)
async def test_rotation_refuses_a_replayed_refresh_token_and_revokes_the_grant(tmp_path: Path, kind: str) -> None:
    with upstream(kind, tmp_path, "--rotate-refresh") as (server, record), anyio.fail_after(TIMEOUT):
        async with Browser() as browser:
            first = await login_static(browser, server.url)
        refreshed = await token(server.url, grant_type="refresh_token", refresh_token=first["refresh_token"], **STATIC)
        second = refreshed.json()
        assert refreshed.status_code == 200 and second["refresh_token"] != first["refresh_token"]
        assert second["scope"] == "sms contacts profile"
        assert (await mcp_post(server.url, second["access_token"])).status_code == 200
        assert not events(record, "refresh_reuse")
        replay = await token(server.url, grant_type="refresh_token", refresh_token=first["refresh_token"], **STATIC)
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        assert len(events(record, "refresh_reuse")) == 1
        # Replay detection revoked the whole grant: the newest refresh token and access token are dead too.
        after = await token(server.url, grant_type="refresh_token", refresh_token=second["refresh_token"], **STATIC)
        assert after.status_code == 400 and after.json()["error"] == "invalid_grant"
        assert (await mcp_post(server.url, second["access_token"])).status_code == 401
    assert [e["grant_type"] for e in events(record, "token")] == ["authorization_code", "refresh_token"]
    assert first["refresh_token"] not in record.read_text()


@pytest.mark.parametrize("kind", SERVERS)
async def test_without_rotation_the_refresh_token_stays_and_revocation_ends_the_grant(
    tmp_path: Path, kind: str
) -> None:
    with upstream(kind, tmp_path) as (server, record), anyio.fail_after(TIMEOUT):
        async with Browser() as browser:
            first = await login_static(browser, server.url)
        refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        again = [(await token(server.url, **refresh, **STATIC)).json() for _ in range(2)]
        assert [a.get("refresh_token", first["refresh_token"]) for a in again] == [first["refresh_token"]] * 2
        narrower = await token(server.url, **refresh, scope="profile", **STATIC)
        wider = await token(server.url, **refresh, scope="profile subuser", **STATIC)
        assert narrower.json()["scope"] == "profile" and wider.json()["error"] == "invalid_scope"
        async with httpx2.AsyncClient(timeout=10) as http:
            revoked = await http.post(f"{base(server.url)}/revoke", data={"token": first["access_token"], **STATIC})
        assert revoked.status_code == 200
        assert (await mcp_post(server.url, again[-1]["access_token"])).status_code == 401
        gone = await token(server.url, **refresh, **STATIC)
    assert gone.status_code == 400 and gone.json()["error"] == "invalid_grant"
    assert not events(record, "refresh_reuse")


@pytest.mark.parametrize("kind", SERVERS)
async def test_a_narrower_grant_makes_the_server_refuse_tools_outside_it(tmp_path: Path, kind: str) -> None:
    storage, sent = Memory(), []
    with upstream(kind, tmp_path, "--grant-scopes", "profile") as (server, record), anyio.fail_after(TIMEOUT):
        async with Browser() as browser:
            async with connect(server.url, storage, Login(browser), sent) as client:
                refused = await client.call_tool("send_sms", {"to": "48500100200", "message": "Hej"})
                profile = await client.call_tool("get_profile", {})
    assert storage.issued[-1].scope == "profile"
    assert refused.is_error and "insufficient scope" in text(refused)
    assert not profile.is_error
    assert [c["tool"] for c in events(record, "call")] == ["send_sms", "get_profile"]


@pytest.mark.parametrize("kind", SERVERS)
async def test_no_forged_or_expired_token_gets_past_the_401(tmp_path: Path, kind: str) -> None:
    with upstream(kind, tmp_path, "--token-lifetime", "1") as (server, record), anyio.fail_after(TIMEOUT):
        async with Browser() as browser:
            issued = await login_static(browser, server.url)
        bare, forged = await mcp_post(server.url, None), await mcp_post(server.url, "made-up")
        fresh = await mcp_post(server.url, issued["access_token"])
        # The case under test is an expired token: its 1 s lifetime must run out, and nothing can
        # tell us when it has. 1.1 s is the lifetime plus a margin for clock rounding.
        await anyio.sleep(1.1)
        expired = await mcp_post(server.url, issued["access_token"])
        async with httpx2.AsyncClient(timeout=10) as http:
            prm = (await http.get(f"{base(server.url)}/.well-known/oauth-protected-resource/mcp")).json()
    assert issued["expires_in"] == 1 and fresh.status_code == 200
    challenge = f'resource_metadata="{base(server.url)}/.well-known/oauth-protected-resource/mcp"'
    for refused in (bare, forged, expired):
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer ")
        assert challenge in refused.headers["www-authenticate"]
    assert prm["resource"] == server.url and prm["authorization_servers"] == [base(server.url)]
    assert not events(record, "call")


async def test_authlib_refuses_a_challenge_without_a_method_and_a_token_request_for_another_resource(
    tmp_path: Path,
) -> None:
    """Where authlib's server is stricter than the SDK's: RFC 7636 §4.3 and RFC 8707 §2 at /token."""
    verifier, challenge = pkce()
    with upstream("authlib", tmp_path) as (server, _), anyio.fail_after(TIMEOUT):
        async with Browser() as browser:
            methodless = await authorize(browser, server.url, None, code_challenge=challenge)
            code = (await authorize(browser, server.url, challenge))["code"]
        foreign = await exchange(server.url, code, verifier, resource="http://127.0.0.1:1/mcp")
        ours = await exchange(server.url, code, verifier, resource=server.url)
    assert methodless["error"] == "invalid_request"  # an absent method means plain
    assert foreign.status_code == 400 and foreign.json()["error"] == "invalid_target"
    assert ours.status_code == 200
