"""stdio serving, for clients that launch a command (Claude Desktop).

The SDK drops a line it cannot parse; JSON-RPC asks for an error reply (id null), so a client
that sent garbage learns why nothing happened, and the proxy keeps serving.
"""

from __future__ import annotations

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
from pydantic import ValidationError

from proxy.server import Gateway, build_server


def _error_for(exc: Exception) -> JSONRPCError:
    if isinstance(exc, ValidationError) and not any(e["type"] == "json_invalid" for e in exc.errors()):
        error = ErrorData(code=INVALID_REQUEST, message="Invalid Request: not a JSON-RPC message")
    else:
        error = ErrorData(code=PARSE_ERROR, message="Parse error: the line is not valid JSON")
    return JSONRPCError(jsonrpc="2.0", id=None, error=error)


async def _answer_garbage(
    source: ObjectReceiveStream[SessionMessage | Exception],
    sink: ObjectSendStream[SessionMessage | Exception],
    write: ObjectSendStream[SessionMessage],
) -> None:
    async with sink:
        async for item in source:
            if isinstance(item, Exception):
                await write.send(SessionMessage(_error_for(item)))
            else:
                await sink.send(item)


async def serve_stdio(gateway: Gateway, *, instructions: str | None = None) -> None:
    server = build_server(gateway, instructions=instructions)
    async with stdio_server() as (read, write):
        sink, filtered = anyio.create_memory_object_stream[SessionMessage | Exception]()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_answer_garbage, read, sink, write)
            await server.run(filtered, write, server.create_initialization_options())
            tg.cancel_scope.cancel()
