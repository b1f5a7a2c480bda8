"""Streamable HTTP serving: endpoints, identity before any MCP processing, transport security.

The MCP endpoint is served at `/` and at `/<group>` for every profile group, mirroring
mcp.smsapi.io, so a client config changes only its host.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy import __version__
from proxy.auth import KeyRing
from proxy.capacity import MAX_SESSIONS, Capacity
from proxy.fastpath import FastPath, SessionCheck
from proxy.gateway import IDENTITY_KEY, Gateway, Identity, current_identity
from proxy.oauth_http import OAuthFront
from proxy.server import build_server
from proxy.upstream import credential_key

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_BODY_BYTES = 1 * 1024 * 1024


def principal_for_bearer(authorization: str | None) -> str:
    return "anonymous" if not authorization else f"bearer:{credential_key(authorization)}"


class IdentityMiddleware:
    """Decide who the caller is before any MCP processing; refuse with 401 when that is not possible.

    passthrough: the client's Authorization header names the principal (by digest) and is
    forwarded upstream unless the policy sets its own. keys: the header must carry a proxy key
    from the keys file; it picks the team, and it is never forwarded.

    The identity is bound into the SDK's own session ownership (`scope["user"]`), so a
    handshake-era session id opened by one principal answers 404 to any other, and into the
    auth context that seals 2026-era confirmation state to its caller.
    """

    def __init__(
        self, app: ASGIApp, gateway: Gateway, keyring: KeyRing | None = None, oauth: OAuthFront | None = None
    ) -> None:
        self.app = app
        self.gateway = gateway
        self.keyring = keyring
        self.oauth = oauth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.oauth is not None:
            proven = await self.oauth.identify(headers.get("authorization") or None, scope["path"])
            if isinstance(proven, str):
                await self.oauth.unauthorized(scope, receive, send, proven)
                return
            identity: Identity | None = proven
        else:
            identity = self._identify(headers.get("authorization") or None)
        if identity is None:
            await _unauthorized(scope, receive, send, keys=self.keyring is not None)
            return
        scope[IDENTITY_KEY] = identity
        user = None
        if identity.principal != "anonymous":
            user = AuthenticatedUser(AccessToken(token=identity.principal, client_id=identity.principal, scopes=[]))
            scope["user"] = user
        token = auth_context_var.set(user)
        known = current_identity.set(identity)
        try:
            await self.app(scope, receive, send)
        finally:
            current_identity.reset(known)
            auth_context_var.reset(token)

    def _identify(self, authorization: str | None) -> Identity | None:
        if self.keyring is not None:
            key = _bearer(authorization)
            match = self.keyring.match(key) if key else None
            if match is None or match.team not in self.gateway.policies:
                return None
            return Identity(team=match.team, principal=match.principal, forward=None)
        loaded = self.gateway.policies[self.gateway.default_team]
        if authorization is None and loaded.policy.auth.required:
            return None
        return Identity(team=loaded.policy.team, principal=principal_for_bearer(authorization), forward=authorization)


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


async def _unauthorized(scope: Scope, receive: Receive, send: Send, *, keys: bool) -> None:
    needs = "a valid mcp-guard proxy key (Authorization: Bearer mcpg_...)" if keys else "an Authorization header"
    body = {"error": "unauthorized", "error_description": f"mcp-guard: this endpoint needs {needs}"}
    await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="mcp-guard"'})(
        scope, receive, send
    )


def _session_check(manager: StreamableHTTPSessionManager) -> SessionCheck:
    """The SDK manager's own rule for a handshake-era session id: open, and opened by this caller
    (its private maps; mcp is pinned to one version)."""

    def open_for(session_id: str, scope: Scope) -> bool:
        if session_id not in manager._server_instances:
            return False
        user = scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        return bool(manager._session_owners.get(session_id) == requestor)

    return open_for


def _closer(manager: StreamableHTTPSessionManager) -> Callable[[str], Awaitable[None]]:
    """Ends a handshake-era session as the manager does itself (a DELETE, its idle timeout): forgotten
    before anything awaits, so its room in the manager's table is free at once, then terminated."""

    async def close(session_id: str) -> None:
        transport = manager._server_instances.get(session_id)
        if transport is not None:
            await manager._discard_session(session_id, transport)

    return close


