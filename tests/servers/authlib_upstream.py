"""A fake SMSAPI whose OAuth 2.1 authorization server is authlib's, for offline tests.

The twin of oauth_upstream.py: same command line, endpoints, behaviour and record lines, so tests
can run against both and the mcp SDK is not on both sides of every OAuth exchange. The
authorization server is authlib's framework-agnostic core (RFC 6749 `AuthorizationServer` with
the authorization code grant and S256 PKCE, refresh tokens, RFC 7591 registration, RFC 7009
revocation, RFC 9207 `iss`), bridged here to Starlette: each request's body is read first, then
handed to authlib's synchronous core as its own request object. The resource server (/mcp, its
RFC 9728 metadata, the tools and their per-call scope checks) is oauth_upstream.py's, with a
token verifier that reads this server's in-memory token store.

Run: `python tests/servers/authlib_upstream.py --port 0 --record FILE [--token-lifetime SECONDS]
[--rotate-refresh] [--no-dcr] [--grant-scopes "sms contacts profile"] [--no-iss]`.
"""

from __future__ import annotations

import hmac
import json
import secrets
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from authlib.oauth2 import rfc8414, rfc9207
from authlib.oauth2.base import OAuth2Error
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeGrant,
    AuthorizationServer,
    ClientMixin,
    InvalidRequestError,
    InvalidScopeError,
    JsonPayload,
    JsonRequest,
    OAuth2Payload,
    OAuth2Request,
    RefreshTokenGrant,
    scope_to_list,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7591 import ClientMetadataClaims, ClientRegistrationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from joserfc.errors import InvalidClaimError
from mcp.server.auth.provider import AccessToken
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.servers.oauth_upstream import (
    AS_METADATA,
    CODE_LIFETIME,
    LOOPBACK,
    STATIC_ID,
    STATIC_SECRET,
    SUBJECT,
    SUPPORTED,
    Options,
    Recorder,
    recorder,
    resource_app,
    run,
)

AUTH_METHODS = ["client_secret_post", "client_secret_basic", "none"]
# What oauth_upstream.py (the SDK) assumes when a registration names no method; RFC 7591 says basic.
DEFAULT_AUTH_METHOD = "client_secret_post"
GRANT_TYPES = ["authorization_code", "refresh_token"]


def _token(**_: Any) -> str:
    return secrets.token_urlsafe(32)


def _ordered(scopes: Iterable[str]) -> str:
    wanted = set(scopes)
    return " ".join(s for s in SUPPORTED if s in wanted)


