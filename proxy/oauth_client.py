"""mcp-guard as an OAuth client of its upstreams (SPEC §13, step 1).

`mcp-guard login` runs the authorization code flow with PKCE (S256) through the SDK's
`OAuthClientProvider`: the authorization server is discovered from the upstream (401 →
RFC 9728 → RFC 8414), the client registers itself when the policy names none, the user logs in
in the system browser, and a loopback listener takes the code back. The grant is saved
encrypted (proxy.grants). `serve` and `stdio` then authorise every upstream request with it and
refresh it when it expires; they never start an interactive login, and a client's own
Authorization header is never passed to such an upstream.
"""

from __future__ import annotations

import logging
import sys
import webbrowser
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata
from pydantic import AnyUrl

from proxy import __version__
from proxy.grants import GrantError, GrantStore
from proxy.policy import LoadedPolicy
from proxy.upstream_transport import capping_hook

logger = logging.getLogger(__name__)

CALLBACK_PATH = "/callback"
LOGIN_TIMEOUT = 300.0  # seconds for the human to finish logging in


class NeedsLogin(Exception):
    """The upstream wants a fresh login, which only `mcp-guard login` may start."""


class LoginNeeded(httpx2.RequestError):
    """The request was not sent: the grant cannot authorise it any more (an HTTP error to the
    transports, so the call fails like any connection failure, in these words)."""


def oauth_servers(loaded: LoadedPolicy) -> list[str]:
    return [name for name, spec in loaded.policy.upstreams.items() if spec.oauth is not None]


def _scopes(loaded: LoadedPolicy, server: str) -> str | None:
    oauth = loaded.policy.upstreams[server].oauth
    scopes = (oauth.scopes if oauth is not None else None) or loaded.policy.scopes
    return " ".join(scopes) if scopes else None


def client_metadata(loaded: LoadedPolicy, server: str, redirect_uri: str) -> OAuthClientMetadata:
    """How mcp-guard describes itself to an upstream's authorization server, for every way it logs in."""
    oauth = loaded.policy.upstreams[server].oauth
    confidential = oauth is not None and oauth.client_secret is not None
    return OAuthClientMetadata(
        client_name=f"mcp-guard ({loaded.policy.team})",
        redirect_uris=[AnyUrl(redirect_uri)],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="client_secret_post" if confidential else "none",
        scope=_scopes(loaded, server),
        software_id="mcp-guard",
        software_version=__version__,
    )


async def _seed_static_client(store: GrantStore, loaded: LoadedPolicy, server: str, redirect_uri: str) -> None:
    """A client the policy names is stored as if registered, so the SDK uses it instead of DCR."""
    oauth = loaded.policy.upstreams[server].oauth
    if oauth is None or oauth.client_id is None:
        return
    current = await store.get_client_info()
    if current is not None and current.client_id == oauth.client_id:
        return
    base = client_metadata(loaded, server, redirect_uri).model_dump(exclude_none=True)
    await store.set_client_info(
        OAuthClientInformationFull(**base, client_id=oauth.client_id, client_secret=oauth.client_secret)
    )


class _GrantProvider(OAuthClientProvider):
    """The SDK's provider, told when a stored token expires: the SDK keeps that only in memory, so a
    token loaded at start would look valid until the upstream refused it."""

    def __init__(self, store: GrantStore, **kwargs: Any) -> None:
        super().__init__(storage=store, **kwargs)
        self._store = store

    async def _initialize(self) -> None:
        await super()._initialize()
        self.context.token_expiry_time = self._store.expires_at()


def _provider(
    loaded: LoadedPolicy, server: str, store: GrantStore, redirect_uri: str, redirect: object, callback: object
) -> OAuthClientProvider:
    spec = loaded.policy.upstreams[server]
    assert spec.url is not None and spec.oauth is not None
    return _GrantProvider(
        store,
        server_url=spec.url,
        client_metadata=client_metadata(loaded, server, redirect_uri),
        redirect_handler=redirect,  # type: ignore[arg-type]
        callback_handler=callback,  # type: ignore[arg-type]
        client_metadata_url=spec.oauth.client_metadata_url,
    )


