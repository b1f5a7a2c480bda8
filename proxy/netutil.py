"""Serving an ASGI app on a socket we bind ourselves, so port 0 works and callers learn the real port."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp


def bind(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket; port 0 asks the kernel for a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve_asgi(
    app: ASGIApp,
    sock: socket.socket,
    *,
    announce: Callable[[str], str] | None = None,
) -> None:
    """Serve `app` on an already-bound socket until cancelled or signalled.

    `announce(base_url)` returns a line printed to stderr once the socket is live;
    tests and humans read the real port from it.
    """
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    if announce is not None:
        print(announce(base_url(sock)), file=sys.stderr, flush=True)
    await server.serve(sockets=[sock])