def _oauth_host(gateway: Gateway) -> str | None:
    auth = gateway.policies[gateway.default_team].policy.auth
    return urlsplit(auth.public_url).netloc if auth.mode == "oauth" and auth.public_url else None


def transport_security(host: str, allowed_hosts: Sequence[str]) -> TransportSecuritySettings:
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", *allowed_hosts]
    hosts += [f"{h}:*" for h in allowed_hosts if ":" not in h]
    origins = [f"http://{h}" for h in hosts] + [f"https://{h}" for h in hosts]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def build_http_app(
    gateway: Gateway,
    *,
    host: str = "127.0.0.1",
    allowed_hosts: Sequence[str] = (),
    instructions: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    keyring: KeyRing | None = None,
    max_sessions: int = MAX_SESSIONS,
) -> MCPFirst:
    server = build_server(gateway, instructions=instructions)
    oauth_origin = _oauth_host(gateway) if keyring is None else None
    # Under auth.mode oauth the public origin is, by definition, a Host clients use.
    security = transport_security(host, [*allowed_hosts, *([oauth_origin] if oauth_origin else [])])
    manager = StreamableHTTPSessionManager(app=server, security_settings=security, max_request_body_size=max_body_bytes)
    sdk = StreamableHTTPASGIApp(manager)
    fast = FastPath(sdk, gateway, server, security, max_body_bytes=max_body_bytes, session_open=_session_check(manager))
    capped = Capacity(
        fast,
        gateway,
        alive=lambda sid: sid in manager._server_instances,
        close=_closer(manager),
        max_sessions=max_sessions,
    )
    oauth = None
    if keyring is None and (loaded := gateway.policies[gateway.default_team]).policy.auth.mode == "oauth":
        oauth = OAuthFront(gateway, loaded)
    mcp_app = IdentityMiddleware(capped, gateway, keyring, oauth)

    async def healthz(request: Request) -> Response:
        # The MCP endpoint's DNS-rebinding check: a page rebound to 127.0.0.1 reads nothing here either.
        refused = await fast.security.validate_request(request, is_post=False)
        if refused is not None:
            return refused
        body: dict[str, object] = {"status": "ok", "version": __version__}  # no team names: not a caller's to see
        state_ok = await gateway.state.healthy()
        body["state"] = {"backend": gateway.state.backend, "ok": state_ok}
        if not state_ok:
            body["status"] = "degraded"  # calls that need shared state are refused until it is back
        checks = [p.pin_check for p in gateway.pipelines.values() if p.pin_check is not None]
        if checks:
            counts = [c.counts() for c in checks]
            body["pins"] = {k: sum(c[k] for c in counts) for k in ("drifted", "unpinned")}
        return Response(json.dumps(body), media_type="application/json", status_code=200 if state_ok else 503)

    mcp_paths = ["/", *(f"/{group}" for group in gateway.groups())]
    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET"])]
    routes += [Route(path, mcp_app) for path in mcp_paths]
    if oauth is not None:
        routes += oauth.routes()
    return MCPFirst(Starlette(routes=routes, lifespan=lambda app: manager.run()), mcp_app, mcp_paths)


class MCPFirst:
    """The MCP endpoints straight to `mcp`; every other request, and the lifespan, to Starlette.

    Starlette would route them to the same app (the routes above), through its error and exception
    middleware and a match against each route: a tenth of the HTTP layer's cost of a call, for
    nothing here. An exception escaping `mcp` gets uvicorn's own 500, as Starlette's would be.
    """

    def __init__(self, app: Starlette, mcp: ASGIApp, paths: Sequence[str]) -> None:
        self.app = app
        self.mcp = mcp
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths and not scope.get("root_path"):
            await self.mcp(scope, receive, send)
        else:
            await self.app(scope, receive, send)
