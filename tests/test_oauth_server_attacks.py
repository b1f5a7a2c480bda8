"""Attacks on mcp-guard as an OAuth authorization and resource server (SPEC §13, `auth.mode: oauth`).

Each test runs a real `mcp-guard serve` on loopback in front of a real fake SMSAPI with its own
authorization server (the SDK's, and authlib's where it matters), and plays the attacker with
plain HTTP and the scripted browser of tests/browser.py. What they prove:

- discovery names mcp-guard, never the upstream, and is built from `public_url` whatever Host or
  X-Forwarded-* headers a request carries; only S256 PKCE is offered and required;
- client registration accepts only loopback http, https and listed private-scheme redirect URIs;
- /authorize refuses a resource mcp-guard does not serve before any consent page is shown;
- every login passes mcp-guard's consent page (escaped, unframeable, uncached), so a client that
  registered itself cannot have a victim's browser carry a code to it (the confused deputy);
- the consent form needs its CSRF token and the browser that opened it, and decides once;
- the upstream's answer at /oauth/callback needs its single-use `state`, the same browser and the
  upstream's `iss`;
- codes are single-use (a reused code revokes what it gave), tokens are mcp-guard's own, stored as
  digests in an encrypted file, refresh tokens rotate and a reused one revokes the whole login;
- anything but a live mcp-guard token is 401 and nothing reaches the upstream;
- a login that outlives `auth.login_seconds` ends: its consent page and its upstream `state` are
  refused;
- a wrong store key stops start-up with one plain line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import httpx2
import pytest

from proxy.grants import GrantStore
from tests.browser import Browser, Page, stops_at
from tests.harness import PY, Proc, records, run
from tests.oauth_flow import STORE_KEY, Memory, User, fake_smsapi, free_port, guard, guard_policy, logged_in
from tests.test_oauth_upstream_server import Browser as UpstreamBrowser
from tests.test_oauth_upstream_server import Memory as UpstreamMemory
from tests.test_oauth_upstream_server import connect as connect_upstream

pytestmark = pytest.mark.anyio

KINDS = ["sdk", "authlib"]
TIMEOUT = 60
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "attacker", "version": "1"}},
}
SEND_SMS = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "send_sms", "arguments": {"to": "48500100200", "message": "Hej"}},
}


# -- helpers ---------------------------------------------------------------------------------------


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def prefix(token: str) -> str:
    """The hash prefix the upstream fakes record for the bearer token of each call."""
    return sha256(token)[:12]


def events(record: Path, kind: str) -> list[dict[str, Any]]:
    return [r for r in records(record) if r.get("event") == kind]


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def query_of(url: str | None) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url or "").query, keep_blank_values=True))


def with_query(url: str, **changes: str | None) -> str:
    """`url` with some query parameters replaced (None: removed)."""
    parts = urlsplit(url)
    query = {k: v for k, v in {**query_of(url), **changes}.items() if v is not None}
    return urlunsplit(parts._replace(query=urlencode(query)))


def either(*uris: str) -> Callable[[str], bool]:
    """A browser's stop_at for any of these redirect URIs."""
    matchers = [stops_at(uri) for uri in uris]
    return lambda url: any(match(url) for match in matchers)


def loopback_redirect() -> str:
    """A native client's redirect URI on a port nobody listens on: browsers stop before it."""
    return f"http://127.0.0.1:{free_port()}/callback"


@dataclass
class Stack:
    """A fake SMSAPI with its authorization server, and mcp-guard in front of it."""

    base: str  # mcp-guard's public_url: its issuer and the origin of its endpoints
    port: int
    upstream: str  # the fake's MCP URL
    record: Path
    tmp: Path
    policy: Path
    proxy: Proc

    @property
    def callback(self) -> str:
        return f"{self.base}/oauth/callback"

    def tokens_issued_upstream(self) -> int:
        return len(events(self.record, "token"))

    def calls_upstream(self) -> int:
        return len(events(self.record, "call"))


@contextmanager
def stack(tmp: Path, kind: str = "sdk", *flags: str, **sections: Any) -> Iterator[Stack]:
    with fake_smsapi(tmp, kind, *flags) as (upstream, record):
        port = free_port()
        policy = guard_policy(tmp, upstream.url, port, **sections)
        with guard(policy, port) as proxy:
            yield Stack(f"http://127.0.0.1:{port}", port, upstream.url, record, tmp, policy, proxy)


@dataclass
class Flow:
    """One client's authorization request at mcp-guard, as the client builds it."""

    client: dict[str, Any]
    redirect: str
    verifier: str
    state: str
    url: str  # the authorization URL a browser opens


