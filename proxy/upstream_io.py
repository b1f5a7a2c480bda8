"""The sockets under the upstream HTTP client: httpcore2's network backend on asyncio's own transports.

httpx2's default backend reaches the socket through anyio streams, which wrap every read and write
in a timeout scope, a cancellation checkpoint and an exception map; on a loopback upstream that
wrapping costs more than the bytes. This backend is the same contract (`AsyncNetworkBackend`,
httpcore2's extension point) written on an `asyncio.Protocol`: small writes are held until the next
read (a request's head and body go out in one send), a read returns what has arrived or waits for
the next chunk, and timeouts map to httpcore2's own exceptions as the anyio backend maps them. TLS
goes through `loop.start_tls`.
"""

# httpcore2's interface passes each timeout as a parameter; the methods honour it as it asks.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import anyio
from httpcore2 import ConnectError, ConnectTimeout, ReadError, ReadTimeout, WriteError, WriteTimeout
from httpcore2._backends.anyio import AnyIOBackend
from httpcore2._backends.base import SOCKET_OPTION, AsyncNetworkBackend, AsyncNetworkStream
from httpcore2._utils import is_socket_readable

_HIGH_WATER = 64 * 1024  # bytes buffered for writing before a write waits for the socket to drain
# httpcore2 writes a request's head and its body apart, then reads the answer: writes up to this size
# are held until the next read, so a small request goes out in one send and arrives as one segment.
_HOLD = 16 * 1024


class _Protocol(asyncio.Protocol):
    """Arrived bytes in order, the end of the stream, and write flow control."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def _wait(future: asyncio.Future[None], timeout: float | None, timeout_error: type[Exception]) -> None:
    """Wait for `future` up to `timeout` seconds; on the deadline raise `timeout_error`."""
    if timeout is None:
        await future
        return
    loop = asyncio.get_running_loop()
    handle = loop.call_later(timeout, lambda: future.done() or future.set_exception(timeout_error()))
    try:
        await future
    finally:
        handle.cancel()


class AsyncioStream(AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._held: list[bytes] = []
        self._held_bytes = 0

    def _release(self) -> None:
        """Hand what is held to the transport (which never blocks for less than its high-water mark)."""
        if self._held:
            self._transport.write(b"".join(self._held) if len(self._held) > 1 else self._held[0])
            self._held.clear()
            self._held_bytes = 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._release()
        protocol = self._protocol
        if not protocol.chunks and not protocol.eof:
            protocol.waiter = asyncio.get_running_loop().create_future()
            try:
                await _wait(protocol.waiter, timeout, ReadTimeout)
            finally:
                protocol.waiter = None
        if protocol.chunks:
            chunk = protocol.chunks.popleft()
            if len(chunk) > max_bytes:
                protocol.chunks.appendleft(chunk[max_bytes:])
                chunk = chunk[:max_bytes]
            return chunk
        if protocol.error is not None:
            raise ReadError(str(protocol.error) or type(protocol.error).__name__)
        return b""  # the peer closed: httpcore2 reads that as the end

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self._protocol
        if self._transport.is_closing():
            raise WriteError(str(protocol.error) if protocol.error else "the connection is closed")
        if self._held_bytes + len(buffer) <= _HOLD:
            self._held.append(buffer)
            self._held_bytes += len(buffer)
            return
        self._release()
        self._transport.write(buffer)
        if protocol.paused:
            protocol.drained = asyncio.get_running_loop().create_future()
            try:
                await _wait(protocol.drained, timeout, WriteTimeout)
            finally:
                protocol.drained = None
            if protocol.error is not None:
                raise WriteError(str(protocol.error))

    async def aclose(self) -> None:
        self._release()
        self._transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> AsyncNetworkStream:
        self._release()  # what was written before the upgrade goes out in the clear, as it was written
        loop = asyncio.get_running_loop()
        try:
            with anyio.fail_after(timeout):
                transport = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            self._transport.close()
            raise ConnectTimeout(str(exc)) from exc
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise ConnectError(str(exc)) from exc
        if transport is None:
            raise ConnectError("the TLS handshake ended without a connection")
        self._protocol.transport = transport
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        transport = self._transport
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        if info == "is_readable":
            # An idle pooled connection with bytes waiting or a closed end is no longer reusable; the
            # socket is asked too, for an end the kernel has but the loop has not delivered yet.
            protocol = self._protocol
            if protocol.chunks or protocol.eof or transport.is_closing():
                return True
            return is_socket_readable(transport.get_extra_info("socket"))
        return None


class AsyncioBackend(AsyncNetworkBackend):
    """TCP on asyncio transports; Unix sockets through httpcore2's own anyio backend."""

    def __init__(self) -> None:
        self._fallback = AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            with anyio.fail_after(timeout):
                transport, protocol = await loop.create_connection(
                    _Protocol, host, port, local_addr=(local_address, 0) if local_address else None
                )
        except TimeoutError as exc:
            raise ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SOCKET_OPTION] | None = None
    ) -> AsyncNetworkStream:
        return await self._fallback.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)
