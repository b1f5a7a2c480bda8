"""Serving an ASGI app on a socket we bind ourselves, so port 0 works and callers learn the real port."""

from __future__ import annotations

import importlib.util
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import uvicorn
from starlette.types import ASGIApp

T = TypeVar("T")

# uvloop and httptools are the event loop and HTTP parser uvicorn is built for; each saves a share
# of every call's CPU (benchmarks/README.md). Where a platform has no wheel the pure-Python ones serve.
_UVLOOP = importlib.util.find_spec("uvloop") is not None
_HTTPTOOLS = importlib.util.find_spec("httptools") is not None


def run_async(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`anyio.run` on uvloop where it is installed."""
    return anyio.run(fn, *args, backend_options={"use_uvloop": _UVLOOP})


def bind(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket; port 0 asks the kernel for a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: with protocol 0 asyncio skips TCP_NODELAY on accepted connections, and a
    # response written as headers then body waits ~40 ms for the peer's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=3,
        http="httptools" if _HTTPTOOLS else "h11",
    )
    server = uvicorn.Server(config)
    if announce is not None:
        print(announce(base_url(sock)), file=sys.stderr, flush=True)
    await server.serve(sockets=[sock])


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_until_signalled(serve: Callable[[], Awaitable[None]], label: str) -> int:
    """Run `serve` until it ends, Ctrl-C or SIGTERM; a clean exit either way, never a traceback.

    Both signals raise KeyboardInterrupt, caught here. uvicorn shuts down gracefully on either
    and then re-raises the signal, which lands in this handler. A handler that is not
    `signal.default_int_handler` also keeps asyncio's runner from installing its own SIGINT
    handler, which cancels the main task and made uvicorn log a traceback when Ctrl-C arrived
    during startup.
    """
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job keeps ignoring Ctrl-C
        signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run_async(serve)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"{label}: {exc}", file=sys.stderr)
        return 2
    return 0