async def register(http: httpx2.AsyncClient, base: str, redirect: str, name: str = "Test Client") -> httpx2.Response:
    body = {"redirect_uris": [redirect], "client_name": name, "token_endpoint_auth_method": "none"}
    return await http.post(f"{base}/register", json=body)


async def start(
    http: httpx2.AsyncClient,
    base: str,
    *,
    redirect: str | None = None,
    name: str = "Test Client",
    **params: str | None,
) -> Flow:
    """Register a client and build its authorization URL (S256 PKCE; `params` override or drop fields)."""
    redirect = redirect or loopback_redirect()
    answer = await register(http, base, redirect, name)
    assert answer.status_code == 201, answer.text
    client = answer.json()
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(16)
    query: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": redirect,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": f"{base}/",
        **params,
    }
    url = f"{base}/authorize?" + urlencode({k: v for k, v in query.items() if v is not None})
    return Flow(client, redirect, verifier, state, url)


async def consent_page(browser: Browser, flow: Flow) -> Page:
    page = await browser.open(flow.url)
    assert page.status == 200 and page.forms and "Approve this MCP client?" in page.text, (page.status, page.text)
    return page


async def code_for(flow: Flow) -> str:
    """Approve `flow` in a fresh browser, through the upstream's login, up to the client's redirect URI."""
    async with Browser(stop_at=stops_at(flow.redirect)) as browser:
        done = await browser.submit(await consent_page(browser, flow), "approve")
    assert done.stopped_at is not None, done.text
    assert done.query["state"] == flow.state and done.query.get("code"), done.query
    return done.query["code"]


async def token(http: httpx2.AsyncClient, base: str, flow: Flow, **form: str) -> httpx2.Response:
    return await http.post(f"{base}/token", data={"client_id": flow.client["client_id"], **form})


async def exchange(http: httpx2.AsyncClient, base: str, flow: Flow, code: str) -> httpx2.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": flow.redirect}
    return await token(http, base, flow, **form, code_verifier=flow.verifier)


async def refresh(http: httpx2.AsyncClient, base: str, flow: Flow, refresh_token: str) -> httpx2.Response:
    return await token(http, base, flow, grant_type="refresh_token", refresh_token=refresh_token)


async def revoke(http: httpx2.AsyncClient, base: str, flow: Flow, token: str) -> httpx2.Response:
    # The SDK's RevocationRequest declares `client_secret: str | None` without a default, so even a
    # public client (token_endpoint_auth_method "none") must send the field; empty is accepted.
    return await http.post(
        f"{base}/revoke", data={"token": token, "client_id": flow.client["client_id"], "client_secret": ""}
    )


async def tokens_for(http: httpx2.AsyncClient, stack: Stack, **params: str | None) -> tuple[Flow, dict[str, Any]]:
    """A client's whole login at mcp-guard: its flow and mcp-guard's token answer."""
    flow = await start(http, stack.base, **params)
    answer = await exchange(http, stack.base, flow, await code_for(flow))
    assert answer.status_code == 200, answer.text
    return flow, answer.json()


