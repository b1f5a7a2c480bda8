"""mcp-remote 0.15.1, a real third-party OAuth MCP client, logs in to mcp-guard (`auth.mode: oauth`)
through mcp-guard's consent page and the login federated to a fake SMSAPI's own authorization
server, then calls tools through mcp-guard; the upstream's tokens never reach mcp-remote.

mcp-remote runs as the stdio MCP server the Python SDK client talks to, as Claude Desktop runs it:
no callback port, no --host, no --allow-http (http on 127.0.0.1 is allowed without it). It opens
the authorization URL with the `open` package, which on Linux runs the `xdg-open` script bundled
beside it (not the one on PATH) whenever that script is executable, as npm installs it; with no
desktop session in the environment that script hands the URL to `$BROWSER`. So the test's
"system browser" is a script that appends the URL to a file, set as `$BROWSER` and, for an `open`
that would use the system `xdg-open`, first on PATH as `xdg-open` too. The test reads the URL (a
bounded wait: mcp-remote writes it) and drives it with the scripted browser, which follows every
redirect up to and including mcp-remote's own loopback callback, so mcp-remote gets the code (or
the refusal) as it would from a real browser.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shlex
import shutil
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.to_thread
import mcp_types as types
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client

from proxy.audit import digest_session
from proxy.grants import GrantStore
from tests.browser import Browser, Page
from tests.harness import records, wait_for
from tests.oauth_flow import STORE_KEY, fake_smsapi, free_port, guard, guard_policy

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parent.parent
NPM = REPO / "tests" / "npm"
TIMEOUT = 90  # the whole flow: node start-up, discovery, registration, two logins, the calls
OPENED_WITHIN = 45  # mcp-remote starts, discovers, registers and opens the browser within this
KINDS = ["sdk", "authlib"]


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the mcp-remote tests need Node.js (the machine image has it)")
    return node


def _mcp_remote_bin() -> Path:
    """The pinned, installed mcp-remote; a clear failure (never a skip) when it is missing."""
    manifest = NPM / "node_modules" / "mcp-remote" / "package.json"
    if not manifest.is_file():
        pytest.fail(
            "mcp-remote is not installed under tests/npm/node_modules. Install the pinned clients with\n"
            "    npm ci --prefix tests/npm --no-audit --no-fund --ignore-scripts"
        )
    meta = json.loads(manifest.read_text())
    pinned = json.loads((NPM / "package.json").read_text())["dependencies"]["mcp-remote"]
    assert meta["version"] == pinned == "0.15.1", f"mcp-remote {meta['version']} installed, {pinned} pinned"
    return manifest.parent / meta["bin"]["mcp-remote"]


def prefix(token: str) -> str:
    """The hash prefix the fake upstream records for the bearer token of each call."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def events(record: Path, kind: str) -> list[dict[str, Any]]:
    return [r for r in records(record) if r.get("event") == kind]


def leaves(errors: list[BaseException]) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    found: list[BaseException] = []
    for error in errors:
        found += leaves(list(error.exceptions)) if isinstance(error, BaseExceptionGroup) else [error]
    return found


def text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


