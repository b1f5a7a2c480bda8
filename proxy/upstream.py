"""Connections to upstream MCP servers.

Each `UpstreamConnection` is one live client session to one upstream for one credential.
A task in the pool's task group owns each `mcp.Client` (entering and leaving it in the
same task, which anyio requires); handlers only borrow its session. A connection that
breaks is dropped and the next request opens a fresh one, so the proxy never goes down
with its upstream.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import httpx2
import mcp.types as types
from mcp import Client, StdioServerParameters
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST
from pydantic import BaseModel, ValidationError

from proxy import __version__, upstream_wire
from proxy.policy import Upstream
from proxy.upstream_changes import Announcements, Relay, announces, speaks_modern
from proxy.upstream_errors import (
    UpstreamUnavailable,
    describe,
    not_mcp,
    sdk_said,
    server_answered,
    upstream_error_kind,
    upstream_text,
)
from proxy.upstream_requests import walk
from proxy.upstream_stdio import stdio_upstream
from proxy.upstream_transport import Lean, SharedTransport
from proxy.upstream_wire import NotMCP

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R", bound=BaseModel)

TOOLS_TTL = 60.0  # seconds a tool listing is trusted before a call lists again


def credential_key(value: str | None) -> str:
    """A digest naming a credential in maps and logs; the credential itself is never kept as a key."""
    if value is None:
        return "-"
    return hashlib.sha256(value.encode()).hexdigest()[:16]


class UpstreamConnection(Announcements):
    """One client session to one upstream, opened lazily and reopened after a failure."""

    def __init__(
        self,
        name: str,
        config: Upstream,
        headers: Mapping[str, str],
        task_group: anyio.abc.TaskGroup,
        *,
        allow_sampling: bool,
        transport: httpx2.AsyncBaseTransport | None = None,
        auth: httpx2.Auth | None = None,
    ) -> None:
        self.name = name
        self._transport = transport
        self._auth = auth  # mcp-guard's own OAuth grant for this upstream (SPEC §13)
        self.config = config
        self._headers = dict(headers)
        self._tg = task_group
        self._allow_sampling = allow_sampling
        self._client: Client | None = None
        self._stop: anyio.Event | None = None
        self._lock = anyio.Lock()
        self.last_used = time.monotonic()
        self.in_flight = 0
        self.tools: dict[str, types.Tool] = {}
        self._listed_at = 0.0
        # Prompts and resource templates, listed whole only when pins are checked against them.
        self.others: dict[str, dict[str, Any]] = {}  # "prompts", "resource_templates": name -> entry
        self._others_at: dict[str, float] = {}
        # Told of every full listing, with its kind (the pipeline checks it against the pins).
        self.listed: Callable[[str, str, Mapping[str, Any]], None] | None = None
        # Downstream sessions that used this connection, to hear list_changed and resource updates;
        # weak, so a closed session is forgotten without being told.
        self.listeners: weakref.WeakSet[Any] = weakref.WeakSet()
        # Resources subscribed upstream -> how many downstream subscriptions stand on each.
        self.subscribed: dict[str, int] = {}
        # The same announcements for 2026-07-28 clients, whose subscriptions/listen streams read this bus.
        self.bus = InMemorySubscriptionBus()
        # Relays of the calls in flight, for an upstream question that arrives outside the call's context.
        self._relays: dict[int, Relay] = {}
        self._refilter = anyio.Event()  # set: the change stream (2026-07-28) is to be opened anew
        self._acked = anyio.Event()  # set once the change stream took the latest filter (or failed)
        self._listen_failed = False
        self._subscribing = anyio.Lock()  # one subscription change at a time (see `subscribe`)
        # The SDK turns an upstream's HTTP error into "Server returned an error response"; the status
        # (401 bad token, 403 missing scope) is what a person needs to fix it, so we note it here.
        self.http_status: int | None = None
        # Why mcp-guard itself ended the connection (a stdio line past max_result_bytes), for the failure.
        self._ended_why: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def session(self) -> ClientSession:
        """The live session, connecting first if there is none."""
        self.last_used = time.monotonic()
        client = self._client
        if client is not None:
            return client.session
        async with self._lock:
            if self._client is None:
                await self._connect()
            assert self._client is not None
            return self._client.session

    async def _connect(self) -> None:
        cfg = self.config
        try:
            await self._start(sse=cfg.transport == "sse")
        except UpstreamUnavailable as exc:
            # The server answered, but not as Streamable HTTP (404/405 on the POST): an older
            # server may speak the deprecated HTTP+SSE transport at the same URL.
            if not exc.answered or cfg.url is None or cfg.transport != "auto":
                raise
            try:
                await self._start(sse=True)
            except UpstreamUnavailable:
                raise exc from None
            logger.warning("upstream '%s' does not speak Streamable HTTP; using the SSE transport", self.name)

    async def _start(self, *, sse: bool) -> None:
        stop = anyio.Event()
        self._stop = stop
        self._acked = anyio.Event()  # the new connection's change stream, if it opens one, sets it
        try:
            with anyio.fail_after(self.config.timeout_seconds):
                self._client = await self._tg.start(self._own, stop, sse)
                await self._resubscribe(self._client.session)
            self.http_status = None
            self._ended_why = None
            self._forget_listings()  # a new connection may be a new upstream: see _mark_broken
        except BaseException as exc:
            stop.set()
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                raise
            failure = UpstreamUnavailable(self.name, self._with_status(describe(exc)), upstream_text(exc))
            failure.answered = server_answered(exc)
            raise failure from None

    async def _own(self, stop: anyio.Event, sse: bool, *, task_status: anyio.abc.TaskStatus[Client]) -> None:
        """Enter the client, hand it out, and leave it in this same task when told to stop."""
        started = False
        try:
            cm = self._client_cm(sse=sse)
            async with cm as client:
                if isinstance(cm, _ClosingHttp):
                    # Requests of a 2026-07-28 session go out on the transport's own client (upstream_wire).
                    lean = None
                    if isinstance(self._transport, SharedTransport):
                        lean = Lean.of(cm.http, cm.url, self._transport, self._note_code)
                    upstream_wire.attach(client.session, cm.http, cm.url, lean)
                try:
                    task_status.started(client)
                    started = True
                    if speaks_modern(client.session) and announces(client.session.server_capabilities):
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(self._listen, client.session, stop)
                            await stop.wait()
                            tg.cancel_scope.cancel()
                    else:
                        await stop.wait()
                finally:
                    upstream_wire.detach(client.session)
        except Exception as exc:
            if not started:
                raise
            logger.warning("upstream '%s' connection ended: %s", self.name, describe(exc))
        finally:
            if started and self._stop is stop:
                self._client = None

    def _client_cm(self, *, sse: bool = False) -> AbstractAsyncContextManager[Client]:
        cfg = self.config
        common: dict[str, Any] = {
            "read_timeout_seconds": cfg.timeout_seconds,
            "cache": None,  # shared between callers: never serve one caller's listing to another
            "elicitation_callback": self._on_elicit,
            "logging_callback": self._on_log,
            "message_handler": self._on_message,
            # 2026-era servers log only for requests that opt in; the downstream decides what it receives.
            "log_level": "debug",
            "client_info": types.Implementation(name="mcp-guard", version=__version__),
        }
        if self._allow_sampling:
            common["sampling_callback"] = self._on_sample
        if cfg.command is not None or cfg.builtin is not None:
            return Client(stdio_upstream(self._stdio_params(), cfg.max_result_bytes, self._ended, self.name), **common)
        assert cfg.url is not None
        if sse:
            sse_cm = sse_client(cfg.url, headers=self._headers, timeout=cfg.timeout_seconds, auth=self._auth)
            return Client(sse_cm, **common)
        http = httpx2.AsyncClient(
            transport=self._transport,
            auth=self._auth,
            headers=self._headers,
            timeout=httpx2.Timeout(cfg.timeout_seconds, read=max(cfg.timeout_seconds, 300.0)),
            follow_redirects=False,
            event_hooks={"response": [self._note_status]},
        )
        return _ClosingHttp(Client(streamable_http_client(cfg.url, http_client=http), **common), http, cfg.url)

    async def _note_status(self, response: httpx2.Response) -> None:
        self._note_code(response.status_code)

    def _note_code(self, status: int) -> None:
        self.http_status = status if status >= 400 else None

    def _ended(self, why: str) -> None:
        logger.warning("upstream '%s': %s; its connection was ended", self.name, why)
        self._ended_why = why

    def _login_needed(self) -> str | None:
        """Why mcp-guard's own grant could not authorise the request (only a person can log in again)."""
        said = getattr(self._auth, "needs_login", None)
        return said if isinstance(said, str) else None

    def _with_status(self, detail: str) -> str:
        status = self.http_status
        if status is None or f"HTTP {status}" in detail:
            return detail
        hint = {401: " (token missing, invalid or expired)", 403: " (token lacks a scope)"}.get(status, "")
        return f"{detail}: HTTP {status}{hint}"

    def _stdio_params(self) -> StdioServerParameters:
        cfg = self.config
        if cfg.builtin is not None:
            # The built-in sandbox runs as a child process like any stdio server, so it is
            # exercised through the same real transport and can never share our memory.
            # The SDK hands children only a safe default environment; the child must still find
            # this package when it runs from a source checkout rather than an install.
            package_root = str(Path(__file__).resolve().parent.parent)
            return StdioServerParameters(
                command=sys.executable,
                args=["-m", "proxy.backends.sandbox", "--stdio"],
                env={"PYTHONPATH": package_root},
            )
        assert cfg.command is not None
        return StdioServerParameters(
            command=cfg.command[0], args=list(cfg.command[1:]), env=dict(cfg.env) or None, cwd=cfg.cwd
        )

    async def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        self._client = None

    def _mark_broken(self, stop: anyio.Event | None) -> None:
        # Only the connection that failed is dropped; a newer one opened meanwhile stays.
        if stop is not None and stop is self._stop:
            stop.set()
            self._client = None
            # What answers next may be a new upstream (restarted, redeployed) whose tools differ, and it
            # announces no change: the next call lists again before it is classified, so pins see the
            # new definitions and a tool that is gone is not forwarded (found by tests/soak).
            self._forget_listings()

    def _forget_listings(self) -> None:
        self.tools.clear()
        self.others.clear()
        self._others_at.clear()

    # -- requests --------------------------------------------------------------------------------

    async def request(self, fn: Callable[[ClientSession], Awaitable[T]], *, retry: bool = False) -> T:
        """Run `fn` on the session; map connection failures to `UpstreamUnavailable`.

        `retry` reopens and repeats once after a connection failure: only for requests that
        are safe to repeat (listings, reads). A tool call is never repeated by the proxy.
        """
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            session = await self.session()
            stop = self._stop
            self.in_flight += 1
            try:
                return await fn(session)
            except MCPError as exc:
                if not_mcp(exc):
                    raise UpstreamUnavailable(self.name, "it sent a response that is not valid MCP") from None
                if not self._connection_level(exc):
                    raise  # the upstream answered this request with an error; the connection is fine
                self._mark_broken(stop)
                if attempt + 1 == attempts:
                    detail = self._login_needed() or self._ended_why or self._with_status(upstream_error_kind(exc))
                    raise UpstreamUnavailable(self.name, detail, upstream_text(exc)) from None
            except (ValidationError, NotMCP):
                # The SDK could not read the answer; pydantic's message quotes the upstream's values,
                # so none of it is passed on.  The connection itself is fine, unless the answer was an
                # HTTP error (a 401 whose body is no JSON-RPC): then its status is what a person needs.
                if self.http_status is not None:
                    self._mark_broken(stop)
                    raise UpstreamUnavailable(self.name, self._with_status("it refused the request")) from None
                raise UpstreamUnavailable(self.name, "it sent a response that is not valid MCP") from None
            except (httpx2.HTTPError, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                self._mark_broken(stop)
                if attempt + 1 == attempts:
                    raise UpstreamUnavailable(self.name, self._login_needed() or describe(exc)) from None
            finally:
                self.in_flight -= 1
                self.last_used = time.monotonic()
        raise AssertionError("unreachable")

    async def modern(self) -> bool:
        """Whether this upstream speaks the 2026-07-28 era (connecting first if need be)."""
        return speaks_modern(await self.session())

    def _connection_level(self, exc: MCPError) -> bool:
        """An error that says the connection, not the request, failed: the transport gave up, the HTTP
        exchange failed (the SDK then says only "Server returned an error response"), or the upstream
        forgot our session (it restarted)."""
        if sdk_said(exc):
            return True
        # An HTTP error whose body was a JSON-RPC error is the upstream answering this request; the SDK
        # says only this when the body was something else.
        if self.http_status is not None and exc.message in ("Server returned an error response", "Not Found"):
            return True
        # A handshake-era upstream that restarted answers our old session id with HTTP 404 and a JSON-RPC
        # error body, which the SDK passes on as is (the Python and TypeScript servers say "Session not
        # found"), not as its own "Session terminated". Without this the dead session was kept and every
        # later request failed until mcp-guard restarted (found by tests/soak).
        return exc.message == "Session not found" or (
            exc.code == INVALID_REQUEST and exc.message == "Session terminated"
        )

    async def list_all_tools(self) -> dict[str, types.Tool]:
        """Every tool over every page; refreshes the cache the pipeline classifies calls with."""
        self.tools = await self.request(lambda s: walk(s, "tools"), retry=True)
        self._listed_at = time.monotonic()
        if self.listed is not None:
            self.listed(self.name, "tools", self.tools)
        return self.tools

    async def list_all(self, kind: str) -> dict[str, Any]:
        """Every prompt or resource template over every page (`kind` "prompts" or
        "resource_templates"; none when the upstream does not offer them)."""
        capability = "prompts" if kind == "prompts" else "resources"
        entries = await self.request(lambda s: walk(s, kind), retry=True) if await self._offers(capability) else {}
        self.others[kind] = entries
        self._others_at[kind] = time.monotonic()
        if self.listed is not None:
            self.listed(self.name, kind, entries)
        return entries

    async def listed_now(self, kind: str) -> dict[str, Any]:
        """The prompts or resource templates as listed within the last TOOLS_TTL seconds (listing again
        if not)."""
        if time.monotonic() - self._others_at.get(kind, -TOOLS_TTL - 1) > TOOLS_TTL:
            return await self.list_all(kind)
        return self.others.get(kind, {})

    async def _offers(self, capability: str) -> bool:
        caps = (await self.session()).server_capabilities
        return caps is None or getattr(caps, capability, None) is not None

    async def tool(self, name: str) -> types.Tool | None:
        """The upstream's definition of `name`, listing again when it is not known yet."""
        tool = self.tools.get(name)
        # Listed again after a while: a 2026-07-28 upstream that was replaced between two calls fails
        # no request, so nothing else would show its changed tools to the pins and the catalog.
        if tool is None or time.monotonic() - self._listed_at > TOOLS_TTL:
            tool = (await self.list_all_tools()).get(name)
        return tool

    def instructions(self) -> str | None:
        client = self._client
        return client.session.instructions if client is not None else None

    def capabilities(self) -> types.ServerCapabilities | None:
        client = self._client
        return client.session.server_capabilities if client is not None else None

    def answers_inline(self) -> bool:
        """Whether a call's notifications have all been handled by the time its result is returned:
        so on the direct path (upstream_wire); the SDK's dispatcher runs each in a task of its own."""
        client = self._client
        return client is not None and upstream_wire.direct(client.session) is not None


class _ClosingHttp:
    """Enter a `Client` and close the httpx2 client we made for it afterwards."""

    def __init__(self, client: Client, http: httpx2.AsyncClient, url: str) -> None:
        self._client = client
        self.http = http  # the transport's pooled client, which the direct path shares
        self.url = url

    async def __aenter__(self) -> Client:
        await self.http.__aenter__()
        try:
            return await self._client.__aenter__()
        except BaseException:
            await self.http.__aexit__(None, None, None)
            raise

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self._client.__aexit__(*exc)
        finally:
            await self.http.__aexit__(None, None, None)