class InvalidTargetError(OAuth2Error):
    error = "invalid_target"  # RFC 8707 §2


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str | None
    redirect_uris: list[str]
    auth_method: str
    scopes: list[str]
    grant_types: list[str] = field(default_factory=lambda: list(GRANT_TYPES))
    response_types: list[str] = field(default_factory=lambda: ["code"])
    any_loopback: bool = False  # a native client: any loopback http redirect URI will do (RFC 8252 §7.3)

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        if scope is None:
            return _ordered(self.scopes)
        requested = scope_to_list(scope)
        return _ordered(requested) if set(requested) <= set(self.scopes) else None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        if redirect_uri in self.redirect_uris:
            return True
        parts = urlsplit(redirect_uri)
        return self.any_loopback and parts.scheme == "http" and parts.hostname in LOOPBACK

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and hmac.compare_digest(self.client_secret, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type in self.response_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str | None  # only when the authorization request named one: then /token must repeat it
    scope: str
    code_challenge: str
    code_challenge_method: str
    expires_at: float

    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class Grant:
    """One authorization: its current refresh token and its access tokens (rotated-out ones stay indexed)."""

    client_id: str
    scope: str
    refresh: str | None
    access: set[str] = field(default_factory=set)


@dataclass
class Credential:
    """An access or refresh token as authlib's refresh grant and revocation endpoint see it."""

    token: str
    grant_id: str
    client_id: str
    scope: str

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope


class Store:
    """In-memory clients, codes and tokens; every approval is automatic.

    Only touched inside authlib's synchronous calls on the event loop's thread, so a code's single
    use and a refresh token's rotation need no lock: no other request runs in between.
    """

    def __init__(self, options: Options, issuer: str, record: Recorder) -> None:
        self.options, self.issuer, self.resource, self.record = options, issuer, f"{issuer}/mcp", record
        loopback = ["http://127.0.0.1/callback"]
        static = Client(STATIC_ID, STATIC_SECRET, loopback, "client_secret_post", list(SUPPORTED), any_loopback=True)
        self.clients: dict[str, Client] = {STATIC_ID: static}
        self.codes: dict[str, Code] = {}
        self.grants: dict[str, Grant] = {}  # by an internal grant id
        self.refresh_index: dict[str, str] = {}  # every refresh token ever issued -> grant id
        self.access: dict[str, tuple[str, float, str]] = {}  # token -> (grant id, expiry, scope)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        grant_type = request.payload.grant_type
        if grant_type == "authorization_code":
            grant_id = secrets.token_hex(8)
            self.grants[grant_id] = Grant(request.client.client_id, token["scope"], token.get("refresh_token"))
        else:
            grant_id = request.refresh_token.grant_id
        grant = self.grants[grant_id]
        grant.refresh = token.get("refresh_token", grant.refresh)  # rotated, when it is a new one
        if grant.refresh is not None:
            self.refresh_index[grant.refresh] = grant_id
        self.access[token["access_token"]] = (grant_id, time.time() + self.options.token_lifetime, token["scope"])
        grant.access.add(token["access_token"])
        self.record(event="token", grant_type=grant_type, client_id=request.client.client_id)

    def credential(self, token: str, *, refresh: bool = False) -> Credential | None:
        """The live grant `token` belongs to: any of its tokens, or (`refresh`) only its current refresh token."""
        entry = None if refresh else self.access.get(token)
        grant_id = entry[0] if entry is not None else self.refresh_index.get(token)
        grant = self.grants.get(grant_id) if grant_id is not None else None
        if grant_id is None or grant is None:
            return None
        if refresh and token != grant.refresh:  # rotated out: a replay, so the whole grant goes
            self.record(event="refresh_reuse")
            self.revoke(grant_id)
            return None
        return Credential(token, grant_id, grant.client_id, grant.scope)

    def revoke(self, grant_id: str) -> None:
        grant = self.grants.pop(grant_id, None)
        for token in grant.access if grant is not None else ():
            self.access.pop(token, None)

    async def verify_token(self, token: str) -> AccessToken | None:
        """The resource server's bearer check (the SDK's `TokenVerifier` protocol)."""
        entry = self.access.get(token)
        if entry is None or entry[0] not in self.grants or time.time() >= entry[1]:
            return None
        grant_id, expiry, scope = entry
        owner = {"client_id": self.grants[grant_id].client_id, "subject": SUBJECT, "claims": {"iss": self.issuer}}
        return AccessToken(
            token=token, scopes=scope.split(), expires_at=int(expiry) + 1, resource=self.resource, **owner
        )


def check_resource(request: OAuth2Request, resource: str) -> None:
    for asked in request.payload.datalist.get("resource", []):
        if asked.rstrip("/") != resource:
            raise InvalidTargetError(f"this server only issues tokens for {resource}")


class S256Only(CodeChallenge):
    """PKCE as OAuth 2.1 wants it: every authorization request carries a challenge, and only S256.

    authlib's `required=True` only insists on a verifier from public clients at /token; an absent
    method means `plain` (RFC 7636 §4.3), which is refused too.
    """

    def validate_code_challenge(self, grant: AuthorizationCodeGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE is required")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)


class CodeGrant(AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def validate_authorization_request(self) -> str:
        redirect_uri: str = super().validate_authorization_request()
        store: Store = self.server.store
        try:
            check_resource(self.request, store.resource)
            granted = [s for s in scope_to_list(self.request.scope) if s in store.options.grant_scopes]
            if not granted:
                raise InvalidScopeError("none of the requested scopes can be granted")
        except OAuth2Error as error:
            error.redirect_uri = redirect_uri
            raise
        self.request.scope = _ordered(granted)
        return redirect_uri

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        self.server.store.codes[code] = Code(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope,
            code_challenge=data["code_challenge"],
            code_challenge_method=data["code_challenge_method"],
            expires_at=time.time() + CODE_LIFETIME,
        )

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        found: Code | None = self.server.store.codes.get(code)
        if found is None or found.client_id != client.client_id or found.expires_at < time.time():
            return None
        return found

    def delete_authorization_code(self, authorization_code: Code) -> None:
        self.server.store.codes.pop(authorization_code.code, None)  # single use

    def authenticate_user(self, authorization_code: Code) -> str:
        return SUBJECT

    def validate_token_request(self) -> None:
        check_resource(self.request, self.server.store.resource)
        super().validate_token_request()


class RefreshGrant(RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def validate_token_request(self) -> None:
        check_resource(self.request, self.server.store.resource)
        super().validate_token_request()

    def issue_token(self, user: str, refresh_token: Credential) -> dict[str, Any]:
        rotate = self.server.store.options.rotate_refresh
        scope = self.request.payload.scope or refresh_token.get_scope()
        token: dict[str, Any] = self.generate_token(user=user, scope=scope, include_refresh_token=rotate)
        if not rotate:  # the same refresh token stays good; say so, as oauth_upstream.py does
            token["refresh_token"] = refresh_token.token
        return token

    def authenticate_refresh_token(self, refresh_token: str) -> Credential | None:
        return self.server.store.credential(refresh_token, refresh=True)

    def authenticate_user(self, refresh_token: Credential) -> str:
        return SUBJECT

    def revoke_old_credential(self, refresh_token: Credential) -> None:
        """Nothing: a rotated-out token stays indexed (Store.save_token), so a replay is caught."""


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> Credential | None:
        return self.server.store.credential(token_string)

    def revoke_token(self, token: Credential, request: OAuth2Request) -> None:
        self.server.store.revoke(token.grant_id)


class RegistrationClaims(ClientMetadataClaims):
    def validate_redirect_uris(self) -> None:
        if not self.get("redirect_uris"):  # the MCP flow is redirect-based: a client without one is useless
            raise InvalidClaimError("redirect_uris")
        super().validate_redirect_uris()

    def validate_token_endpoint_auth_method(self) -> None:
        self.setdefault("token_endpoint_auth_method", DEFAULT_AUTH_METHOD)


class Registration(ClientRegistrationEndpoint):
    def __init__(self, server: AuthServer) -> None:
        super().__init__(server, [RegistrationClaims])

    def authenticate_token(self, request: JsonRequest) -> bool:
        return True  # open registration (RFC 7591 §3): no initial access token

    def get_server_metadata(self) -> dict[str, Any]:
        return dict(self.server.metadata)

    def generate_client_info(self, request: JsonRequest) -> dict[str, Any]:
        info: dict[str, Any] = super().generate_client_info(request)
        if request.payload.data.get("token_endpoint_auth_method", DEFAULT_AUTH_METHOD) == "none":
            del info["client_secret"], info["client_secret_expires_at"]  # a public client gets no secret
        return info

    def save_client(self, client_info: dict[str, Any], client_metadata: dict[str, Any], request: JsonRequest) -> Client:
        client = Client(
            client_id=client_info["client_id"],
            client_secret=client_info.get("client_secret"),
            redirect_uris=list(client_metadata["redirect_uris"]),
            auth_method=client_metadata["token_endpoint_auth_method"],
            scopes=scope_to_list(client_metadata.get("scope")) or list(SUPPORTED),
            grant_types=client_metadata.get("grant_types") or list(GRANT_TYPES),
            response_types=client_metadata.get("response_types") or ["code"],
        )
        self.server.store.clients[client.client_id] = client
        return client


class Payload(OAuth2Payload):
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in pairs:
            self._datalist[key].append(value)
        self._data = {key: values[0] for key, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class FormRequest(OAuth2Request):
    """A Starlette request as authlib's synchronous core takes it: body read, query and form parsed."""

    def __init__(self, request: Request, body: bytes) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        query = list(request.query_params.multi_items())
        is_form = request.headers.get("content-type", "").split(";")[0].strip() == "application/x-www-form-urlencoded"
        form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True) if is_form else []
        self.raw, self._args, self._form = body, dict(query), dict(form)
        self.payload = Payload(query + form)  # query and body together, like Flask's `request.values`

    @classmethod
    async def read(cls, request: Request) -> FormRequest:
        return cls(request, await request.body())

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class JsonBody(JsonPayload):
    def __init__(self, body: bytes) -> None:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        self._data = parsed if isinstance(parsed, dict) else {}  # empty: authlib answers invalid_request

    @property
    def data(self) -> dict[str, Any]:
        return self._data


@dataclass
class Reply:
    """authlib's (status, body, headers), with the `location` its RFC 9207 extension rewrites."""

    status: int
    body: Any
    headers: list[tuple[str, str]]

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "location"), None)

    @location.setter
    def location(self, value: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != "location"] + [("Location", value)]

    def response(self) -> Response:
        body = self.body if isinstance(self.body, str) else json.dumps(self.body)
        headers = {"Cache-Control": "no-store", **dict(self.headers)}  # codes and tokens are never cached
        return Response(body, status_code=self.status, headers=headers)


class Issuer(rfc9207.IssuerParameter):
    def __init__(self, issuer: str) -> None:
        self.issuer = issuer

    def get_issuer(self) -> str:
        return self.issuer


class AuthServer(AuthorizationServer):
    def __init__(self, store: Store, metadata: rfc8414.AuthorizationServerMetadata) -> None:
        super().__init__(scopes_supported=SUPPORTED)
        self.store, self.metadata = store, metadata
        lifetime = store.options.token_lifetime
        self.register_token_generator("default", BearerTokenGenerator(_token, _token, lifetime))
        self.register_grant(CodeGrant, [S256Only(required=True)])
        self.register_grant(RefreshGrant)
        self.register_endpoint(Revocation)
        if store.options.dcr:
            self.register_endpoint(Registration(self))
        if store.options.iss:
            self.register_extension(Issuer(store.issuer))

    def query_client(self, client_id: str) -> Client | None:
        return self.store.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.store.save_token(token, request)

    def create_oauth2_request(self, request: FormRequest) -> FormRequest:
        return request

    def create_json_request(self, request: FormRequest) -> JsonRequest:
        json_request = JsonRequest(request.method, request.uri, request.headers)
        json_request.payload = JsonBody(request.raw)
        return json_request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Reply:
        return Reply(status, body, list(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No one listens for authlib's signals here."""

    def authorize(self, request: FormRequest) -> Reply:
        """The user has already consented: approve at once, or say why not."""
        try:
            grant = self.get_authorization_grant(request)
            grant.validate_no_multiple_request_parameter(request)
        except OAuth2Error as error:
            error.state = request.payload.state
            reply: Reply = self.handle_error_response(request, error)
            self.execute_hook("after_create_authorization_response", reply)  # RFC 9207 `iss` on errors too
            return reply
        approved: Reply = self.create_authorization_response(request, grant_user=SUBJECT, grant=grant)
        return approved


def server_metadata(options: Options, issuer: str) -> rfc8414.AuthorizationServerMetadata:
    data: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "scopes_supported": SUPPORTED,
        "response_types_supported": ["code"],
        "grant_types_supported": GRANT_TYPES,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint": f"{issuer}/revoke",
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "code_challenge_methods_supported": ["S256"],
    }
    if options.dcr:
        data["registration_endpoint"] = f"{issuer}/register"
    if options.iss:
        data["authorization_response_iss_parameter_supported"] = True
    metadata = rfc8414.AuthorizationServerMetadata(data)
    metadata.validate(metadata_classes=[rfc9207.AuthorizationServerMetadata])
    return metadata


def build_app(options: Options, base: str) -> Starlette:
    record = recorder(options.record)
    store = Store(options, base, record)
    metadata = server_metadata(options, base)
    server = AuthServer(store, metadata)

    async def well_known(request: Request) -> Response:
        return JSONResponse(dict(metadata))

    def endpoint(handle: Callable[[FormRequest], Reply]) -> Callable[[Request], Awaitable[Response]]:
        async def respond(request: Request) -> Response:
            return handle(await FormRequest.read(request)).response()

        return respond

    routes: list[BaseRoute] = [
        Route(AS_METADATA, well_known, methods=["GET"]),
        Route("/authorize", endpoint(server.authorize), methods=["GET", "POST"]),
        Route("/token", endpoint(server.create_token_response), methods=["POST"]),
        Route("/revoke", endpoint(partial(server.create_endpoint_response, "revocation")), methods=["POST"]),
    ]
    if options.dcr:  # otherwise /register is a 404, as an authorization server without RFC 7591 has it
        register = partial(server.create_endpoint_response, "client_registration")
        routes.append(Route("/register", endpoint(register), methods=["POST"]))
    return resource_app(routes, store, record, base)


def main() -> int:
    return run(build_app, "authlib-upstream", __doc__.splitlines()[0])


if __name__ == "__main__":
    raise SystemExit(main())