async def mcp(
    http: httpx2.AsyncClient,
    url: str,
    bearer: str | None,
    message: dict[str, Any] = INITIALIZE,
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    """One MCP POST with (or without) a bearer token."""
    sent = {**MCP_HEADERS, **(headers or {})}
    if bearer is not None:
        sent["Authorization"] = f"Bearer {bearer}"
    return await http.post(url, json=message, headers=sent)


def refused(response: httpx2.Response) -> bool:
    """A 401 naming an invalid token, as mcp-guard answers a token it does not accept."""
    return response.status_code == 401 and 'error="invalid_token"' in response.headers.get("www-authenticate", "")


def grant_error(response: httpx2.Response) -> bool:
    return response.status_code == 400 and response.json().get("error") == "invalid_grant"


# -- 1. discovery ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_discovery_names_mcp_guard_and_ignores_the_request_host(tmp_path: Path, kind: str) -> None:
    with stack(tmp_path, kind) as s, anyio.fail_after(TIMEOUT):
        base, upstream_origin = s.base, s.upstream.removesuffix("/mcp")
        spoofs = [
            {},
            # A Host DNS-rebinding protection allows, plus a reverse proxy's forwarding headers.
            {"Host": f"localhost:{s.port}", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
            {"Host": "evil.example", "X-Forwarded-Host": "evil.example:8443", "Forwarded": "host=evil.example"},
        ]
        seen: list[tuple[int, str, int, str, dict[str, Any], dict[str, Any], dict[str, Any]]] = []
        async with httpx2.AsyncClient(timeout=10) as http:
            for headers in spoofs:
                root = await mcp(http, f"{base}/", None, headers=headers)
                group = await mcp(http, f"{base}/sms", None, headers=headers)
                prm = await http.get(f"{base}/.well-known/oauth-protected-resource", headers=headers)
                prm_sms = await http.get(f"{base}/.well-known/oauth-protected-resource/sms", headers=headers)
                asm = await http.get(f"{base}/.well-known/oauth-authorization-server", headers=headers)
                seen.append((
                    root.status_code, root.headers.get("www-authenticate", ""),
                    group.status_code, group.headers.get("www-authenticate", ""),
                    prm.json(), prm_sms.json(), asm.json(),
                ))  # fmt: skip
    for root_status, root_challenge, group_status, group_challenge, prm, prm_sms, asm in seen:
        assert root_status == 401 and root_challenge.startswith("Bearer ")
        assert f'resource_metadata="{base}/.well-known/oauth-protected-resource"' in root_challenge
        assert group_status == 401
        assert f'resource_metadata="{base}/.well-known/oauth-protected-resource/sms"' in group_challenge
        assert prm["resource"] == f"{base}/" and prm["authorization_servers"] == [f"{base}/"]
        assert prm_sms["resource"] == f"{base}/sms" and prm_sms["authorization_servers"] == [f"{base}/"]
        assert asm["issuer"] == f"{base}/"
        endpoints = {k: v for k, v in asm.items() if k.endswith("_endpoint")}
        assert set(endpoints) >= {"authorization_endpoint", "token_endpoint", "registration_endpoint"}
        assert all(v.startswith(f"{base}/") for v in endpoints.values()), endpoints
        assert asm["code_challenge_methods_supported"] == ["S256"]
        assert asm["authorization_response_iss_parameter_supported"] is True
        for text in (root_challenge, group_challenge, json.dumps([prm, prm_sms, asm])):
            assert upstream_origin not in text and "evil.example" not in text and "localhost" not in text
    assert len({json.dumps(entry) for entry in seen}) == 1  # the headers changed nothing at all


# -- 2. registration ---------------------------------------------------------------------------------

ACCEPTED = [
    "http://127.0.0.1:{port}/cb",
    "http://localhost:1234/x",
    "http://[::1]:4321/callback",
    "https://app.example/cb",
    "cursor://anysphere.cursor-retrieval/oauth/callback",
]
REFUSED = [
    "http://evil.example/cb",
    "javascript:alert(1)",
    "vscode://vscode.github-authentication/did-authenticate",  # a private scheme the policy does not list
    "http://127.0.0.1:5555/cb#fragment",
    "https://app.example/cb#fragment",
    "http://127.0.0.1.evil.example/cb",  # loopback-looking host names are not loopback
    "http://localhost@evil.example/cb",  # userinfo: the host is evil.example
    "http://127.0.0.1:80@evil.example/cb",
    "http://evil.example\\@127.0.0.1/cb",  # a browser reads evil.example here (WHATWG)
    "data:text/html,<script>alert(1)</script>",
    "file:///etc/passwd",
]


async def test_registration_accepts_only_loopback_https_and_listed_private_schemes(tmp_path: Path) -> None:
    with stack(tmp_path, auth={"redirect_schemes": ["cursor"]}) as s, anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            accepted = {}
            for uri in ACCEPTED:
                uri = uri.format(port=free_port())
                accepted[uri] = await register(http, s.base, uri)
            refused_ = {uri: await register(http, s.base, uri) for uri in REFUSED}
    for uri, answer in accepted.items():
        assert answer.status_code == 201, (uri, answer.text)
        assert answer.json()["redirect_uris"] == [uri] and answer.json()["client_id"]
    for uri, answer in refused_.items():
        assert answer.status_code == 400, (uri, answer.text)
        assert answer.json()["error"] == "invalid_redirect_uri", (uri, answer.text)
        assert "client_id" not in answer.json()


# -- 3. PKCE and 4. foreign resources --------------------------------------------------------------


def assert_refused_before_consent(answer: httpx2.Response, flow: Flow, error: str) -> None:
    """The SDK hands a bad authorization request back to the (registered) client with an error."""
    location = answer.headers.get("location", "")
    assert "/oauth/consent" not in location and "Approve" not in answer.text
    assert answer.status_code == 302 and stops_at(flow.redirect)(location), (answer.status_code, location)
    query = query_of(location)
    assert query["error"] == error and "code" not in query and query["state"] == flow.state


async def test_authorize_requires_s256_pkce(tmp_path: Path) -> None:
    with stack(tmp_path) as s, anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            flow = await start(http, s.base)
            missing = await http.get(with_query(flow.url, code_challenge=None, code_challenge_method=None))
            plain = await http.get(with_query(flow.url, code_challenge=flow.verifier, code_challenge_method="plain"))
            good = await http.get(flow.url)
            # At the token endpoint too: the code needs its verifier.
            code = await code_for(flow)
            form = {"grant_type": "authorization_code", "code": code, "redirect_uri": flow.redirect}
            no_verifier = await token(http, s.base, flow, **form)
            wrong_verifier = await token(http, s.base, flow, **form, code_verifier=pkce()[0])
    assert_refused_before_consent(missing, flow, "invalid_request")
    assert_refused_before_consent(plain, flow, "invalid_request")
    assert good.status_code == 302 and good.headers["location"].startswith(f"{s.base}/oauth/consent?request=")
    assert no_verifier.status_code == 400 and "access_token" not in no_verifier.text
    assert grant_error(wrong_verifier) and "access_token" not in wrong_verifier.text


async def test_authorize_refuses_a_resource_mcp_guard_does_not_serve(tmp_path: Path) -> None:
    with stack(tmp_path) as s, anyio.fail_after(TIMEOUT):
        upstream_origin = s.upstream.removesuffix("/mcp")
        foreign = ["https://other.example/mcp", s.upstream, upstream_origin, f"{s.base}/not-an-endpoint"]
        served = [s.base, f"{s.base}/", f"{s.base}/sms"]
        async with httpx2.AsyncClient(timeout=10) as http:
            flow = await start(http, s.base)
            refusals = [await http.get(with_query(flow.url, resource=r)) for r in foreign]
            accepted = [await http.get(with_query(flow.url, resource=r)) for r in served]
    for answer in refusals:
        assert_refused_before_consent(answer, flow, "invalid_request")
    for answer in accepted:
        assert answer.status_code == 302 and answer.headers["location"].startswith(f"{s.base}/oauth/consent?")
    assert s.tokens_issued_upstream() == 0


# -- 5. the consent page ---------------------------------------------------------------------------


async def test_the_consent_page_escapes_names_shows_where_the_login_goes_and_cannot_be_framed(
    tmp_path: Path,
) -> None:
    hostile = "<script>alert(1)</script>"
    redirect = f"http://127.0.0.1:{free_port()}/callback?tenant=a&next=b"
    with stack(tmp_path, auth={"redirect_schemes": ["cursor"]}) as s, anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            flow = await start(http, s.base, redirect=redirect, name=hostile)
            private = await start(http, s.base, redirect="cursor://anysphere.cursor-retrieval/oauth/callback")
        async with Browser(stop_at=stops_at(redirect)) as browser:
            page = await consent_page(browser, flow)
            cookie = page.headers.get("set-cookie", "")
        async with Browser(stop_at=stops_at(private.redirect)) as browser:
            private_page = await consent_page(browser, private)
    text = page.text
    assert hostile not in text and "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "unverified" in text
    assert f"<code>{redirect.replace('&', '&amp;')}</code>" in text  # the whole URI, escaped
    port = urlsplit(redirect).port
    assert "this computer" in text and f"(port {port})" in text  # the loopback warning
    assert "team <b>test</b>" in text and "<b>smsapi</b>" in text
    assert all(f"<li>{scope}</li>" in text for scope in ("sms", "contacts", "profile"))
    gated = next(line for line in text.splitlines() if "will still ask you before they run" in line)
    assert "send_sms" in gated
    (form,) = page.forms
    assert form.method == "POST" and form.action == f"{s.base}/oauth/consent"
    assert set(form.fields) == {"request", "csrf"} and len(form.fields["csrf"]) >= 32
    assert form.buttons == [("action", "approve"), ("action", "deny")]
    for p in (page, private_page):
        assert "frame-ancestors 'none'" in p.headers["content-security-policy"]
        assert p.headers["x-frame-options"] == "DENY" and p.headers["cache-control"] == "no-store"
    attributes = {a.strip().lower() for a in cookie.split(";")}
    assert cookie.startswith("mcpg_login=") and {"httponly", "path=/oauth", "samesite=lax"} <= attributes
    assert "<b>cursor:</b> links" in private_page.text and "this computer</b> (port" not in private_page.text


# -- 6. the confused deputy ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_a_self_registered_client_cannot_have_a_victims_browser_carry_a_code_to_it(
    tmp_path: Path, kind: str
) -> None:
    """The victim logged in before (so the upstream approves at once); the attacker registers its own
    client and gets the victim's browser to open its authorization URL."""
    attacker_redirect = loopback_redirect()
    with stack(tmp_path, kind) as s, anyio.fail_after(TIMEOUT):
        victim = Browser(stop_at=either(User().redirect_uri, attacker_redirect))
        async with victim:
            async with logged_in(s.proxy.url, Memory(), User(browser=victim)) as client:
                assert not (await client.call_tool("get_profile", {})).is_error
            before = s.tokens_issued_upstream()
            seen_before = len(victim.history)
            async with httpx2.AsyncClient(timeout=10) as http:
                left = await start(http, s.base, redirect=attacker_redirect, name="Totally Legit Client")
                denied = await start(http, s.base, redirect=attacker_redirect, name="Totally Legit Client")
            # The victim's browser opens the attacker's link: mcp-guard's consent page, not a redirect.
            page = await victim.open(left.url)
            # ... and walks away. Then the same again, and this time the victim presses "Deny".
            answer = await victim.submit(await victim.open(denied.url), "deny")
            attack = victim.history[seen_before:]
    assert page.status == 200 and page.stopped_at is None and page.forms
    assert "Totally Legit Client" in page.text and attacker_redirect in page.text
    assert answer.stopped_at is not None and stops_at(attacker_redirect)(answer.stopped_at)
    assert answer.query["error"] == "access_denied" and "code" not in answer.query
    assert answer.query["state"] == denied.state
    # Nothing of the attack reached the upstream's authorization server, and no code left mcp-guard.
    upstream_origin = s.upstream.removesuffix("/mcp")
    assert not [p.url for p in attack if p.url.startswith(upstream_origin)]
    assert not [p.location for p in attack if "code" in query_of(p.location)]
    assert s.tokens_issued_upstream() == before == 1


# -- 7. the consent form: CSRF, browser binding, one decision --------------------------------------


async def test_the_consent_form_needs_its_csrf_token_its_browser_and_decides_once(tmp_path: Path) -> None:
    with stack(tmp_path) as s, anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            flow, own = await start(http, s.base), await start(http, s.base)
        victim, other = Browser(stop_at=stops_at(flow.redirect)), Browser(stop_at=stops_at(flow.redirect))
        async with victim, other:
            page = await consent_page(victim, flow)
            form = page.forms[0]
            fields = {**form.fields, "action": "approve"}
            attempts = {
                "no csrf": await victim.http.post(form.action, data={**fields, "csrf": ""}),
                "no csrf field": await victim.http.post(
                    form.action, data={k: v for k, v in fields.items() if k != "csrf"}
                ),
                "wrong csrf": await victim.http.post(form.action, data={**fields, "csrf": secrets.token_urlsafe(32)}),
                # The right form from another browser (no cookie, then a cookie of its own).
                "other browser": await other.http.post(form.action, data=fields),
            }
            other_page = await other.open(page.url)  # the other browser opens the consent page itself
            await consent_page(other, own)  # a login of its own gives the other browser its own cookie
            other_cookie = other.cookies.get("mcpg_login")
            attempts["other cookie"] = await other.http.post(form.action, data=fields)
            approved = await victim.submit(page, "approve")
            replay = await victim.http.post(form.action, data=fields)
    for what, answer in attempts.items():
        assert answer.status_code == 403 and "location" not in answer.headers, (what, answer.status_code)
    assert other_page.status == 400 and not other_page.forms and "another browser" in other_page.text
    assert other_cookie and other_cookie != victim.cookies.get("mcpg_login")
    # Refusals did not spend the request: its own browser still approves, once.
    assert approved.stopped_at is not None and approved.query.get("code") and approved.query["state"] == flow.state
    assert replay.status_code == 400 and "location" not in replay.headers and "code" not in replay.text
    assert s.tokens_issued_upstream() == 1


# -- 8. the upstream's answer at /oauth/callback ---------------------------------------------------


async def upstream_answer(browser: Browser, flow: Flow, stack: Stack) -> str:
    """Approve and log in upstream; the upstream's redirect to mcp-guard's callback, not yet fetched."""
    done = await browser.submit(await consent_page(browser, flow), "approve")
    assert done.stopped_at is not None and stops_at(stack.callback)(done.stopped_at), done.text
    return done.stopped_at


@pytest.mark.parametrize("kind", KINDS)
async def test_the_callback_state_is_required_known_single_use_and_bound_to_the_browser(
    tmp_path: Path, kind: str
) -> None:
    with stack(tmp_path, kind) as s, anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            flows = [await start(http, s.base) for _ in range(4)]
        stop = either(s.callback, *(f.redirect for f in flows))
        victim, other = Browser(stop_at=stop), Browser(stop_at=stop)
        async with victim, other:
            answer = await upstream_answer(victim, flows[0], s)
            missing = await victim.open(with_query(answer, state=None))
            unknown = await victim.open(with_query(answer, state=secrets.token_urlsafe(32)))
            first = await victim.open(answer)
            replayed = await victim.open(answer)
            # Another browser with the victim's callback URL: first with no cookie, then with its own.
            stolen_answer = await upstream_answer(victim, flows[1], s)
            stolen = await other.open(stolen_answer)
            # ... which does not end the victim's login: its own browser still finishes it.
            own = await victim.open(stolen_answer)
            await other.open(flows[3].url)  # the other browser gets a login cookie of its own
            assert other.cookies.get("mcpg_login")
            foreign_cookie = await other.open(await upstream_answer(victim, flows[2], s))
    assert missing.status == 400 and missing.stopped_at is None
    assert unknown.status == 400 and unknown.stopped_at is None
    assert first.stopped_at is not None and first.query.get("code") and first.query["state"] == flows[0].state
    assert replayed.status == 400 and replayed.stopped_at is None
    assert stolen.status == 403 and stolen.stopped_at is None
    assert own.stopped_at is not None and own.query.get("code") and own.query["state"] == flows[1].state
    assert foreign_cookie.status == 403 and foreign_cookie.stopped_at is None
    assert s.tokens_issued_upstream() == 2  # only the good answers' upstream codes were exchanged


async def test_a_login_that_takes_longer_than_login_seconds_is_refused(tmp_path: Path) -> None:
    with stack(tmp_path, auth={"login_seconds": 1}) as s, anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            flows = [await start(http, s.base) for _ in range(2)]
        async with Browser(stop_at=either(s.callback, *(f.redirect for f in flows))) as browser:
            opened = await browser.open(flows[0].url)  # the consent page, then left open too long
            answer = await upstream_answer(browser, flows[1], s)  # back from upstream, then too long
            await anyio.sleep(1.1)  # nothing can announce that a one-second login ran out
            late_approval = await browser.submit(opened, "approve")
            late_answer = await browser.open(answer)
    assert opened.status == 200 and opened.forms
    assert late_approval.status == 400 and late_approval.stopped_at is None and "expired" in late_approval.text
    assert late_answer.status == 400 and late_answer.stopped_at is None and "expired" in late_answer.text
    assert s.tokens_issued_upstream() == 0  # the late upstream code was never exchanged


@pytest.mark.parametrize("kind", KINDS)
async def test_the_callback_refuses_an_answer_with_the_wrong_or_a_missing_iss(tmp_path: Path, kind: str) -> None:
    with stack(tmp_path, kind) as s, anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            flows = [await start(http, s.base) for _ in range(3)]
        async with Browser(stop_at=either(s.callback, *(f.redirect for f in flows))) as browser:
            answers = [await upstream_answer(browser, flow, s) for flow in flows]
            iss = query_of(answers[0])["iss"]
            wrong = await browser.open(with_query(answers[0], iss="http://evil.example"))
            mcp_guards = await browser.open(with_query(answers[1], iss=f"{s.base}/"))
            missing = await browser.open(with_query(answers[2], iss=None))
    assert iss == s.upstream.removesuffix("/mcp")  # the upstream does send it (and advertises it)
    for page in (wrong, mcp_guards, missing):
        assert page.status == 403 and page.stopped_at is None, page.text
    assert s.tokens_issued_upstream() == 0  # no code of a refused answer was exchanged


@pytest.mark.parametrize("kind", KINDS)
async def test_an_upstream_that_does_not_send_iss_still_logs_in(tmp_path: Path, kind: str) -> None:
    with stack(tmp_path, kind, "--no-iss") as s, anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            metadata = await http.get(f"{s.upstream.removesuffix('/mcp')}/.well-known/oauth-authorization-server")
            flow = await start(http, s.base)
        async with Browser(stop_at=either(s.callback, flow.redirect)) as browser:
            answer = await upstream_answer(browser, flow, s)
            done = await browser.open(answer)
        storage = Memory()
        async with logged_in(s.proxy.url, storage, User()) as client:
            result = await client.call_tool("get_profile", {})
    assert not metadata.json().get("authorization_response_iss_parameter_supported")
    assert "iss" not in query_of(answer)
    assert done.stopped_at is not None and done.query.get("code")
    assert done.query["iss"] == f"{s.base}/"  # mcp-guard itself always names itself
    assert not result.is_error
    assert s.tokens_issued_upstream() == 2 and s.calls_upstream() == 1


# -- 9. codes are single-use -----------------------------------------------------------------------


async def test_a_code_works_once_and_its_reuse_revokes_what_it_gave(tmp_path: Path) -> None:
    with stack(tmp_path) as s, anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            flow = await start(http, s.base)
            code = await code_for(flow)
            first = await exchange(http, s.base, flow, code)
            assert first.status_code == 200, first.text
            tokens = first.json()
            live = await mcp(http, f"{s.base}/", tokens["access_token"])
            second = await exchange(http, s.base, flow, code)
            after = await mcp(http, f"{s.base}/", tokens["access_token"])
            refreshed = await refresh(http, s.base, flow, tokens["refresh_token"])
            third = await exchange(http, s.base, flow, code)
    assert live.status_code == 200
    assert grant_error(second) and "access_token" not in second.text
    assert refused(after)  # the first exchange's tokens are revoked
    assert grant_error(refreshed)
    assert grant_error(third)


# -- 10. tokens are mcp-guard's own and stored hashed, encrypted ------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_tokens_are_mcp_guards_own_and_never_stored_in_clear(tmp_path: Path, kind: str) -> None:
    with stack(tmp_path, kind) as s, anyio.fail_after(TIMEOUT):
        storage = Memory()
        async with logged_in(s.proxy.url, storage, User()) as client:
            assert not (await client.call_tool("get_profile", {})).is_error
        stderr = "".join(s.proxy.lines)
    ours = storage.issued[-1]
    assert ours.access_token.startswith("mcpg_at_") and (ours.refresh_token or "").startswith("mcpg_rt_")
    calls = events(s.record, "call")
    assert len(calls) == 1 and calls[0]["token_sha256_prefix"] != prefix(ours.access_token)

    # The upstream's tokens, from the login's sealed grant (opened here with the store key).
    oauth_dir = tmp_path / "team.oauth"
    (grant_file,) = (oauth_dir / "grants").glob("*.smsapi.grant")
    principal = grant_file.name.split(".")[0]
    upstream_grant = GrantStore(grant_file, STORE_KEY.encode(), team="test", upstream=f"smsapi\x00{principal}")
    upstream_tokens = await upstream_grant.get_tokens()
    assert upstream_tokens is not None and upstream_tokens.refresh_token
    assert calls[0]["token_sha256_prefix"] == prefix(upstream_tokens.access_token)  # that is what went upstream
    assert upstream_tokens.access_token != ours.access_token and upstream_tokens.refresh_token != ours.refresh_token

    secrets_ = [ours.access_token, ours.refresh_token, upstream_tokens.access_token, upstream_tokens.refresh_token]
    hashed = [sha256(ours.access_token), sha256(ours.refresh_token or "")]
    files = [p for p in oauth_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"server.store", grant_file.name}
    for path in files:
        blob = path.read_bytes()
        for needle in [*secrets_, *hashed, "mcpg_at_", "mcpg_rt_", "access_token", principal]:
            assert needle.encode() not in blob, (path.name, needle[:12])
    # Inside the seal: digests, never the tokens themselves.
    server_store = GrantStore(oauth_dir / "server.store", STORE_KEY.encode(), team="test", upstream="\x00auth-server")
    inside = server_store.read()
    assert set(inside["access"]) == {hashed[0]} and set(inside["refresh"]) == {hashed[1]}
    assert not any(t in json.dumps(inside) for t in secrets_)
    # Nor in the audit log or on stderr.
    audit = (tmp_path / "audit.jsonl").read_text()
    for needle in secrets_:
        assert needle not in audit and needle not in stderr


# -- 11. refresh rotation and reuse ----------------------------------------------------------------


async def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_whole_login(tmp_path: Path) -> None:
    with stack(tmp_path) as s, anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            flow, old = await tokens_for(http, s)
            rotated = await refresh(http, s.base, flow, old["refresh_token"])
            assert rotated.status_code == 200, rotated.text
            new = rotated.json()
            old_access = await mcp(http, f"{s.base}/", old["access_token"])
            new_access = await mcp(http, f"{s.base}/", new["access_token"])
            reused = await refresh(http, s.base, flow, old["refresh_token"])
            new_access_after = await mcp(http, f"{s.base}/", new["access_token"])
            new_refresh_after = await refresh(http, s.base, flow, new["refresh_token"])
            # Another login of the same client is a family of its own: it lives on.
            _, bystander = await tokens_for(http, s)
            bystander_access = await mcp(http, f"{s.base}/", bystander["access_token"])
    assert new["access_token"].startswith("mcpg_at_") and new["refresh_token"].startswith("mcpg_rt_")
    assert new["access_token"] != old["access_token"] and new["refresh_token"] != old["refresh_token"]
    assert refused(old_access) and new_access.status_code == 200
    assert grant_error(reused)
    assert refused(new_access_after)
    assert grant_error(new_refresh_after)
    assert bystander_access.status_code == 200


# -- 12. only live mcp-guard tokens pass, and nothing else reaches the upstream --------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_foreign_raw_upstream_and_revoked_tokens_are_401_and_never_reach_the_upstream(
    tmp_path: Path, kind: str
) -> None:
    with stack(tmp_path, kind) as s, anyio.fail_after(TIMEOUT):
        # A token of the upstream's own authorization server, obtained as any client of it would.
        raw = UpstreamMemory()
        async with connect_upstream(s.upstream, raw, UpstreamBrowser()) as upstream_client:
            assert not (await upstream_client.call_tool("get_profile", {})).is_error  # it is a live token
        raw_token = raw.issued[-1].access_token
        async with httpx2.AsyncClient(timeout=10) as http:
            flow, ours = await tokens_for(http, s)
            _, other_login = await tokens_for(http, s)
            live = await mcp(http, f"{s.base}/", ours["access_token"])
            revoke_access = await revoke(http, s.base, flow, ours["access_token"])
            # Revoking a refresh token ends its login's access token as well.
            other_flow, third = await tokens_for(http, s)
            revoke_refresh = await revoke(http, s.base, other_flow, third["refresh_token"])
            calls_before = s.calls_upstream()
            bad = {
                "random mcpg_at_": "mcpg_at_" + secrets.token_urlsafe(32),
                "the upstream's own token": raw_token,
                "a refresh token as access token": other_login["refresh_token"],
                "revoked access token": ours["access_token"],
                "access token of a revoked refresh token": third["access_token"],
            }
            answers = {}
            for what, bearer in bad.items():
                for url in (f"{s.base}/", f"{s.base}/sms"):
                    for message in (INITIALIZE, SEND_SMS):
                        answers[(what, url, message["method"])] = await mcp(http, url, bearer, message)
            still_live = await mcp(http, f"{s.base}/", other_login["access_token"])
    assert live.status_code == 200 and still_live.status_code == 200
    assert revoke_access.status_code == 200 and revoke_refresh.status_code == 200
    for key, answer in answers.items():
        assert refused(answer), (key, answer.status_code, answer.text)
    assert s.calls_upstream() == calls_before == 1  # only the upstream client's own call


