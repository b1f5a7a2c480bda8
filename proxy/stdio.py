"""stdio serving, for clients that launch a command (Claude Desktop).

The SDK's stdio transport reads the client's lines as text with undecodable bytes replaced (so
altered arguments would be forwarded as if the client had sent them), takes a request whose id is
neither a string nor an integer for a notification (no answer: the client waits for ever), holds a
line of any length, and drops a line it cannot parse. Here the client's lines are read as bytes,
each at most `LINE_LIMIT` (a line is what an HTTP request body is, and has its limit), and a line
refused for any of these gets a JSON-RPC error, as over HTTP, so the client learns why and the
proxy keeps serving. Its id is null, but for a request that is only not UTF-8 (see `_id_of`).
The SDK's transport still writes the answers and keeps the process's own fd 1 off the wire.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from typing import BinaryIO

import anyio
import anyio.to_thread
import pydantic_core
from anyio.abc import ObjectSendStream
from mcp.server import stdio as sdk_stdio
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError, jsonrpc_message_adapter
from pydantic import ValidationError

from proxy.fastpath_wire import plain_id
from proxy.gateway import Gateway
from proxy.http import MAX_BODY_BYTES
from proxy.server import build_server

LINE_LIMIT = MAX_BODY_BYTES
_SKIP = 65536  # how much of an overlong line is read (and dropped) at a time


def _refusal(code: int, message: str, request_id: str | int | None = None) -> JSONRPCError:
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=message))


def parse_line(line: bytes) -> SessionMessage | JSONRPCError:
    """The client's message on `line`, or the error that answers it (parsed as the SDK's HTTP
    transport parses a body: `pydantic_core`, then its JSON-RPC model). The client's own messages
    include errors (its answer to a question of ours): only a bare `JSONRPCError` is a refusal."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return _refusal(PARSE_ERROR, "Parse error: the line is not valid UTF-8", _id_of(line))
    try:
        raw = pydantic_core.from_json(line)
    except ValueError:
        return _refusal(PARSE_ERROR, "Parse error: the line is not valid JSON")
    if isinstance(raw, dict) and "method" in raw and "id" in raw and not plain_id(raw["id"]):
        return _refusal(INVALID_REQUEST, "Invalid Request: a request id must be a string or an integer")
    try:
        return SessionMessage(jsonrpc_message_adapter.validate_python(raw, by_name=False))
    except ValidationError:
        return _refusal(INVALID_REQUEST, "Invalid Request: not a JSON-RPC message")


def _id_of(line: bytes) -> str | int | None:
    """The id of a request whose line is JSON but not UTF-8, when its own bytes are: a stdio client
    ties an answer to its request by id alone, and would wait for ever on an error with id null."""
    try:
        raw = json.loads(line.decode("utf-8", "surrogateescape"))  # the bad bytes, kept apart
    except (ValueError, RecursionError):
        return None
    request_id = raw.get("id") if isinstance(raw, dict) else None
    if not plain_id(request_id):
        return None
    if isinstance(request_id, str):
        try:
            request_id.encode("utf-8")
        except UnicodeEncodeError:
            return None  # the bad bytes are in the id itself
    return request_id


async def read_lines(stdin: BinaryIO, limit: int = LINE_LIMIT) -> AsyncIterator[bytes | None]:
    """Each line of `stdin` (a last one may lack its newline); None for a line past `limit` bytes,
    which is read on to its end and dropped, never held whole. Read in a worker thread, as the SDK
    reads stdin."""
    while True:
        line = await anyio.to_thread.run_sync(stdin.readline, limit + 1)
        if not line:
            return
        if line.endswith(b"\n") or len(line) <= limit:
            yield line
            continue
        while (rest := await anyio.to_thread.run_sync(stdin.readline, _SKIP)) and not rest.endswith(b"\n"):
            pass
        yield None


async def _read(
    stdin: BinaryIO,
    messages: ObjectSendStream[SessionMessage | Exception],
    write: ObjectSendStream[SessionMessage],
) -> None:
    too_long = f"Invalid Request: the line is larger than {LINE_LIMIT} bytes and was refused"
    async with messages:
        async for line in read_lines(stdin):
            message = _refusal(INVALID_REQUEST, too_long) if line is None else parse_line(line)
            if isinstance(message, SessionMessage):
                await messages.send(message)
            else:
                await write.send(SessionMessage(message))


class _NoLines:
    """The SDK's transport is handed no input: the lines are read here (`_read`)."""

    def __aiter__(self) -> _NoLines:
        return self

    async def __anext__(self) -> str:
        raise StopAsyncIteration


async def serve_stdio(gateway: Gateway, *, instructions: str | None = None) -> None:
    server = build_server(gateway, instructions=instructions)
    # The SDK's own claim of fd 0 (mcp is pinned): served from a private duplicate, fd 0 itself the
    # null device, so nothing the proxy starts can read the client's lines.
    binary, release = sdk_stdio._claim_fd(0, sys.stdin, "rb", sdk_stdio._open_stdin_diversion)
    try:
        async with stdio_server(stdin=_NoLines()) as (_, write):  # type: ignore[arg-type]
            sink, messages = anyio.create_memory_object_stream[SessionMessage | Exception]()
            async with anyio.create_task_group() as tg:
                tg.start_soon(_read, binary, sink, write)
                await server.run(messages, write, server.create_initialization_options())
                tg.cancel_scope.cancel()
    finally:
        if release is not None:
            release()
