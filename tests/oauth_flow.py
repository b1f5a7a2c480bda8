"""Shared pieces of the `auth.mode: oauth` tests: a fake SMSAPI with its own authorization server
(the SDK's or authlib's), mcp-guard in front of it as authorization and resource server, and MCP
clients that log in through a scripted browser.

The browser presses the consent page's button (approve or deny), follows the redirect to the
upstream's authorization server (which approves at once, as for a user who consented there
before), comes back through mcp-guard's callback and stops at the client's redirect URI.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

from tests.browser import Browser, Page, stops_at
from tests.harness import PY, REPO, Proc, proxy_http, spawn, write_policy

UPSTREAMS = {
    "sdk": [PY, str(REPO / "tests" / "servers" / "oauth_upstream.py")],
    "authlib": [PY, str(REPO / "tests" / "servers" / "authlib_upstream.py")],
}
STORE_KEY = "k" * 48
REDIRECT_URI = "http://127.0.0.1:8765/callback"  # never listened on: the browser stops there


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def fake_smsapi(tmp: Path, kind: str = "sdk", *flags: str) -> Iterator[tuple[Proc, Path]]:
    record = tmp / f"upstream-{kind}.jsonl"
    with spawn([*UPSTREAMS[kind], "--port", "0", "--record", str(record), *flags]) as proc:
        yield proc, record


def guard_policy(tmp: Path, upstream_url: str, port: int, **sections: Any) -> Path:
    auth = {"mode": "oauth", "public_url": f"http://127.0.0.1:{port}", **sections.pop("auth", {})}
    return write_policy(
        tmp / "team.yaml",
        {"smsapi": {"url": upstream_url, "profile": "smsapi", "oauth": sections.pop("oauth", {})}},
        scopes=sections.pop("scopes", ["sms", "contacts", "profile"]),
        auth=auth,
        audit={"path": "audit.jsonl"},
        trifecta={"action": "off"},
        **sections,
    )


@contextmanager
def guard(policy: Path, port: int, env: dict[str, str] | None = None) -> Iterator[Proc]:
    with proxy_http(policy, "--port", str(port), env={"MCP_GUARD_STORE_KEY": STORE_KEY, **(env or {})}) as proc:
        yield proc


class Memory:
    """A client's token storage that keeps every token set it was given, oldest first."""

    def __init__(self, client: OAuthClientInformationFull | None = None) -> None:
        self.issued: list[OAuthToken] = []
        self.client = client

    async def get_tokens(self) -> OAuthToken | None:
        return self.issued[-1] if self.issued else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.issued.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


@dataclass
class User:
    """The person at the browser: approves (or denies) on mcp-guard's consent page."""

    action: str = "approve"
    redirect_uri: str = REDIRECT_URI
    pages: list[Page] = field(default_factory=list)
    answers: list[AuthorizationCodeResult] = field(default_factory=list)
    browser: Browser | None = None

    async def redirect(self, url: str) -> None:
        browser = self.browser or Browser(stop_at=stops_at(self.redirect_uri))
        consent = await browser.open(url)
        self.pages.append(consent)
        done = await browser.submit(consent, self.action)
        self.pages.append(done)
        assert done.stopped_at is not None, done.text
        query = done.query
        self.answers.append(
            AuthorizationCodeResult(code=query.get("code", ""), state=query.get("state"), iss=query.get("iss"))
        )

    async def callback(self) -> AuthorizationCodeResult:
        return self.answers[-1]


@asynccontextmanager
async def logged_in(
    url: str, storage: Memory, user: User, mode: str = "auto", elicitation: Any = None
) -> AsyncIterator[Client]:
    metadata = OAuthClientMetadata(redirect_uris=[AnyUrl(user.redirect_uri)], client_name="Test Client")
    auth = OAuthClientProvider(url, metadata, storage, user.redirect, user.callback)
    async with httpx2.AsyncClient(auth=auth, timeout=30) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, elicitation_callback=elicitation) as client:  # type: ignore[arg-type]
            yield client
