"""mcp-guard as the authorization server its clients log in to (SPEC §13, `auth.mode: oauth`).

The SDK's `mcp.server.auth` handlers speak the protocol (metadata, registration, /authorize,
/token, /revoke); this provider decides. What it issues is its own: opaque tokens, stored only as
sha256 digests, never the upstream's. A login is approved on mcp-guard's consent page and then
federated to the upstream's authorization server (proxy.consent); its upstream grant is kept per
principal (proxy.grants) and used only by mcp-guard. Refresh tokens rotate; a refresh token
presented twice revokes every token of its login (reuse detection, OAuth 2.1 §4.3.1).

Registered clients and token digests live in one encrypted file (the grant store's sealing), so a
restart keeps them. Authorization requests awaiting consent, and codes, live in memory for minutes.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    RefreshToken,
    RegistrationError,
    TokenError,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyHttpUrl

from proxy.expiring import Expiring
from proxy.grants import KEY_ENV, GrantError, GrantStore
from proxy.policy import LoadedPolicy

logger = logging.getLogger(__name__)

CODE_SECONDS = 300
MAX_PENDING = 1000  # requests awaiting consent: the oldest is dropped past this
MAX_CLIENTS = 10000  # registrations are open to anyone: the store must not grow without bound
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Pending:
    """An authorization request on its way through consent and the upstream login."""

    client: OAuthClientInformationFull
    params: AuthorizationParams
    scopes: list[str]
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    browser: str | None = None  # digest of the cookie of the browser that opened the consent page
    # Set once approved: the upstream login's PKCE verifier.
    verifier: str | None = None


class AuthStore:
    """Registered clients and token digests, sealed in one file; each login's upstream grant beside it."""

    def __init__(self, loaded: LoadedPolicy, key: bytes) -> None:
        self.dir = loaded.oauth_dir
        self._key = key
        self._team = loaded.policy.team
        self._file = GrantStore(self.dir / "server.store", key, team=self._team, upstream="\x00auth-server")
        try:
            data = self._file.read()
        except GrantError:
            raise GrantError(
                f"cannot open the login store {self.dir / 'server.store'}: wrong {KEY_ENV} (or --store-key-file), "
                "or a damaged file; with the right key it opens again (deleting the directory logs every client out)"
            ) from None
        self.clients: dict[str, dict[str, Any]] = data.get("clients", {})
        self.access: dict[str, dict[str, Any]] = data.get("access", {})
        self.refresh: dict[str, dict[str, Any]] = data.get("refresh", {})
        self.upstream_client: dict[str, Any] | None = data.get("upstream_client")

    def save(self) -> None:
        now = time.time()
        self.access = {k: v for k, v in self.access.items() if v["expires_at"] > now}
        self.refresh = {k: v for k, v in self.refresh.items() if v["expires_at"] > now}
        self._file.update(
            clients=self.clients, access=self.access, refresh=self.refresh, upstream_client=self.upstream_client
        )

    def grant(self, server: str, principal: str) -> GrantStore:
        """The upstream grant of one login, sealed to this team, upstream and principal."""
        if not principal.isalnum():
            raise ValueError("not a principal id")
        path = self.dir / "grants" / f"{principal}.{server}.grant"
        return GrantStore(path, self._key, team=self._team, upstream=f"{server}\x00{principal}")

    def revoke_principal(self, principal: str) -> None:
        """Every token of one login (its upstream grant is gone: the client must log in again)."""
        self.access = {k: v for k, v in self.access.items() if v["principal"] != principal}
        self.refresh = {k: v for k, v in self.refresh.items() if v["principal"] != principal}
        self.save()

    def revoke_family(self, family: str) -> None:
        self.access = {k: v for k, v in self.access.items() if v["family"] != family}
        self.refresh = {k: v for k, v in self.refresh.items() if v["family"] != family}
        self.save()