async def test_a_token_issued_for_one_endpoint_is_refused_at_another(tmp_path: Path) -> None:
    with stack(tmp_path) as s, anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            _, sms = await tokens_for(http, s, resource=f"{s.base}/sms")
            _, origin = await tokens_for(http, s, resource=f"{s.base}/")
            at_sms = await mcp(http, f"{s.base}/sms", sms["access_token"])
            at_root = await mcp(http, f"{s.base}/", sms["access_token"])
            origin_at_sms = await mcp(http, f"{s.base}/sms", origin["access_token"])
    assert at_sms.status_code == 200
    assert refused(at_root) and "another resource" in at_root.headers["www-authenticate"]
    assert origin_at_sms.status_code == 200  # a token for the whole origin is good at each endpoint
    assert s.calls_upstream() == 0


# -- 13. a wrong store key -------------------------------------------------------------------------


async def test_a_wrong_store_key_stops_start_up_with_one_plain_line(tmp_path: Path) -> None:
    with stack(tmp_path) as s, anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            assert (await register(http, s.base, loopback_redirect())).status_code == 201
        s.proxy.stop()
        store = tmp_path / "team.oauth" / "server.store"
        sealed = store.read_bytes()
        wrong_key = "w" * 48
        argv = [PY, "-m", "proxy", "serve", "--policy", str(s.policy), "--port", str(s.port)]
        try:
            done = run(argv, env={"MCP_GUARD_STORE_KEY": wrong_key}, timeout=45)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError("mcp-guard served with a store key that cannot open its store") from exc
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr[-2000:]
    assert "MCP_GUARD_STORE_KEY" in lines[0] and wrong_key not in done.stderr and STORE_KEY not in done.stderr
    assert store.read_bytes() == sealed  # the store was not rewritten under the wrong key
