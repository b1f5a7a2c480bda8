"""A fake SMSAPI that is its own OAuth 2.1 authorization server, for offline tests (SDK auth routes).

One Starlette app on 127.0.0.1: RFC 8414 metadata, dynamic client registration, an /authorize
that approves at once (302 back with code, state and iss), /token (authorization_code with S256
PKCE, refresh_token), /revoke, RFC 9728 metadata for <base>/mcp and a Streamable HTTP MCP
endpoint at /mcp that wants a bearer token from this server. Tools check their scope per call.
A pre-registered client `static-client` / `static-secret` (client_secret_post) accepts any
loopback http redirect URI, so it works with any port, whether or not DCR is on.

Run: `python tests/servers/oauth_upstream.py --port 0 --record FILE [--token-lifetime SECONDS]
[--rotate-refresh] [--no-dcr] [--grant-scopes "sms contacts profile"] [--no-iss] [--omit-scope]`.
The record gets one JSON line per token issued, rotated-out refresh token presented, and tool call
(with a hash prefix of the access token, never the token).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.auth.handlers.metadata import MetadataHandler
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    OAuthAuthorizationServerProvider,
    ProviderTokenVerifier,
    RefreshToken,
    TokenError,
    TokenVerifier,
    construct_redirect_uri,
)
from mcp.server.auth.routes import (
    build_metadata,
    build_resource_metadata_url,
    cors_middleware,
    create_auth_routes,
    create_protected_resource_routes,
)
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyHttpUrl, AnyUrl, ConfigDict, TypeAdapter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import BaseRoute, Route

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from proxy.netutil import base_url, bind, run_until_signalled, serve_asgi

SUPPORTED = ["sms", "contacts", "profile", "subuser", "short_url", "hlr", "blacklist", "sms_sender"]
STATIC_ID, STATIC_SECRET = "static-client", "static-secret"
SUBJECT = "oauth-user"
CODE_LIFETIME = 300
LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")
AS_METADATA = "/.well-known/oauth-authorization-server"
# A path-less issuer must print without a trailing slash: RFC 8414/9207 compare issuers as strings.
_URL = TypeAdapter(AnyHttpUrl, config=ConfigDict(url_preserve_empty_path=True))
Ctx = ServerRequestContext[Any, Any]
# Writes one record line (a JSON object of its keyword arguments); shared with authlib_upstream.py.
Recorder = Callable[..., None]


@dataclass(frozen=True)
class Options:
    token_lifetime: int
    rotate_refresh: bool
    dcr: bool
    grant_scopes: frozenset[str]
    iss: bool
    record: Path | None
    omit_scope: bool = False  # token answers leave `scope` out (RFC 6749 §5.1: "as requested")


def recorder(path: Path | None) -> Recorder:
    def record(**event: Any) -> None:
        if path is not None:
            with path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(event) + "\n")

    return record


class LoopbackClient(OAuthClientInformationFull):
    """A pre-registered native client: any loopback http redirect URI is accepted (RFC 8252 §7.3)."""

    def validate_redirect_uri(self, redirect_uri: AnyUrl | None) -> AnyUrl:
        if redirect_uri is not None and redirect_uri.scheme == "http" and redirect_uri.host in LOOPBACK:
            return redirect_uri
        return super().validate_redirect_uri(redirect_uri)


@dataclass
class Grant:
    """One authorization: its current refresh token and its access tokens (rotated-out ones stay indexed)."""

    client_id: str
    scopes: list[str]
    resource: str
    refresh: str
    access: set[str] = field(default_factory=set)


class Provider(OAuthAuthorizationServerProvider[AuthorizationCode, RefreshToken, AccessToken]):
    """In-memory authorization server state; every approval is automatic."""

    def __init__(self, options: Options, issuer: str, resource: str) -> None:
        self.options, self.issuer, self.resource = options, issuer, resource
        self.record = recorder(options.record)
        static = LoopbackClient(
            client_id=STATIC_ID,
            client_secret=STATIC_SECRET,
            redirect_uris=[AnyUrl("http://127.0.0.1/callback")],
            token_endpoint_auth_method="client_secret_post",
            scope=" ".join(SUPPORTED),
            client_name="static loopback client",
        )
        self.clients: dict[str, OAuthClientInformationFull] = {STATIC_ID: static}
        self.codes: dict[str, AuthorizationCode] = {}
        self.grants: dict[str, Grant] = {}  # by an internal grant id
        self.refresh_index: dict[str, str] = {}  # every refresh token ever issued -> grant id
        self.access: dict[str, tuple[str, float, list[str]]] = {}  # token -> (grant id, expiry, scopes)

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        if params.resource is not None and params.resource.rstrip("/") != self.resource:
            raise AuthorizeError("invalid_target", f"this server only issues tokens for {self.resource}")
        requested = set(params.scopes) if params.scopes is not None else set(self.options.grant_scopes)
        scopes = [s for s in SUPPORTED if s in requested and s in self.options.grant_scopes]
        if not scopes:
            raise AuthorizeError("invalid_scope", "none of the requested scopes can be granted")
        code = secrets.token_urlsafe(32)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=scopes,
            expires_at=time.time() + CODE_LIFETIME,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=self.resource,
            subject=SUBJECT,
        )
        iss = self.issuer if self.options.iss else None
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state, iss=iss)

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        return self.codes.get(authorization_code)

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        if self.codes.pop(authorization_code.code, None) is None:  # single use
            raise TokenError("invalid_grant", "authorization code already used")
        grant_id = secrets.token_hex(8)
        grant = Grant(client.client_id, authorization_code.scopes, self.resource, self._new_refresh(grant_id))
        self.grants[grant_id] = grant
        self.record(event="token", grant_type="authorization_code", client_id=client.client_id)
        return self._issue(grant_id, grant, grant.scopes)

    async def load_refresh_token(self, client: OAuthClientInformationFull, refresh_token: str) -> RefreshToken | None:
        grant_id = self.refresh_index.get(refresh_token)
        grant = self.grants.get(grant_id) if grant_id is not None else None
        if grant is None:
            return None
        if refresh_token != grant.refresh:  # rotated out: a replay, so the whole grant goes
            self.record(event="refresh_reuse")
            self._revoke(grant_id)
            return None
        owner = {"client_id": grant.client_id, "scopes": grant.scopes, "resource": grant.resource}
        return RefreshToken(token=refresh_token, subject=SUBJECT, **owner)

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        grant_id = self.refresh_index.get(refresh_token.token)
        grant = self.grants.get(grant_id) if grant_id is not None else None
        if grant_id is None or grant is None or grant.refresh != refresh_token.token:
            raise TokenError("invalid_grant", "refresh token is no longer valid")
        if self.options.rotate_refresh:
            grant.refresh = self._new_refresh(grant_id)
        self.record(event="token", grant_type="refresh_token", client_id=client.client_id)
        return self._issue(grant_id, grant, scopes)

    async def load_access_token(self, token: str) -> AccessToken | None:
        entry = self.access.get(token)
        if entry is None or entry[0] not in self.grants:
            return None
        grant_id, expiry, scopes = entry
        if time.time() >= expiry:
            return None
        return AccessToken(
            token=token,
            client_id=self.grants[grant_id].client_id,
            scopes=scopes,
            expires_at=int(expiry) + 1,
            resource=self.resource,
            subject=SUBJECT,
            claims={"iss": self.issuer},
        )

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        entry = self.access.get(token.token)
        self._revoke(entry[0] if entry is not None else self.refresh_index.get(token.token))

    def _new_refresh(self, grant_id: str) -> str:
        token = secrets.token_urlsafe(32)
        self.refresh_index[token] = grant_id
        return token

    def _issue(self, grant_id: str, grant: Grant, scopes: list[str]) -> OAuthToken:
        token = secrets.token_urlsafe(32)
        self.access[token] = (grant_id, time.time() + self.options.token_lifetime, scopes)
        grant.access.add(token)
        lifetime, refresh = self.options.token_lifetime, grant.refresh
        scope = None if self.options.omit_scope else " ".join(scopes)
        return OAuthToken(access_token=token, expires_in=lifetime, scope=scope, refresh_token=refresh)

    def _revoke(self, grant_id: str | None) -> None:
        grant = self.grants.pop(grant_id, None) if grant_id is not None else None
        if grant is not None:
            for token in grant.access:
                self.access.pop(token, None)


CONTACTS = [
    {"id": "c1", "first_name": "Anna", "last_name": "Nowak", "phone_number": "48500100200"},
    {"id": "c2", "first_name": "Piotr", "last_name": "Kowalski", "phone_number": "48600200300"},
]
TOOL_SCOPE = {"get_profile": "profile", "get_contacts": "contacts", "send_sms": "sms"}


def _tool(name: str, description: str, properties: dict[str, Any], **hints: bool) -> types.Tool:
    schema = {"type": "object", "properties": properties, "required": sorted(properties)}
    description = f"{description} (scope: {TOOL_SCOPE[name]})"
    hinted = types.ToolAnnotations(**hints)
    return types.Tool(name=name, description=description, input_schema=schema, annotations=hinted)


TOOLS = [
    _tool("get_profile", "Account profile and points balance", {}, read_only_hint=True),
    _tool("get_contacts", "List contacts", {}, read_only_hint=True),
    _tool("send_sms", "Send an SMS", {"to": {"type": "string"}, "message": {"type": "string"}}, destructive_hint=True),
]


def build_server(record: Recorder) -> Server[Any]:
    def answer(body: Any, error: bool = False) -> types.CallToolResult:
        text = body if isinstance(body, str) else json.dumps(body)
        return types.CallToolResult(content=[types.TextContent(text=text)], is_error=error)

    async def on_list_tools(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=TOOLS)

    async def on_call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        # The HTTP request that carried this call (both eras): its bearer token, not the session's first one.
        user = ctx.request.scope.get("user") if ctx.request is not None else None
        if not isinstance(user, AuthenticatedUser):
            return answer("unauthenticated", error=True)
        token = user.access_token.token
        record(event="call", tool=params.name, token_sha256_prefix=hashlib.sha256(token.encode()).hexdigest()[:12])
        needed = TOOL_SCOPE.get(params.name)
        if needed is None:
            return answer(f"unknown tool: {params.name}", error=True)
        if needed not in user.access_token.scopes:
            return answer(f"insufficient scope: {params.name} requires '{needed}'", error=True)
        args = params.arguments or {}
        if params.name == "get_profile":
            return answer({"username": SUBJECT, "points": 100})
        if params.name == "get_contacts":
            return answer({"size": len(CONTACTS), "collection": CONTACTS})
        to, message = args.get("to"), args.get("message")
        if not isinstance(to, str) or not isinstance(message, str) or not to or not message:
            return answer("send_sms requires string arguments 'to' and 'message'", error=True)
        sent = {"id": secrets.token_hex(12), "number": to, "points": 0.16, "status": "QUEUE"}
        return answer({"count": 1, "list": [sent]})

    return Server("smsapi-oauth-fake", version="0.1.0", on_list_tools=on_list_tools, on_call_tool=on_call_tool)


def build_app(options: Options, base: str) -> Starlette:
    issuer, resource = _URL.validate_python(base), _URL.validate_python(f"{base}/mcp")
    provider = Provider(options, str(issuer), str(resource))
    registration = ClientRegistrationOptions(enabled=options.dcr, valid_scopes=SUPPORTED, default_scopes=SUPPORTED)
    revocation = RevocationOptions(enabled=True)
    # The SDK's metadata never says it sends `iss`; ours does (RFC 9207 §3), unless --no-iss.
    metadata = build_metadata(issuer, None, registration, revocation)
    metadata.authorization_response_iss_parameter_supported = True if options.iss else None
    routes: list[BaseRoute] = [
        Route(
            AS_METADATA,
            cors_middleware(MetadataHandler(metadata).handle, ["GET", "OPTIONS"]),
            methods=["GET", "OPTIONS"],
        ),
        *(r for r in create_auth_routes(provider, issuer, None, registration, revocation) if r.path != AS_METADATA),
    ]
    return resource_app(routes, ProviderTokenVerifier(provider), provider.record, base)


def resource_app(routes: list[BaseRoute], verifier: TokenVerifier, record: Recorder, base: str) -> Starlette:
    """The authorization server's `routes` plus the resource server: RFC 9728 metadata and /mcp behind a bearer check.

    Shared with authlib_upstream.py, whose authorization server is another library's: only `verifier`
    needs to know where tokens live.
    """
    issuer, resource = _URL.validate_python(base), _URL.validate_python(f"{base}/mcp")
    routes = [*routes, *create_protected_resource_routes(resource, [issuer], SUPPORTED, "SMSAPI (fake, OAuth)")]
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = [f"http://{host}" for host in hosts]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )
    manager = StreamableHTTPSessionManager(app=build_server(record), security_settings=security)
    mcp = RequireAuthMiddleware(StreamableHTTPASGIApp(manager), [], build_resource_metadata_url(resource))
    routes.append(Route("/mcp", endpoint=mcp))
    backend = BearerAuthBackend(verifier, resource_server_url=resource)
    middleware = [Middleware(AuthenticationMiddleware, backend=backend), Middleware(AuthContextMiddleware)]
    return Starlette(routes=routes, middleware=middleware, lifespan=lambda app: manager.run())


def parse(argv: list[str] | None = None, description: str = __doc__.splitlines()[0]) -> tuple[int, Options]:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", type=Path, default=None)
    parser.add_argument("--token-lifetime", type=int, default=3600, metavar="SECONDS")
    parser.add_argument("--rotate-refresh", action="store_true")
    parser.add_argument("--no-dcr", action="store_true")
    parser.add_argument("--grant-scopes", default="sms contacts profile")
    parser.add_argument("--no-iss", action="store_true")
    parser.add_argument("--omit-scope", action="store_true")
    args = parser.parse_args(argv)
    grant = frozenset(args.grant_scopes.split())
    if not grant <= set(SUPPORTED):
        parser.error(f"--grant-scopes: unknown scopes {sorted(grant - set(SUPPORTED))}")
    if args.token_lifetime < 1:
        parser.error("--token-lifetime must be at least 1")
    options = Options(
        args.token_lifetime, args.rotate_refresh, not args.no_dcr, grant, not args.no_iss, args.record, args.omit_scope
    )
    return args.port, options


def run(build: Callable[[Options, str], Starlette], label: str, description: str) -> int:
    """Parse the command line, bind 127.0.0.1 and serve `build(options, base_url)` until signalled."""
    port, options = parse(description=description)
    sock = bind("127.0.0.1", port)
    app = build(options, base_url(sock))
    announce = f"{label} listening on {{}}/mcp".format
    return run_until_signalled(lambda: serve_asgi(app, sock, announce=announce), label)


def main() -> int:
    return run(build_app, "oauth-upstream", __doc__.splitlines()[0])


if __name__ == "__main__":
    raise SystemExit(main())