class GuardAuthProvider:
    """The SDK's `OAuthAuthorizationServerProvider` for mcp-guard's own logins."""

    def __init__(self, loaded: LoadedPolicy, store: AuthStore) -> None:
        auth = loaded.policy.auth
        self.issuer = auth.issuer  # the origin, no trailing slash: URLs are built from it
        # The issuer exactly as the metadata states it (RFC 8414), which `iss` must equal (RFC 9207).
        self.issuer_id = str(AnyHttpUrl(self.issuer))
        self.team = loaded.policy.team
        # None: the policy sets no scopes, so a login may ask for any the upstream grants.
        self.team_scopes = list(loaded.policy.scopes) if loaded.policy.scopes is not None else None
        self.redirect_schemes = frozenset(auth.redirect_schemes)
        self.access_seconds = auth.access_token_seconds
        self.refresh_seconds = auth.refresh_token_days * 86400
        self.login_seconds = auth.login_seconds
        self.store = store
        self.pending: Expiring[Pending] = Expiring(auth.login_seconds, MAX_PENDING)
        self.codes: dict[str, AuthorizationCode] = {}
        self._code_family: dict[str, str] = {}  # a used code's digest -> the tokens it gave (reuse revokes them)
        self.resources: set[str] = {self.issuer}

    # -- clients ---------------------------------------------------------------------------------

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        raw = self.store.clients.get(client_id)
        return OAuthClientInformationFull.model_validate(raw) if raw is not None else None

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        for uri in client_info.redirect_uris or []:
            if (why := self.redirect_problem(str(uri))) is not None:
                raise RegistrationError(error="invalid_redirect_uri", error_description=why)
        assert client_info.client_id is not None
        if len(self.store.clients) >= MAX_CLIENTS:
            logger.warning("client registration refused: %d clients are registered already", MAX_CLIENTS)
            raise RegistrationError(error="invalid_client_metadata", error_description="too many registered clients")
        self.store.clients[client_info.client_id] = client_info.model_dump(mode="json", exclude_none=True)
        self.store.save()
        logger.info("registered OAuth client %s", client_info.client_id)

    def redirect_problem(self, uri: str) -> str | None:
        """Why a client may not register `uri`, or None: loopback http on any port, https, or a
        private-use scheme the policy lists."""
        parts = urlsplit(uri)
        if parts.fragment:
            return "a redirect URI must not have a fragment"
        if parts.username is not None or parts.password is not None:
            # `https://claude.ai@evil.example/cb` goes to evil.example but reads as claude.ai on the
            # consent page, where the user decides by it; no redirect needs userinfo.
            return "a redirect URI must not carry a user name or password"
        if parts.scheme == "http":
            return None if parts.hostname in LOOPBACK_HOSTS else "plain http redirect URIs must be loopback"
        if parts.scheme == "https":
            return None if parts.hostname else "an https redirect URI needs a host"
        if parts.scheme in self.redirect_schemes:
            return None
        return f"redirect URI scheme '{parts.scheme}' is not allowed (auth.redirect_schemes lists private schemes)"

    # -- authorization ---------------------------------------------------------------------------

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        if params.resource is not None and _norm(params.resource) not in self.resources:
            raise AuthorizeError(
                error="invalid_request", error_description="the resource is not served by this authorization server"
            )
        requested = params.scopes or self.team_scopes or []
        refused = [s for s in requested if self.team_scopes is not None and s not in self.team_scopes]
        if refused:
            raise AuthorizeError(error="invalid_scope", error_description=f"scopes not granted to this team: {refused}")
        request = secrets.token_urlsafe(24)
        self.pending.put(request, Pending(client=client, params=params, scopes=list(requested)))
        return f"{self.issuer}/oauth/consent?request={request}"

    def take_pending(self, request: str) -> Pending | None:
        return self.pending.get(request)

    def issue_code(self, pending: Pending, principal: str, scopes: list[str]) -> str:
        code = secrets.token_urlsafe(32)
        self.codes[digest(code)] = AuthorizationCode(
            code=code,
            scopes=scopes,
            expires_at=time.time() + CODE_SECONDS,
            client_id=pending.client.client_id or "",
            code_challenge=pending.params.code_challenge,
            redirect_uri=pending.params.redirect_uri,
            redirect_uri_provided_explicitly=pending.params.redirect_uri_provided_explicitly,
            resource=pending.params.resource,
            subject=principal,
        )
        return code

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        key = digest(authorization_code)
        family = self._code_family.pop(key, None)
        if family is not None:
            # A code presented again: whoever has it now may not be its client; what it gave is revoked.
            logger.warning("an authorization code was presented twice; the tokens it gave are revoked")
            self.store.revoke_family(family)
            return None
        code = self.codes.get(key)
        if code is None or code.client_id != client.client_id:
            return None
        return code

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        key = digest(authorization_code.code)
        if self.codes.pop(key, None) is None:
            raise TokenError(error="invalid_grant", error_description="authorization code already used")
        assert authorization_code.subject is not None
        family = secrets.token_hex(16)
        self._code_family[key] = family
        if len(self._code_family) > MAX_PENDING:
            self._code_family.pop(next(iter(self._code_family)))
        return self._issue(client, authorization_code.subject, authorization_code.scopes, authorization_code.resource,
                           family)  # fmt: skip

    # -- tokens ----------------------------------------------------------------------------------

    def _issue(
        self, client: OAuthClientInformationFull, principal: str, scopes: list[str], resource: str | None, family: str
    ) -> OAuthToken:
        now = time.time()
        access, refresh = "mcpg_at_" + secrets.token_urlsafe(32), "mcpg_rt_" + secrets.token_urlsafe(32)
        common = {"client_id": client.client_id, "principal": principal, "scopes": scopes, "resource": resource,
                  "family": family}  # fmt: skip
        self.store.access[digest(access)] = {**common, "expires_at": now + self.access_seconds}
        self.store.refresh[digest(refresh)] = {**common, "expires_at": now + self.refresh_seconds, "used": False}
        self.store.save()
        return OAuthToken(
            access_token=access,
            token_type="Bearer",  # noqa: S106 (a token type, not a password)
            expires_in=self.access_seconds,
            scope=" ".join(scopes),
            refresh_token=refresh,
        )

    async def load_refresh_token(self, client: OAuthClientInformationFull, refresh_token: str) -> RefreshToken | None:
        record = self.store.refresh.get(digest(refresh_token))
        if record is None or record["client_id"] != client.client_id or record["expires_at"] <= time.time():
            return None
        if record["used"]:
            # Rotated out and presented again: one of the two presenters stole it. Every token of
            # this login goes; the client logs in again.
            logger.warning("a rotated-out refresh token was presented again; the login's tokens are revoked")
            self.store.revoke_family(record["family"])
            return None
        return RefreshToken(
            token=refresh_token,
            client_id=record["client_id"],
            scopes=record["scopes"],
            expires_at=int(record["expires_at"]),
            resource=record["resource"],
            subject=record["principal"],
        )

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        record = self.store.refresh.get(digest(refresh_token.token))
        if record is None or record["used"]:
            raise TokenError(error="invalid_grant", error_description="refresh token already used")
        record["used"] = True
        # Its access tokens end with it: only the newest pair of a login is live.
        family = record["family"]
        self.store.access = {k: v for k, v in self.store.access.items() if v["family"] != family}
        assert refresh_token.subject is not None
        return self._issue(client, refresh_token.subject, scopes, refresh_token.resource, family)

    async def load_access_token(self, token: str) -> AccessToken | None:
        record = self.store.access.get(digest(token))
        if record is None or record["expires_at"] <= time.time():
            return None
        return AccessToken(
            token=token,
            client_id=record["client_id"],
            scopes=record["scopes"],
            expires_at=int(record["expires_at"]),
            resource=record["resource"],
            subject=record["principal"],
        )

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        records = self.store.access if isinstance(token, AccessToken) else self.store.refresh
        record = records.get(digest(token.token))
        if record is not None:
            self.store.revoke_family(record["family"])

    async def exchange_identity_assertion(self, client: OAuthClientInformationFull, params: Any) -> OAuthToken:
        raise TokenError(error="unsupported_grant_type", error_description="not supported")

    def audience_ok(self, token: AccessToken, resource: str) -> bool:
        """A token is good at the endpoint it was issued for, or anywhere here when issued for the origin."""
        return token.resource is None or _norm(token.resource) in (self.issuer, _norm(resource))


def _norm(url: str) -> str:
    return url.rstrip("/")