class GrantAuth(httpx2.Auth):
    """Authorises upstream requests with the stored grant.

    The SDK's provider holds one lock for a request's whole exchange, which would let only one
    upstream request be in flight at a time. Here a request with a valid token goes out at once
    with it; only a missing or expired token, or a 401, takes the provider's locked flow, so
    twenty calls that meet an expired token cause one refresh, not twenty.
    """

    requires_response_body = True

    def __init__(self, provider: OAuthClientProvider, on_login_needed: Callable[[], None] | None = None) -> None:
        self.provider = provider
        self.on_login_needed = on_login_needed
        self.needs_login: str | None = None  # set while the grant cannot be used: what to tell the caller

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        context = self.provider.context
        if self.provider._initialized and context.current_tokens is not None and context.is_token_valid():
            used = context.current_tokens.access_token
            request.headers["Authorization"] = f"Bearer {used}"
            response = yield request
            if response.status_code != 401:
                self.needs_login = None
                return
            request.headers.pop("Authorization", None)
            current = context.current_tokens
            if current is not None and current.access_token == used:
                # Refused before its known expiry (revoked, or clocks apart): refresh before a new login.
                # Only if no other request has refreshed it meanwhile: one refresh, not one per request.
                context.token_expiry_time = 1.0  # long past (0 would read as "no expiry")
        flow = self.provider.async_auth_flow(request)
        try:
            outgoing = await flow.__anext__()
            while True:
                response = yield outgoing
                try:
                    outgoing = await flow.asend(response)
                except StopAsyncIteration:
                    return
        except NeedsLogin as exc:
            # Only a person can log in again. The request is not sent (never without the grant), the
            # call fails saying so, and whoever must log in is told.
            logger.warning("%s", exc)
            self.needs_login = str(exc)
            if self.on_login_needed is not None:
                self.on_login_needed()
            raise LoginNeeded(str(exc), request=request) from None


def upstream_auth(
    loaded: LoadedPolicy,
    server: str,
    store: GrantStore,
    relogin: str | None = None,
    on_login_needed: Callable[[], None] | None = None,
) -> GrantAuth:
    """The auth `serve`/`stdio` attach to an OAuth upstream: the grant, refreshed; never a new login.
    `relogin` says how to log in again (default: `mcp-guard login`; a client's own login under
    auth.mode oauth says so instead)."""
    again = relogin or f"run `mcp-guard login --policy {loaded.path}`"
    if relogin is None and not store.exists():
        raise GrantError(f"upstream '{server}' uses OAuth and there is no grant yet: {again}")

    async def no_login(url: str) -> None:
        raise NeedsLogin(f"upstream '{server}' needs a new login (the grant expired or was revoked): {again}")

    async def no_callback() -> AuthorizationCodeResult:
        raise NeedsLogin(f"upstream '{server}' needs a new login: {again}")

    provider = _provider(loaded, server, store, "http://127.0.0.1/callback", no_login, no_callback)
    return GrantAuth(provider, on_login_needed)


def grant_store(loaded: LoadedPolicy, server: str, key: bytes) -> GrantStore:
    return GrantStore(loaded.grant_path(server), key, team=loaded.policy.team, upstream=server)


