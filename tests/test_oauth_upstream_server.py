"""The fake SMSAPI-with-OAuth upstream (tests/servers/oauth_upstream.py) against the SDK's own OAuth client.

Real HTTP on loopback: `OAuthClientProvider` discovers (RFC 9728, RFC 8414), registers (RFC 7591)
or uses the static client, authorizes with PKCE through a scripted browser (an HTTP client that
follows the authorization URL and keeps the final redirect's code, state and iss), exchanges,
refreshes and calls tools. The server's record shows what it issued and which token each call
carried.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata
from pydantic import AnyUrl

from tests.harness import MODES, PY, REPO, Proc, records, spawn
from tests.oauth_flow import Memory

pytestmark = pytest.mark.anyio

SERVER = [PY, str(REPO / "tests" / "servers" / "oauth_upstream.py")]
# The scripted browser never opens this: it stops at the redirect and reads the Location header.
REDIRECT_URI = "http://127.0.0.1:8765/callback"
TIMEOUT = 30


@contextmanager
def upstream(tmp: Path, *flags: str) -> Iterator[tuple[Proc, Path]]:
    record = tmp / "oauth.jsonl"
    with spawn([*SERVER, "--port", "0", "--record", str(record), *flags]) as proc:
        yield proc, record


def events(record: Path, kind: str) -> list[dict[str, Any]]:
    return [r for r in records(record) if r.get("event") == kind]


def prefix(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def base(url: str) -> str:
    return url.removesuffix("/mcp")


def text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


class Browser:
    """Plays the user's browser: follows the authorization URL up to the redirect back to the client."""

    def __init__(self) -> None:
        self.answers: list[AuthorizationCodeResult] = []

    async def redirect(self, url: str) -> None:
        async with httpx2.AsyncClient(follow_redirects=False, timeout=10) as http:
            response = await http.get(url)
            for _ in range(5):  # hops inside the authorization server, if it ever has any
                location = response.headers.get("location", "")
                if not response.is_redirect or location.startswith(REDIRECT_URI):
                    break
                response = await http.get(location)
        assert response.status_code == 302, response.text
        location = response.headers["location"]
        assert location.startswith(REDIRECT_URI + "?")
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        self.answers.append(AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss")))

    async def callback(self) -> AuthorizationCodeResult:
        return self.answers[-1]


@asynccontextmanager
async def connect(url: str, storage: Memory, browser: Browser, mode: str = "auto") -> AsyncIterator[Client]:
    metadata = OAuthClientMetadata(redirect_uris=[AnyUrl(REDIRECT_URI)], client_name="mcp-guard tests")
    auth = OAuthClientProvider(url, metadata, storage, browser.redirect, browser.callback)
    async with httpx2.AsyncClient(auth=auth, timeout=TIMEOUT) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:  # type: ignore[arg-type]
            yield client


async def token_request(url: str, client: OAuthClientInformationFull, refresh_token: str) -> httpx2.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client.client_id}
    form["client_secret"] = client.client_secret or ""
    async with httpx2.AsyncClient(timeout=10) as http:
        return await http.post(f"{base(url)}/token", data=form)


@pytest.mark.parametrize("mode", MODES)
async def test_the_sdk_client_registers_logs_in_lists_and_calls(tmp_path: Path, mode: str) -> None:
    storage, browser = Memory(), Browser()
    with upstream(tmp_path) as (server, record), anyio.fail_after(TIMEOUT):
        async with connect(server.url, storage, browser, mode) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            profile = await client.call_tool("get_profile", {})
            contacts = await client.call_tool("get_contacts", {})
    assert set(tools) == {"get_profile", "get_contacts", "send_sms"}
    annotations = tools["send_sms"].annotations
    assert annotations is not None and annotations.destructive_hint is True
    assert not profile.is_error and json.loads(text(profile)) == {"username": "oauth-user", "points": 100}
    assert not contacts.is_error and json.loads(text(contacts))["size"] == 2
    # RFC 9207: the redirect named the issuer, which the SDK checked against the metadata.
    (answer,) = browser.answers
    assert answer.iss == base(server.url)
    assert storage.client is not None and storage.client.client_id != "static-client"  # registered via DCR
    (issued,) = storage.issued
    assert issued.scope == "sms contacts profile"  # requested: every supported scope; granted: the default three
    assert events(record, "token") == [
        {"event": "token", "grant_type": "authorization_code", "client_id": storage.client.client_id}
    ]
    calls = events(record, "call")
    assert [c["tool"] for c in calls] == ["get_profile", "get_contacts"]
    assert {c["token_sha256_prefix"] for c in calls} == {prefix(issued.access_token)}
    assert issued.access_token not in record.read_text()


