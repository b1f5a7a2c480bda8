"""A stdio upstream's output, bounded: no line longer than `max_result_bytes` is ever assembled.

The SDK's stdio reader keeps what it has read until a newline comes, without a bound, and joins the
whole of it again for every chunk that arrives. A stdio server that writes one endless line (or a
100 MB answer) would therefore grow mcp-guard's memory without end and its CPU with the square of
the line. SPEC §9 bounds every buffer an upstream can grow, this channel too: `stdio_upstream`
is the SDK's own stdio transport with the server's stdout read through `LineBound`, which hands
the SDK whole lines only (so its join is linear) and ends the connection, in words that name the
limit, at the first line that would pass it. The call in flight then fails as an upstream failure,
and the next one starts the server afresh.

The SDK spawns the process inside `stdio_client` and offers no hook for its streams, so the spawn
function it calls is wrapped once, and acts only inside `stdio_upstream` (a context variable).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream
from mcp.client import stdio as sdk_stdio
from mcp.client._transport import TransportStreams
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.message import SessionMessage
from mcp_types import INTERNAL_ERROR, ErrorData, JSONRPCError

from proxy.fastpath_wire import plain_id
from proxy.upstream_errors import NOT_MCP
from proxy.upstream_transport import too_large

logger = logging.getLogger(__name__)

Overflow = Callable[[str], None]
"""Told, in mcp-guard's words, why the connection was ended."""


class LineBound(ByteReceiveStream):
    """A byte stream read as newline-ended lines, each at most `limit` bytes (newline excluded).

    `receive` answers one or more whole lines; a partial line waits for its end. The first line past
    `limit` calls `overflow` and ends the stream there (`anyio.EndOfStream`), which ends the SDK's
    reader and with it the session, so the call in flight fails now. Every later read ends too: the
    SDK drains a server's output before it tells the session, and a hostile server need never stop.
    """

    def __init__(self, inner: ByteReceiveStream, limit: int, overflow: Overflow) -> None:
        self._inner = inner
        self._limit = limit
        self._overflow = overflow
        self._held: list[bytes] = []  # the line read so far, not yet ended
        self._held_bytes = 0
        self._broken = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._broken:
            raise anyio.EndOfStream
        while True:
            chunk = await self._inner.receive(max_bytes)  # EndOfStream: a partial line is dropped, as the SDK does
            end = chunk.rfind(b"\n")
            if end < 0:
                self._held.append(chunk)
                self._held_bytes += len(chunk)
                self._check(self._held_bytes)
                continue
            self._check(self._held_bytes + chunk.find(b"\n"))
            if len(chunk) > self._limit:  # lines wholly inside this chunk may be long too
                start = chunk.find(b"\n") + 1
                while (stop := chunk.find(b"\n", start)) >= 0:
                    self._check(stop - start)
                    start = stop + 1
            rest = chunk[end + 1 :]
            self._check(len(rest))
            lines = b"".join([*self._held, chunk[: end + 1]]) if self._held else chunk[: end + 1]
            self._held = [rest] if rest else []
            self._held_bytes = len(rest)
            return lines

    def _check(self, line_bytes: int) -> None:
        if line_bytes <= self._limit:
            return
        self._broken = True
        self._held = []
        self._held_bytes = 0
        self._overflow(too_large(self._limit))
        raise anyio.EndOfStream

    async def aclose(self) -> None:
        await self._inner.aclose()

    @property
    def extra_attributes(self) -> Any:
        return self._inner.extra_attributes


# Inside `stdio_upstream`: what to do with the process the SDK has just spawned.
_BOUND: ContextVar[Callable[[Any], None] | None] = ContextVar("mcp_guard_stdio_bound", default=None)
_sdk_spawn = sdk_stdio._create_platform_compatible_process


async def _spawn(*args: Any, **kwargs: Any) -> Any:
    process = await _sdk_spawn(*args, **kwargs)
    bound = _BOUND.get()
    if bound is not None:
        bound(process)
    return process