@dataclass
class McpRemote:
    """One mcp-remote bridge to mcp-guard, its config dir, its stderr and the browser it "opens"."""

    server_url: str
    home: Path
    opened: Path  # one line per URL mcp-remote asked the system browser to open
    stderr: Path
    protocol: str = "legacy"  # mcp-remote's --protocol: legacy (its default) or auto (2026-07-28 when offered)

    @property
    def config(self) -> Path:
        return self.home / "mcp-auth"

    def params(self) -> StdioServerParameters:
        bindir = self.home / "bin"
        bindir.mkdir(exist_ok=True)
        browser = bindir / "xdg-open"
        browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {shlex.quote(str(self.opened))}\n')
        browser.chmod(0o755)
        return StdioServerParameters(
            command=_node(),
            args=[
                str(_mcp_remote_bin()),
                self.server_url,
                *(["--protocol", self.protocol] if self.protocol != "legacy" else []),
            ],
            env={
                # OAuth state goes to MCP_REMOTE_CONFIG_DIR (default ~/.mcp-auth): keep it in the test's directory.
                "MCP_REMOTE_CONFIG_DIR": str(self.config),
                "HOME": str(self.home),
                "BROWSER": str(browser),
                "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            },
        )

    @contextmanager
    def errlog(self) -> Iterator[Any]:
        with self.stderr.open("a", encoding="utf-8") as out:
            yield out

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8") if self.stderr.exists() else ""

    async def authorization_url(self) -> str:
        """The URL mcp-remote handed to the system browser (it writes it; we can only poll)."""

        def written() -> bool:  # the line, not just the file the script's `>>` creates first
            return self.opened.exists() and self.opened.read_text().endswith("\n")

        seen = await anyio.to_thread.run_sync(lambda: wait_for(written, OPENED_WITHIN))
        assert seen, f"mcp-remote never opened a browser; its stderr:\n{self.log()[-4000:]}"
        urls = self.opened.read_text().split()
        assert len(urls) == 1, urls
        return urls[0]

    def stored(self) -> dict[str, dict[str, Any]]:
        """mcp-remote's JSON config files, parsed, by name after the server hash (tokens.json, client_info.json)."""
        found: dict[str, dict[str, Any]] = {}
        for path in self.config.rglob("*.json"):
            found[path.name.split("_", 1)[1]] = json.loads(path.read_text())
        return found

    def files(self) -> list[Path]:
        return [p for p in self.config.rglob("*") if p.is_file()] if self.config.exists() else []


@dataclass
class Person:
    """The user at the browser mcp-remote opened: presses `action` on mcp-guard's consent page."""

    bridge: McpRemote
    action: str
    pages: list[Page]
    browser: Browser

    async def log_in(self) -> None:
        url = await self.bridge.authorization_url()
        consent = await self.browser.open(url)
        self.pages.append(consent)
        assert consent.status == 200 and "Approve this MCP client?" in consent.text, consent.text
        # Every redirect is followed, the last one to mcp-remote's own callback included.
        self.pages.append(await self.browser.submit(consent, self.action))


async def upstream_tokens(tmp: Path) -> list[str]:
    """The upstream's access and refresh tokens of the one login, from mcp-guard's sealed grant."""
    (grant_file,) = (tmp / "team.oauth" / "grants").glob("*.smsapi.grant")
    principal = grant_file.name.split(".")[0]
    grant = GrantStore(grant_file, STORE_KEY.encode(), team="test", upstream=f"smsapi\x00{principal}")
    tokens = await grant.get_tokens()
    assert tokens is not None and tokens.refresh_token
    return [tokens.access_token, tokens.refresh_token]


def bridge_for(tmp: Path, url: str, protocol: str = "legacy") -> McpRemote:
    home = tmp / "home"
    home.mkdir()
    return McpRemote(url, home, tmp / "opened-urls.txt", tmp / "mcp-remote.stderr", protocol)


async def through(bridge: McpRemote, user: Person, session: Callable[[Client], Awaitable[None]]) -> list[BaseException]:
    """Start mcp-remote under the SDK's stdio client while the user logs in in the browser it opened;
    run `session` once mcp-remote answers on stdio (it does only after its login). Returns the MCP
    errors the stdio client raised (caught here, so the browser's last request is never cut short)."""
    failures: list[BaseException] = []
    with anyio.fail_after(TIMEOUT), bridge.errlog() as errlog:
        async with anyio.create_task_group() as tg:
            tg.start_soon(user.log_in)
            try:
                async with Client(stdio_client(bridge.params(), errlog=errlog), mode="legacy") as client:
                    await session(client)
            except* MCPError as group:
                failures += leaves(list(group.exceptions))
    return failures


@pytest.mark.parametrize(("kind", "protocol"), [("sdk", "legacy"), ("authlib", "legacy"), ("sdk", "auto")])
async def test_mcp_remote_logs_in_through_consent_and_calls_without_ever_holding_the_upstream_token(
    tmp_path: Path, kind: str, protocol: str
) -> None:
    names: set[str] = set()
    results: list[types.CallToolResult] = []

    async def session(client: Client) -> None:
        names.update(t.name for t in (await client.list_tools()).tools)
        results.append(await client.call_tool("get_profile", {}))

    with fake_smsapi(tmp_path, kind) as (upstream, record):
        port = free_port()
        with guard(guard_policy(tmp_path, upstream.url, port), port) as proxy:
            bridge = bridge_for(tmp_path, proxy.url, protocol)
            async with Browser(stop_at=lambda url: False) as browser:
                user = Person(bridge, "approve", [], browser)
                failures = await through(bridge, user, session)
                history = [page.url for page in browser.history]
    log = bridge.log()
    assert failures == [], log[-4000:]

    # mcp-remote opened mcp-guard's /authorize (found by discovery) in the "system browser"; mcp-guard
    # showed its consent page naming mcp-remote and its loopback redirect URI.
    opened = urlsplit(bridge.opened.read_text().split()[0])
    assert (opened.scheme, opened.netloc, opened.path) == ("http", f"127.0.0.1:{port}", "/authorize"), opened
    redirect_uri = parse_qs(opened.query)["redirect_uri"][0]
    assert redirect_uri.startswith("http://localhost:") and redirect_uri.endswith("/oauth/callback"), redirect_uri
    consent = user.pages[0]
    assert consent.url.startswith(f"http://127.0.0.1:{port}/oauth/consent?"), consent.url
    assert "MCP CLI Proxy" in consent.text and html.escape(redirect_uri) in consent.text
    # Approved: on to the upstream's authorization server, back to mcp-guard's callback, and on to
    # mcp-remote's own callback, which took the code.
    upstream_base = upstream.url.removesuffix("/mcp")
    assert any(u.startswith(f"{upstream_base}/authorize?") for u in history), history
    assert any(u.startswith(f"http://127.0.0.1:{port}/oauth/callback?") for u in history), history
    done = user.pages[-1]
    assert done.url.split("?")[0] == redirect_uri, done.url
    assert done.status == 200 and "Authorization successful!" in done.text, (done.status, done.text, log[-4000:])

    # Tools through mcp-guard, the result enveloped.
    assert names == {"get_profile", "get_contacts", "send_sms"}
    [profile] = results
    assert not profile.is_error, text(profile)
    assert "<tool_output" in text(profile) and "oauth-user" in text(profile)

    # What mcp-remote keeps: mcp-guard's own tokens, never the upstream's.
    stored = bridge.stored()
    ours = stored["tokens.json"]
    assert ours["access_token"].startswith("mcpg_at_") and ours["refresh_token"].startswith("mcpg_rt_"), ours.keys()
    assert stored["client_info.json"]["redirect_uris"] == [redirect_uri]
    theirs = await upstream_tokens(tmp_path)
    files = bridge.files()
    assert files, "mcp-remote stored nothing"
    for path in files:
        blob = path.read_text(errors="replace")
        for token in theirs:
            assert token not in blob, f"the upstream's token is in mcp-remote's {path.name}"
    assert not any(token in log for token in theirs)

    # The upstream saw the call with its own token (the one in mcp-guard's sealed grant), issued to
    # mcp-guard's client, never to mcp-remote's; no token mcp-remote holds ever reached it.
    calls = events(record, "call")
    assert [c["tool"] for c in calls] == ["get_profile"]
    assert calls[0]["token_sha256_prefix"] == prefix(theirs[0])
    assert calls[0]["token_sha256_prefix"] not in {prefix(ours["access_token"]), prefix(ours["refresh_token"])}
    [issued] = events(record, "token")
    assert issued["client_id"] != stored["client_info.json"]["client_id"]
    # The era mcp-remote spoke: a 2026-07-28 caller has no session, so its audit session is
    # "<principal>/stateless".
    [entry] = [r for r in records(tmp_path / "audit.jsonl") if r.get("tool") == "get_profile"]
    stateless = entry["session"] == digest_session(f"{entry['principal']}/stateless")
    assert stateless is (protocol == "auto")


async def test_mcp_remote_gets_nothing_when_the_user_denies_on_the_consent_page(tmp_path: Path) -> None:
    async def session(client: Client) -> None:
        await client.call_tool("get_profile", {})

    with fake_smsapi(tmp_path, "sdk") as (upstream, record):
        port = free_port()
        with guard(guard_policy(tmp_path, upstream.url, port), port) as proxy:
            bridge = bridge_for(tmp_path, proxy.url)
            async with Browser(stop_at=lambda url: False) as browser:
                user = Person(bridge, "deny", [], browser)
                failures = await through(bridge, user, session)
                history = [page.url for page in browser.history]
    log = bridge.log()

    # The denial went straight back to mcp-remote's callback, which showed it; mcp-remote gave up
    # and exited before it ever answered on stdio.
    done = user.pages[-1]
    callback = urlsplit(done.url)
    assert callback.hostname == "localhost" and callback.path == "/oauth/callback", done.url
    assert parse_qs(callback.query)["error"] == ["access_denied"], done.url
    assert done.status == 400 and "Authorization failed" in done.text, (done.status, done.text)
    assert [str(f) for f in failures] == ["Connection closed"], failures
    assert "Authorization failed: access_denied" in log, log[-4000:]
    # No token: nothing of mcp-guard's in mcp-remote's config dir.
    assert "tokens.json" not in bridge.stored()
    assert not any(mark in p.read_text(errors="replace") for p in bridge.files() for mark in ("mcpg_at_", "mcpg_rt_"))
    # Nothing went upstream: no upstream login, no upstream token, no call.
    assert not any(u.startswith(upstream.url.removesuffix("/mcp")) for u in history), history
    assert events(record, "token") == [] and events(record, "call") == []
    assert list((tmp_path / "team.oauth").glob("grants/*")) == []
