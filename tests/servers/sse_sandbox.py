"""The SMSAPI sandbox over the deprecated HTTP+SSE transport (GET /sse, POST /messages/), for the fallback test."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mcp.server.sse import SseServerTransport
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from proxy.backends.sandbox import build_sandbox
from proxy.netutil import bind, run_until_signalled, serve_asgi


def main() -> int:
    record = sys.argv[sys.argv.index("--record") + 1] if "--record" in sys.argv else None
    server = build_sandbox(record)
    sse = SseServerTransport("/messages/")

    async def handle_sse(request: Request) -> Response:
        async with sse.connect_sse(request.scope, request.receive, request._send) as (read, write):
            await server.run(read, write, server.create_initialization_options())
        return Response()

    app = Starlette(
        routes=[Route("/sse", handle_sse, methods=["GET"]), Mount("/messages/", app=sse.handle_post_message)]
    )
    sock = bind("127.0.0.1", 0)
    return run_until_signalled(
        lambda: serve_asgi(app, sock, announce=lambda url: f"sse sandbox: SSE endpoint {url}/sse"), "sse sandbox"
    )


if __name__ == "__main__":
    raise SystemExit(main())
