"""The upstream half of an `auth.mode: oauth` login: mcp-guard logs in to the upstream's
authorization server on the user's behalf (its own PKCE, its own client), so the upstream's token
stays with mcp-guard.

The authorization server is discovered from the upstream (RFC 9728, then RFC 8414), never written
in the policy; mcp-guard registers itself once (DCR) unless the policy names a client.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx2
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    extract_resource_metadata_from_www_auth,
    handle_auth_metadata_response,
    handle_protected_resource_response,
    validate_metadata_issuer,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken
from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url
from pydantic import AnyUrl, ValidationError

from proxy.logs import printable
from proxy.oauth_client import client_metadata
from proxy.policy import LoadedPolicy
from proxy.upstream_transport import ResultTooLarge, UnreadableEncoding, capping_hook

TIMEOUT = 15.0
# Metadata, a registration and a token are a few kilobytes; nothing an authorization server says is
# read past this (compressed answers counted as they inflate).
MAX_ANSWER_BYTES = 1024 * 1024
# TIMEOUT bounds each read, not an answer: one that drips a byte every few seconds would hold a
# login (and the browser waiting on it) for days. Each step as a whole ends after this.
DEADLINE = 30.0
MAX_MESSAGE = 300  # characters of a FederationError, the upstream's words in it included


def _client(**kwargs: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(timeout=TIMEOUT, event_hooks={"response": [capping_hook(MAX_ANSWER_BYTES)]}, **kwargs)


def _why(exc: httpx2.HTTPError) -> str:
    """What went wrong, in mcp-guard's words: its own refusals say why, the rest are named by kind."""
    if isinstance(exc, ResultTooLarge):
        return f"its answer is larger than {exc.limit} bytes and was refused"
    return str(exc) if isinstance(exc, UnreadableEncoding) else type(exc).__name__


class FederationError(Exception):
    """The upstream's authorization server could not be used; the message is mcp-guard's own.

    It may quote what the upstream said (an issuer that did not match): that part is the upstream's
    choice, so the message is cut short and made printable before it reaches a log line or the
    `error_description` a client is redirected with."""

    def __init__(self, message: str) -> None:
        shown = printable(message)
        super().__init__(shown if len(shown) <= MAX_MESSAGE else shown[: MAX_MESSAGE - 1] + "\u2026")


@contextmanager
def _deadline(what: str) -> Iterator[None]:
    try:
        with anyio.fail_after(DEADLINE):
            yield
    except TimeoutError:
        raise FederationError(f"{what} did not answer within {DEADLINE:g} seconds") from None


@dataclass(frozen=True)
class Upstream:
    """What mcp-guard needs to send a user to the upstream's login and take the code back."""

    metadata: OAuthMetadata
    client: OAuthClientInformationFull
    resource: str


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


async def discover(url: str) -> tuple[OAuthMetadata, str]:
    """The upstream's authorization server metadata and the resource to ask tokens for."""
    with _deadline("the upstream's authorization server"):
        return await _discover(url)


async def _discover(url: str) -> tuple[OAuthMetadata, str]:
    async with _client(follow_redirects=False) as http:
        try:
            probe = await http.post(
                url,
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={"Accept": "application/json, text/event-stream"},
            )
            www_auth = extract_resource_metadata_from_www_auth(probe) if probe.status_code == 401 else None
            resource, servers = url, []
            for candidate in build_protected_resource_metadata_discovery_urls(www_auth, url):
                found = await handle_protected_resource_response(await http.get(candidate))
                if found is not None:
                    resource, servers = str(found.resource), [str(s) for s in found.authorization_servers]
                    # RFC 9728 §3.3: metadata naming another resource would have mcp-guard ask for
                    # tokens meant elsewhere and send them here (the confused deputy).
                    if not check_resource_allowed(resource_url_from_server_url(url), resource):
                        raise FederationError(
                            f"the upstream's protected resource metadata names the resource {resource[:200]!r}, "
                            "not this upstream's URL: refused"
                        )
                    break
            issuer = servers[0] if servers else None
            for candidate in build_oauth_authorization_server_metadata_discovery_urls(issuer, url):
                go_on, metadata = await handle_auth_metadata_response(await http.get(candidate))
                if metadata is not None:
                    if issuer is not None:
                        validate_metadata_issuer(metadata, issuer)
                    return metadata, resource
                if not go_on:
                    break
        except httpx2.HTTPError as exc:
            raise FederationError(f"the upstream's authorization server could not be reached ({_why(exc)})") from None
        except FederationError:
            raise
        except Exception as exc:  # the SDK's OAuthFlowError and friends: an issuer that does not match
            raise FederationError(f"the upstream's authorization server metadata was refused: {exc}") from None
    raise FederationError("the upstream publishes no OAuth authorization server metadata")


