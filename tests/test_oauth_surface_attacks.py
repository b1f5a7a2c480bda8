"""Attacks on what `auth.mode: oauth` shows a user and hands a client (SPEC §13): a hostile MCP
client that registers itself and a hostile page that sends a victim's browser to a login.

Each test runs a real `mcp-guard serve` in front of a real fake SMSAPI with its own authorization
server and drives the flow over real HTTP with the scripted browser of tests/browser.py. What they
prove:

- a client's self-chosen name cannot mislead on the consent page: bidi overrides, isolates,
  zero-width and other invisible characters are dropped (an override would reorder the
  "unverified" warning that follows the name), the name is one short line, and it is isolated
  (`<bdi>`) from the text around it;
- a redirect URI with userinfo (`https://claude.ai@evil.example/cb`, which reads as one host and
  goes to another) is refused at registration;
- a client is granted no scope mcp-guard did not ask the upstream for, even when the upstream's
  token answer leaves `scope` out ("as requested");
- a hostile upstream authorization server that drips its answer a byte at a time (each read well
  within the read timeout) cannot hold a login open: every step has a deadline as a whole.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata
from pydantic import AnyHttpUrl, AnyUrl

from proxy import federation
from tests.browser import Browser, stops_at
from tests.test_oauth_server_attacks import TIMEOUT, consent_page, register, stack, start, tokens_for

pytestmark = pytest.mark.anyio

# Characters that change how the text around them reads without showing themselves.
INVISIBLE = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad"


async def test_a_client_name_cannot_reorder_hide_or_flood_the_consent_page(tmp_path: Path) -> None:
    # Shown as "Safe App" followed by the reversed tail: with the override left in, the browser
    # draws "(unverified: ...)" and "asks to use ..." right to left, and the zero-width and
    # newline characters hide or split what the user reads.
    hostile = "Safe\u200b App\u202e)deifirev(\u2066\n\n" + "x" * 500 + "\ufeff\u2069"
    with stack(tmp_path) as s, anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            flow = await start(http, s.base, name=hostile)
            blank = await start(http, s.base, name="\u202e\u200b\u2066")
        async with Browser(stop_at=stops_at(flow.redirect)) as browser:
            page = await consent_page(browser, flow)
        async with Browser(stop_at=stops_at(blank.redirect)) as browser:
            blank_page = await consent_page(browser, blank)
    # A name of invisible characters alone shows as the client's id, never as nothing.
    assert f"<b><bdi>{blank.client['client_id']}</bdi></b>" in blank_page.text, blank_page.text
    text = page.text
    assert not [c for c in INVISIBLE if c in text], [f"U+{ord(c):04X}" for c in INVISIBLE if c in text]
    shown = re.search(r"<b><bdi>(.*?)</bdi></b> <i>\(unverified", text, re.S)
    assert shown is not None, text
    name = shown.group(1)
    assert name.startswith("Safe App)deifirev( xxx") and "\n" not in name and len(name) <= 80, name


# -- redirect URIs ---------------------------------------------------------------------------------

MISLEADING = [
    "https://claude.ai@evil.example/callback",  # reads as claude.ai, goes to evil.example
    "https://claude.ai:443@evil.example/callback",
    "https://user:secret@app.example/callback",
    "cursor://claude.ai@anysphere.cursor-retrieval/oauth/callback",
]


async def test_a_redirect_uri_with_userinfo_is_refused_at_registration(tmp_path: Path) -> None:
    with stack(tmp_path, auth={"redirect_schemes": ["cursor"]}) as s, anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            answers = {uri: await register(http, s.base, uri) for uri in MISLEADING}
    for uri, answer in answers.items():
        assert answer.status_code == 400, (uri, answer.text)
        assert answer.json()["error"] == "invalid_redirect_uri" and "client_id" not in answer.json(), answer.text


# -- scopes ----------------------------------------------------------------------------------------


async def test_a_login_gets_no_scope_that_was_not_asked_upstream_when_the_upstream_omits_scope(
    tmp_path: Path,
) -> None:
    # The team may use three scopes, but mcp-guard asks the upstream only for `sms` (oauth.scopes);
    # an answer without `scope` means "as requested" (RFC 6749 §5.1), i.e. `sms` alone.
    with stack(tmp_path, "sdk", "--omit-scope", oauth={"scopes": ["sms"]}) as s, anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(timeout=10) as http:
            _, answer = await tokens_for(http, s)
    assert answer["scope"].split() == ["sms"], answer["scope"]


# -- the upstream's authorization server -------------------------------------------------------------


@asynccontextmanager
async def dripping(gap: float) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback HTTP server that answers every request with a JSON body sent a byte per `gap`."""
    sent: list[int] = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(v)
                    for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                    if k.lower() == b"content-length"
                ),
                0,
            )
            await reader.readexactly(length)
            body = b'{"access_token": "' + b"a" * 4000 + b'", "token_type": "Bearer"}'
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body))
            for byte in body:
                writer.write(bytes([byte]))
                await writer.drain()
                sent[0] += 1
                await asyncio.sleep(gap)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/", sent
    finally:
        server.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_dripping_upstream_token_answer_cannot_hold_a_login(
    monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    # Each byte comes well within the 15-second read timeout; the whole answer would take 40 s here
    # (and days for a megabyte at a byte every ten seconds).
    monkeypatch.setattr(federation, "DEADLINE", 2.0, raising=False)
    async with dripping(0.01) as (url, sent):
        metadata = OAuthMetadata(
            issuer=AnyHttpUrl(url), authorization_endpoint=AnyHttpUrl(url), token_endpoint=AnyHttpUrl(url)
        )
        client = OAuthClientInformationFull(client_id="c", redirect_uris=[AnyUrl("http://127.0.0.1/cb")])
        with anyio.fail_after(10), pytest.raises(federation.FederationError, match="did not answer within 2 seconds"):
            await federation.exchange(federation.Upstream(metadata, client, url), "code", "v", "http://127.0.0.1/cb")
        assert 0 < sent[0] < 4000  # it was dripping, and was cut off long before its end


def test_an_upstream_authorization_servers_words_are_cut_short_and_printable() -> None:
    """A FederationError can quote the upstream (an issuer that did not match): up to a megabyte of its
    choosing went into the log and into the `error_description` a client is redirected with."""
    said = "https://as.example/" + "\u202e\x1b]52;c;x\x07\n" * 50_000
    message = str(federation.FederationError(f"the metadata was refused: issuer {said} is not the one asked"))
    assert len(message) <= federation.MAX_MESSAGE
    assert message.isprintable()
