"""A plain forwarding MCP proxy built with the `mcp` SDK alone: the peer mcp-guard is measured against.

    python benchmarks/plain_proxy.py --upstream URL [--port 0]

One low-level `Server` on Streamable HTTP (both protocol eras, like mcp-guard) forwarding
`tools/list` and `tools/call` to one upstream `Client`: no policy, no guards, no sanitising,
no envelope, no audit. Whatever mcp-guard costs beyond this is the cost of its guards. Its
upstream connection is made like mcp-guard's (one shared client, default era, no cache, a
`get_tool_input_schema` so 2026-era calls need no extra listing), so the comparison is fair.
Announces "plain-proxy: MCP endpoint URL/" on stderr once listening. Serving uses only the SDK,
uvicorn and the standard library (nothing from mcp-guard), as anyone building such a proxy would.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp.types as types
import uvicorn
from mcp import Client
from mcp.server import Server, ServerRequestContext
from starlette.types import ASGIApp


class Forwarder:
    """The one upstream client, opened by the server's lifespan, and the schemas it listed."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.client: Client | None = None
        self.schemas: dict[str, Mapping[str, Any]] = {}

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Forwarder]:
        async with Client(self.upstream, cache=None) as client:
            self.client = client
            await self.refresh(None)
            yield self

    async def refresh(self, cursor: str | None) -> types.ListToolsResult:
        assert self.client is not None
        page = await self.client.session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
        self.schemas.update((t.name, t.input_schema) for t in page.tools)
        return page


def build(upstream: str) -> Server[Forwarder]:
    forwarder = Forwarder(upstream)

    async def on_list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        page = await forwarder.refresh(params.cursor if params else None)
        return types.ListToolsResult(tools=page.tools, next_cursor=page.next_cursor)

    async def on_call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        assert forwarder.client is not None
        return await forwarder.client.session.call_tool(params.name, dict(params.arguments or {}))

    @asynccontextmanager
    async def lifespan(_: Server[Forwarder]) -> AsyncIterator[Forwarder]:
        async with forwarder.running() as running:
            yield running

    return Server(
        "plain-proxy",
        version="1.0.0",
        lifespan=lifespan,
        get_tool_input_schema=forwarder.schemas.get,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )


def listen(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP,
    # and without it every small response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(app: ASGIApp, sock: socket.socket) -> None:
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3))
    print(f"plain-proxy: MCP endpoint http://{host}:{port}/", file=sys.stderr, flush=True)
    await server.serve(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A plain forwarding MCP proxy (no guards), for benchmarks.")
    parser.add_argument("--upstream", required=True, help="the upstream's Streamable HTTP URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    app = build(args.upstream).streamable_http_app(streamable_http_path="/", host=args.host)
    sock = listen(args.host, args.port)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM ends it like Ctrl-C: quietly
    try:
        anyio.run(serve, app, sock)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
