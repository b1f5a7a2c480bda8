"""Serving an ASGI app on a socket we bind ourselves, so port 0 works and callers learn the real port."""

from __future__ import annotations

import asyncio
import gc
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
YOUNG_GC_THRESHOLD = 7000
_HTTPTOOLS = importlib.util.find_spec("httptools") is not None

# A client has this long, from connecting (or from its previous response), to send a whole request
# head. uvicorn bounds only the idle time after a response, so without this a client that never
# finishes its headers (slowloris) holds its connection and socket for ever.
HEADER_TIMEOUT = 10.0
# The most a request head (request line and headers) may take. httptools has no limit of its own: a
# client could grow one header without end. 64 KiB is four times the common servers' defaults, room
# for large bearer tokens and cookies.
MAX_HEAD_BYTES = 64 * 1024


class _HeadLimits:
    """What a connection of ours allows a request head: time (`head_timeout`) and size (`max_head_bytes`).

    Mixed into uvicorn's HTTP protocol. A connection is waiting for a head from the moment it is made
    or has answered its last request until a new request's head is complete (uvicorn then makes a
    new request cycle); a waiting connection not done by the deadline is closed, with a 408 if it
    had started a head. The size is counted by the parser's own events where they exist (httptools):
    from the read after the one that began the message, so a head may overrun the limit by at most
    one read (256 KiB) before it is refused with a 431.
    """

    head_timeout: float = HEADER_TIMEOUT
    max_head_bytes: int = MAX_HEAD_BYTES
    _deadline: asyncio.TimerHandle | None = None
    _in_head = False  # a message has begun and its head is not complete yet (httptools)
    _began = False  # ... and it began in the read being parsed now
    _head_bytes = 0
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        self._began = False
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not before:  # a request head is complete: its request runs
            self._disarm()
        if self._in_head and not self._began:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431)

    def on_message_begin(self) -> None:
        super().on_message_begin()  # type: ignore[misc]
        self._in_head, self._began, self._head_bytes = True, True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        # Waiting again, unless a pipelined request's head was already complete (it runs now).
        if self.cycle.response_complete and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        if self._deadline is None and self.head_timeout > 0:
            self._deadline = self.loop.call_later(self.head_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self._in_head:
            self._refuse(408)
        else:
            self.transport.close()

    def _refuse(self, status: int) -> None:
        """Answer `status` and close, or just close while a response is under way on this connection."""
        self._disarm()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
            body = b"mcp-guard: " + reason.lower()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
            )
        self.transport.close()


def _protocol(head_timeout: float, max_head_bytes: int) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools, else h11) with `_HeadLimits`."""
    if _HTTPTOOLS:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base  # bounds head size itself
    limits = {"head_timeout": head_timeout, "max_head_bytes": max_head_bytes}
    return type("HeadLimitedProtocol", (_HeadLimits, base), limits)


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
    header_timeout: float = HEADER_TIMEOUT,
) -> None:
    """Serve `app` on an already-bound socket until cancelled or signalled.

    `announce(base_url)` returns a line printed to stderr once the socket is live;
    tests and humans read the real port from it. `header_timeout` bounds how long a client may take
    to send a request head (0: no bound).
    """
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        access_log=False,
        http=_protocol(header_timeout, MAX_HEAD_BYTES),
        # No websockets are served: an Upgrade request is answered as plain HTTP, never handed over.
        ws="none",
        # mcp-guard reads no client address or scheme; X-Forwarded-* from a loopback neighbour need
        # not rewrite them, and the middleware costs every request.
        proxy_headers=False,
        # An idle keep-alive connection is closed after 5 s: long enough to reuse for a burst of calls,
        # short enough that idle sockets do not pile up (a client reconnects cheaply).
        timeout_keep_alive=5,
        # On shutdown, in-flight calls get 3 s to finish; then open streams are cut so exit is prompt.
        timeout_graceful_shutdown=3,
        # The h11 fallback's own head-size bound, the same as httptools gets from `_HeadLimits`.
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        # No global connection cap (limit_concurrency): its 503 would turn away every client once one
        # floods; per-principal caps answer the flooder alone, and header_timeout frees stalled sockets.
    )
    server = uvicorn.Server(config)
    settle_heap()
    if announce is not None:
        print(announce(base_url(sock)), file=sys.stderr, flush=True)
    await server.serve(sockets=[sock])


def settle_heap() -> None:
    """Exempt what start-up built from garbage collection, and collect the young less often.

    Under load the collector's oldest generation walked every object in the process every few
    seconds, nearly all of them the start-up's (modules, models, schemas, the policy) and alive for
    good; and the youngest was collected every 700 allocations, ~100 times a second. Together that
    was ~6 % of the CPU of a call (benchmarks/README.md). A call's garbage is still collected: what
    refcounting frees at once never waits, and cycles wait for 7000 allocations instead of 700.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


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
