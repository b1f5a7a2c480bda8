"""The HTTP face of `auth.mode: oauth`: the SDK's authorization server routes over mcp-guard's
provider, RFC 9728 metadata per endpoint path, the consent routes, and the bearer check that turns
one of mcp-guard's own tokens into an identity.

Every URL here is built from `auth.public_url`, never from the request's Host or X-Forwarded-*
headers. A token is accepted only if mcp-guard issued it, it has not expired, and it was issued
for the endpoint it is presented at (or for the whole origin); anything else is 401 before any MCP
processing, and nothing reaches an upstream.
"""

from __future__ import annotations

from mcp.server.auth.handlers.metadata import MetadataHandler
from mcp.server.auth.routes import (
    build_metadata,
    build_resource_metadata_url,
    cors_middleware,
    create_auth_routes,
    create_protected_resource_routes,
)
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from pydantic import AnyHttpUrl
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from proxy.consent import Consent
from proxy.gateway import Gateway, Identity
from proxy.oauth_server import GuardAuthProvider
from proxy.policy import LoadedPolicy

AS_METADATA = "/.well-known/oauth-authorization-server"


class OAuthFront:
    """One team's authorization server and resource-server checks."""

    def __init__(self, gateway: Gateway, loaded: LoadedPolicy) -> None:
        self.loaded = loaded
        self.team = loaded.policy.team
        self.provider = GuardAuthProvider(loaded, gateway.auth_stores[self.team])
        self.issuer = self.provider.issuer
        self.paths = ["/", *(f"/{group}" for group in gateway.groups())]
        self.provider.resources |= {self.resource(path) for path in self.paths}

    def resource(self, path: str) -> str:
        return self.issuer + ("" if path == "/" else path)

    def metadata_url(self, path: str) -> str:
        return str(build_resource_metadata_url(AnyHttpUrl(self.resource(path) + ("/" if path == "/" else ""))))

    def routes(self) -> list[BaseRoute]:
        issuer = AnyHttpUrl(self.issuer)
        scopes = list(self.loaded.policy.scopes) if self.loaded.policy.scopes is not None else None
        registration = ClientRegistrationOptions(enabled=True, valid_scopes=scopes, default_scopes=scopes)
        revocation = RevocationOptions(enabled=True)
        metadata = build_metadata(issuer, None, registration, revocation)
        metadata.authorization_response_iss_parameter_supported = True  # the consent flow always sends iss
        metadata.code_challenge_methods_supported = ["S256"]
        handler = cors_middleware(MetadataHandler(metadata).handle, ["GET", "OPTIONS"])
        routes: list[BaseRoute] = [Route(AS_METADATA, handler, methods=["GET", "OPTIONS"])]
        routes += [
            r
            for r in create_auth_routes(self.provider, issuer, None, registration, revocation)
            if getattr(r, "path", None) != AS_METADATA
        ]
        for path in self.paths:
            resource = AnyHttpUrl(self.resource(path) + ("/" if path == "/" else ""))
            routes += create_protected_resource_routes(resource, [issuer], scopes, f"mcp-guard ({self.team})")
        routes += Consent(self.loaded, self.provider).routes()
        return routes

    async def identify(self, authorization: str | None, path: str) -> Identity | str:
        """The identity a bearer token proves at `path`, or why it proves none (for the 401)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return ""
        access = await self.provider.load_access_token(token.strip())
        if access is None:
            return "the token is unknown, expired or revoked"
        if not self.provider.audience_ok(access, self.resource(path if path in self.paths else "/")):
            return "the token was issued for another resource"
        assert access.subject is not None
        return Identity(
            team=self.team,
            principal=f"oauth:{access.subject}",
            forward=None,
            grant=access.subject,
            scopes=frozenset(access.scopes),
        )

    async def unauthorized(self, scope: Scope, receive: Receive, send: Send, why: str) -> None:
        path = scope["path"] if scope["path"] in self.paths else "/"
        challenge = f'resource_metadata="{self.metadata_url(path)}"'
        if why:
            challenge = f'error="invalid_token", error_description="{why}", {challenge}'
        challenge = "Bearer " + challenge
        body = {"error": "invalid_token" if why else "unauthorized",
                "error_description": f"mcp-guard: {why or 'log in through your MCP client (OAuth)'}"}  # fmt: skip
        await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": challenge})(scope, receive, send)