sdk_stdio._create_platform_compatible_process = _spawn


_sdk_parse_line = sdk_stdio._parse_line


def _parse_line(line: str) -> Any:
    """The SDK's parse of one line; an answer to one of our requests that is not valid JSON-RPC
    becomes an error for that request.

    The SDK drops a line it cannot read, so the request it answered would wait for its timeout
    (30 s by default) and then blame the connection. A line that names the request by its `id` but
    carries neither a valid result nor a valid error fails that request now, in mcp-guard's words.
    """
    parsed = _sdk_parse_line(line)
    if not isinstance(parsed, Exception):
        return parsed
    try:
        message = json.loads(line)
    except ValueError:
        return parsed  # not JSON at all: a stray print, answering nothing we could name
    except RecursionError:
        # JSON nested past any reader's depth (a reader crashing on it would end the connection while
        # the call still waited). Its first "id" names the request: were that not the top-level one,
        # the upstream only fails another request of its own, which it could do by answering it.
        found = _FIRST_ID.search(line)
        message = {"id": json.loads(found.group(1))} if found else None
    if isinstance(message, dict) and "method" not in message and plain_id(message.get("id")):
        error = ErrorData(code=INTERNAL_ERROR, message="an answer that is not valid JSON-RPC", data=NOT_MCP)
        return SessionMessage(JSONRPCError(jsonrpc="2.0", id=message["id"], error=error))
    return parsed


_FIRST_ID = re.compile(r'"id"\s*:\s*(-?\d{1,18}|"[^"\\]{0,128}")')


sdk_stdio._parse_line = _parse_line


# A stdio server's stderr line is logged in pieces of at most this many bytes: the server's text
# never grows a buffer of ours without bound.
STDERR_LINE_BYTES = 4096


def _relay_stderr(fd: int, server: str) -> None:
    """A stdio server's stderr as mcp-guard's own log lines, until the server closes it.

    Inherited as is, its text went around the log's redaction (a server may print the credential
    the policy gave it) and added lines of its choosing to mcp-guard's stderr, which is the audit log
    without `audit.path` (a server may log a third party's message, line breaks and escapes and all).
    Each line is one record here: redacted like every record, control characters shown as escapes."""
    with open(fd, "rb") as stream:
        while piece := stream.readline(STDERR_LINE_BYTES):
            text = piece.decode("utf-8", "replace").rstrip("\r\n")
            if text:
                logger.warning("upstream '%s' (stderr): %s", server, text)


@asynccontextmanager
async def stdio_upstream(
    params: StdioServerParameters, limit: int, overflow: Overflow, server: str = "stdio"
) -> AsyncIterator[TransportStreams]:
    """The SDK's `stdio_client(params)`, its server's lines bounded by `limit` bytes, its stderr
    relayed into mcp-guard's log (`_relay_stderr`)."""
    read_end, write_end = os.pipe()
    errlog = os.fdopen(write_end, "w")
    threading.Thread(target=_relay_stderr, args=(read_end, server), name=f"stderr:{server}", daemon=True).start()

    def bound(process: Any) -> None:
        errlog.close()  # the server has its own copy: the relay ends when the server does
        stdout = getattr(process, "_stdout", None)
        if not isinstance(stdout, ByteReceiveStream):
            # Not anyio's asyncio process (where the SDK reads `process.stdout`): its output cannot be
            # bounded, so the server does not run at all.
            process.kill()
            raise RuntimeError("mcp-guard cannot bound this stdio server's output; not started")
        process._stdout = LineBound(stdout, limit, overflow)

    token = _BOUND.set(bound)
    try:
        async with stdio_client(params, errlog=errlog) as streams:
            _BOUND.reset(token)
            token = None
            yield streams
    finally:
        errlog.close()  # when the server never started, this ends the relay
        if token is not None:
            _BOUND.reset(token)