def with_grants(loaded: LoadedPolicy, key: bytes | None) -> LoadedPolicy:
    """The policy as its grants allow: every OAuth upstream must have a readable grant, and the
    team's scopes shrink to what the upstream granted (a tool needing a scope not granted is
    hidden and refused like any other missing scope)."""
    # Under auth.mode oauth each client login brings its own grant of the federated upstream; a team
    # grant (`mcp-guard login`) is then optional and used only for start-up checks and `pin`.
    federated = loaded.policy.federated_upstream if loaded.policy.auth.mode == "oauth" else None
    servers = [s for s in oauth_servers(loaded) if s != federated]
    if key is None and federated is not None:
        raise GrantError("auth.mode oauth keeps each login's upstream grant encrypted and needs MCP_GUARD_STORE_KEY")
    if not servers:
        return loaded
    if key is None:
        raise GrantError("this policy logs in to an upstream with OAuth and needs MCP_GUARD_STORE_KEY")
    scopes = set(loaded.policy.scopes) if loaded.policy.scopes is not None else None
    for server in servers:
        store = grant_store(loaded, server, key)
        if not store.exists():
            raise GrantError(
                f"upstream '{server}' uses OAuth and has no grant yet: run `mcp-guard login --policy {loaded.path}`"
            )
        granted = store.granted_scopes()
        if granted is not None:
            scopes = granted if scopes is None else scopes & granted
    if scopes is None:
        return loaded
    ordered = tuple(sorted(scopes))
    return replace(loaded, policy=loaded.policy.model_copy(update={"scopes": ordered}))


# -- mcp-guard login ---------------------------------------------------------------------------------


async def login(
    loaded: LoadedPolicy, server: str, store: GrantStore, *, browser: bool = True, out: TextIO = sys.stderr
) -> set[str]:
    """Log in to one upstream, store the grant, and answer the scopes it granted."""
    spec = loaded.policy.upstreams[server]
    assert spec.url is not None
    answered: list[AuthorizationCodeResult] = []
    done = anyio.Event()
    async with await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0) as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 (anyio, not Django)
        redirect_uri = f"http://127.0.0.1:{port}{CALLBACK_PATH}"
        await _seed_static_client(store, loaded, server, redirect_uri)

        async def redirect(url: str) -> None:
            print(f"mcp-guard: log in to '{server}' in your browser; if it did not open, visit:\n  {url}", file=out)
            if browser:
                webbrowser.open(url)

        async def callback() -> AuthorizationCodeResult:
            with anyio.fail_after(LOGIN_TIMEOUT):
                await done.wait()
            return answered[0]

        async def serve_callback(stream: anyio.abc.SocketStream) -> None:
            async with stream:
                head = await _read_head(stream)
                result = _callback_result(head)
                ok = result is not None and not done.is_set()
                text = "Logged in. You can close this window." if ok else "Not an mcp-guard login callback."
                body = f"<!doctype html><title>mcp-guard</title><p>{text}</p>".encode()
                status = b"200 OK" if ok else b"400 Bad Request"
                await stream.send(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store"
                    b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
                )
                if ok and result is not None:
                    answered.append(result)
                    done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, serve_callback)
            auth = _provider(loaded, server, store, redirect_uri, redirect, callback)
            # The upstream and its authorization server are read under the upstream's cap, as `serve` reads them.
            hooks = {"response": [capping_hook(spec.max_result_bytes)]}
            async with httpx2.AsyncClient(auth=auth, timeout=30, headers=dict(spec.headers), event_hooks=hooks) as http:
                async with Client(streamable_http_client(spec.url, http_client=http), mode="legacy") as client:
                    await client.list_tools()
            tg.cancel_scope.cancel()
    return store.granted_scopes() or set()


async def _read_head(stream: anyio.abc.SocketStream, limit: int = 16 * 1024) -> bytes:
    data = b""
    with anyio.move_on_after(10):
        while b"\r\n\r\n" not in data and len(data) < limit:
            chunk = await stream.receive()
            if not chunk:
                break
            data += chunk
    return data


def _callback_result(head: bytes) -> AuthorizationCodeResult | None:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or parts[0] != "GET":
        return None
    target = urlsplit(parts[1])
    if target.path != CALLBACK_PATH:
        return None
    query = {k: v[0] for k, v in parse_qs(target.query).items()}
    if "code" not in query and "error" not in query:
        return None
    return AuthorizationCodeResult(code=query.get("code", ""), state=query.get("state"), iss=query.get("iss"))