async def test_an_expired_token_is_refreshed_once_and_a_rotated_out_refresh_token_revokes_the_grant(
    tmp_path: Path,
) -> None:
    storage, browser = Memory(), Browser()
    with upstream(tmp_path, "--token-lifetime", "1", "--rotate-refresh") as (server, record):
        with anyio.fail_after(TIMEOUT):
            async with connect(server.url, storage, browser) as client:
                assert not (await client.call_tool("get_profile", {})).is_error
                # The case under test is an expired access token: its 1 s lifetime must run out, and
                # nothing can tell us when it has. 1.1 s is the lifetime plus a margin for clock rounding.
                await anyio.sleep(1.1)
                assert not (await client.call_tool("get_profile", {})).is_error
                # Checked here, before closing, so a teardown request a second later cannot add a refresh.
                grants = [e["grant_type"] for e in events(record, "token")]
                assert grants == ["authorization_code", "refresh_token"]
            first, second = storage.issued[0], storage.issued[1]
            assert first.refresh_token and second.refresh_token and first.refresh_token != second.refresh_token
            calls = [c["token_sha256_prefix"] for c in events(record, "call")]
            assert calls == [prefix(first.access_token), prefix(second.access_token)]
            assert not events(record, "refresh_reuse")

            assert storage.client is not None
            reused = await token_request(server.url, storage.client, first.refresh_token)
            assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
            assert len(events(record, "refresh_reuse")) == 1
            # Replay detection revoked the whole grant: the newest refresh token is dead too.
            latest = storage.issued[-1].refresh_token
            assert latest is not None
            after = await token_request(server.url, storage.client, latest)
            assert after.status_code == 400 and after.json()["error"] == "invalid_grant"
    assert first.refresh_token not in record.read_text()


async def test_a_grant_without_sms_makes_send_sms_answer_insufficient_scope(tmp_path: Path) -> None:
    storage, browser = Memory(), Browser()
    with upstream(tmp_path, "--grant-scopes", "profile") as (server, record), anyio.fail_after(TIMEOUT):
        async with connect(server.url, storage, browser) as client:
            refused = await client.call_tool("send_sms", {"to": "48500100200", "message": "Hej"})
            contacts = await client.call_tool("get_contacts", {})
            profile = await client.call_tool("get_profile", {})
    assert storage.issued[-1].scope == "profile"
    assert refused.is_error and "insufficient scope" in text(refused)
    assert contacts.is_error and "insufficient scope" in text(contacts)
    assert not profile.is_error
    assert [c["tool"] for c in events(record, "call")] == ["send_sms", "get_contacts", "get_profile"]


async def test_without_a_valid_token_the_mcp_endpoint_answers_401_pointing_at_its_metadata(tmp_path: Path) -> None:
    ping = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}
    with upstream(tmp_path) as (server, record), anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            bare = await http.post(server.url, json=ping, headers=headers)
            forged = await http.post(server.url, json=ping, headers={**headers, "Authorization": "Bearer made-up"})
            prm = await http.get(f"{base(server.url)}/.well-known/oauth-protected-resource/mcp")
    expected = f'resource_metadata="{base(server.url)}/.well-known/oauth-protected-resource/mcp"'
    for response in (bare, forged):
        assert response.status_code == 401
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and expected in challenge
    assert prm.json()["resource"] == server.url
    assert prm.json()["authorization_servers"] == [base(server.url)]
    assert records(record) == []


async def test_without_dcr_or_iss_the_static_client_still_logs_in(tmp_path: Path) -> None:
    static = OAuthClientInformationFull(
        client_id="static-client",
        client_secret="static-secret",
        token_endpoint_auth_method="client_secret_post",
        redirect_uris=[AnyUrl(REDIRECT_URI)],
    )
    storage, browser = Memory(static), Browser()
    with upstream(tmp_path, "--no-dcr", "--no-iss") as (server, record), anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            metadata = (await http.get(f"{base(server.url)}/.well-known/oauth-authorization-server")).json()
            register = await http.post(f"{base(server.url)}/register", json={"redirect_uris": [REDIRECT_URI]})
        async with connect(server.url, storage, browser) as client:
            assert not (await client.call_tool("get_profile", {})).is_error
    assert "registration_endpoint" not in metadata and "authorization_response_iss_parameter_supported" not in metadata
    assert register.status_code in (400, 404)
    assert browser.answers[0].iss is None
    assert [e["client_id"] for e in events(record, "token")] == ["static-client"]