async def client_for(
    loaded: LoadedPolicy, server: str, metadata: OAuthMetadata, redirect_uri: str, known: dict[str, Any] | None
) -> OAuthClientInformationFull:
    """The client mcp-guard logs in upstream as: the policy's, one registered before, or a new one (DCR)."""
    oauth = loaded.policy.upstreams[server].oauth
    assert oauth is not None
    if oauth.client_id is not None:
        return OAuthClientInformationFull(
            client_id=oauth.client_id,
            client_secret=oauth.client_secret,
            redirect_uris=[AnyUrl(redirect_uri)],
            token_endpoint_auth_method="client_secret_post" if oauth.client_secret else "none",
        )
    if known is not None and known.get("issuer") == str(metadata.issuer):
        return OAuthClientInformationFull.model_validate(known["client"])
    if metadata.registration_endpoint is None:
        raise FederationError("the upstream's authorization server does not register clients; set oauth.client_id")
    # Described as `mcp-guard login` describes itself, as a public client: it keeps no secret per login.
    described = client_metadata(loaded, server, redirect_uri).model_copy(update={"token_endpoint_auth_method": "none"})
    body = described.model_dump(mode="json", exclude_none=True)
    with _deadline("registering with the upstream"):
        async with _client() as http:
            try:
                answer = await http.post(str(metadata.registration_endpoint), json=body)
            except httpx2.HTTPError as exc:
                raise FederationError(f"registering with the upstream failed ({_why(exc)})") from None
    if answer.status_code not in (200, 201):
        raise FederationError(f"the upstream refused mcp-guard's client registration (HTTP {answer.status_code})")
    try:
        data = answer.json()
        data.pop("issuer", None)
        return OAuthClientInformationFull.model_validate(data)
    except (ValueError, ValidationError, AttributeError):
        raise FederationError("the upstream's client registration answer is not valid") from None


def authorize_url(up: Upstream, redirect_uri: str, state: str, challenge: str, scopes: list[str]) -> str:
    query = {
        "response_type": "code",
        "client_id": up.client.client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": up.resource,
    }
    if scopes:
        query["scope"] = " ".join(scopes)
    return f"{up.metadata.authorization_endpoint}?{urlencode(query)}"


async def exchange(up: Upstream, code: str, verifier: str, redirect_uri: str) -> OAuthToken:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
        "client_id": up.client.client_id or "",
        "resource": up.resource,
    }
    if up.client.client_secret:
        form["client_secret"] = up.client.client_secret
    with _deadline("the upstream's token endpoint"):
        async with _client() as http:
            try:
                answer = await http.post(str(up.metadata.token_endpoint), data=form)
            except httpx2.HTTPError as exc:
                raise FederationError(f"the upstream's token endpoint could not be reached ({_why(exc)})") from None
    if answer.status_code != 200:
        raise FederationError(f"the upstream refused the login code (HTTP {answer.status_code})")
    try:
        return OAuthToken.model_validate_json(answer.content)
    except ValidationError:
        raise FederationError("the upstream's token answer is not valid") from None
