"""The upstream HTTP client's sockets (proxy/upstream_io.py) keep httpx2's contract: bytes exact in
both directions past the flow-control marks, connections reused and retired, httpx2's exceptions for
timeouts and refusals, a cancelled read that leaves the pool usable, and TLS.

The server is a real one on a loopback port, written on asyncio streams so that each test can say
exactly what it sends and count the connections it gets.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import httpcore2
import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.upstream_io import AsyncioBackend, AsyncioStream
from proxy.upstream_transport import SharedTransport

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"), "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """mcp-guard serves on uvloop where it is installed, else on asyncio's own loop: both, here."""
    return request.param


Reply = Callable[[bytes, bytes], bytes | None]  # (request head, body) → response bytes, or None: stay silent


class Upstream:
    """A loopback HTTP/1.1 server answering each request with `reply`; counts its connections."""

    def __init__(self, reply: Reply, close_after_reply: bool = False) -> None:
        self.reply = reply
        self.close_after_reply = close_after_reply
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                body = await reader.readexactly(length)
                answer = self.reply(head, body)
                if answer is None:
                    await asyncio.sleep(3600)
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after_reply:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def drop_idle(self) -> None:
        for writer in self.writers:
            writer.close()


@asynccontextmanager
async def serving(upstream: Upstream, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}/mcp"
    finally:
        server.close()
        upstream.drop_idle()


def ok(body: bytes, content_type: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (content_type, len(body), body)


def digest_reply(head: bytes, body: bytes) -> bytes:
    """Echo the request body's digest, followed by a megabyte derived from it."""
    seed = hashlib.sha256(body).hexdigest().encode()
    return ok(seed + b"\n" + seed * (1024 * 1024 // len(seed)))


async def test_bytes_arrive_exact_in_both_directions_past_the_buffer_marks() -> None:
    upstream = Upstream(digest_reply)
    sent = bytes(range(256)) * 1200  # 300 KB: more than the write buffer holds before it must drain
    async with serving(upstream) as url, httpx2.AsyncClient(transport=SharedTransport()) as http:
        for _ in range(3):
            response = await http.post(url, content=sent)
            seed = hashlib.sha256(sent).hexdigest().encode()
            assert response.status_code == 200
            assert response.content == seed + b"\n" + seed * (1024 * 1024 // len(seed))
    assert upstream.connections == 1  # kept alive and reused


class CountingTransport:
    """The real transport, with every write it is handed kept."""

    def __init__(self, inner: asyncio.Transport) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_small_request_goes_out_in_one_write_and_a_large_one_arrives_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transports: list[CountingTransport] = []
    original = AsyncioStream.__init__

    def counting(self: AsyncioStream, transport: asyncio.Transport, protocol: Any) -> None:
        transports.append(counted := CountingTransport(transport))
        original(self, cast(asyncio.Transport, counted), protocol)

    monkeypatch.setattr(AsyncioStream, "__init__", counting)
    upstream = Upstream(digest_reply)
    large = bytes(range(256)) * 100  # 25 KB: past what is held back
    async with serving(upstream) as url, httpx2.AsyncClient(transport=SharedTransport()) as http:
        response = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert response.status_code == 200
        (write,) = transports[0].writes  # the head and the body together, sent as the answer is awaited
        assert write.startswith(b"POST /mcp HTTP/1.1\r\n") and write.endswith(b'"method":"ping"}')
        transports[0].writes.clear()
        response = await http.post(url, content=large)
        seed = hashlib.sha256(large).hexdigest().encode()
        assert response.content.startswith(seed + b"\n")
        assert b"".join(transports[0].writes).endswith(large) and len(transports[0].writes) == 2
    assert upstream.connections == 1


async def test_a_connection_the_upstream_closed_while_idle_is_not_reused() -> None:
    upstream = Upstream(lambda head, body: ok(b"{}"))
    async with serving(upstream) as url, httpx2.AsyncClient(transport=SharedTransport()) as http:
        assert (await http.post(url, content=b"1")).status_code == 200
        upstream.drop_idle()
        with anyio.fail_after(5):
            await upstream.writers[0].wait_closed()
        # The closed end is seen before the request is written, so the request goes on a new one.
        assert (await http.post(url, content=b"2")).status_code == 200
    assert upstream.connections == 2


async def test_an_answer_cut_short_is_a_read_error_and_the_pool_recovers() -> None:
    cut = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"partial"'
    replies = iter([cut, ok(b"{}")])
    upstream = Upstream(lambda head, body: next(replies), close_after_reply=True)
    async with serving(upstream) as url, httpx2.AsyncClient(transport=SharedTransport()) as http:
        with pytest.raises(httpx2.RemoteProtocolError):
            await http.post(url, content=b"x")
        assert (await http.post(url, content=b"y")).status_code == 200


async def test_timeouts_and_refusals_are_httpx2_s_own_exceptions() -> None:
    upstream = Upstream(lambda head, body: None)  # never answers
    async with serving(upstream) as url:
        async with httpx2.AsyncClient(transport=SharedTransport(), timeout=httpx2.Timeout(5, read=0.3)) as http:
            with pytest.raises(httpx2.ReadTimeout):
                await http.post(url, content=b"x")
    # A port nobody listens on any more.
    async with serving(Upstream(lambda head, body: ok(b"{}"))) as gone:
        pass
    async with httpx2.AsyncClient(transport=SharedTransport()) as http:
        with pytest.raises(httpx2.ConnectError):
            await http.post(gone, content=b"x")


async def test_a_cancelled_request_leaves_the_pool_usable() -> None:
    silent_once = iter([None])
    upstream = Upstream(lambda head, body: next(silent_once, ok(b"{}")))
    async with serving(upstream) as url, httpx2.AsyncClient(transport=SharedTransport()) as http:
        with anyio.move_on_after(0.3) as waiting:
            await http.post(url, content=b"x")
        assert waiting.cancelled_caught
        assert (await http.post(url, content=b"y")).status_code == 200
    assert upstream.connections == 2  # the cancelled one was not put back


def self_signed(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


async def test_tls_through_start_tls_verifies_the_certificate(tmp_path: Path) -> None:
    server_tls, client_tls = self_signed(tmp_path)
    upstream = Upstream(digest_reply)
    async with serving(upstream, server_tls) as url:
        url = url.replace("127.0.0.1", "localhost")
        pool = httpcore2.AsyncConnectionPool(ssl_context=client_tls, network_backend=AsyncioBackend())
        async with pool:
            response = await pool.request("POST", url, content=b"over tls")
            seed = hashlib.sha256(b"over tls").hexdigest().encode()
            assert response.status == 200 and response.content.startswith(seed + b"\n")
            assert len(response.content) > 1024 * 1024 - 100
        # A client that does not trust the certificate is refused before any request is sent.
        untrusting = httpcore2.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(), network_backend=AsyncioBackend()
        )
        async with untrusting:
            with pytest.raises(httpcore2.ConnectError):
                await untrusting.request("POST", url, content=b"x")
    assert upstream.connections == 1  # the refused handshake never became a connection to serve


def test_the_shared_transport_runs_on_this_backend() -> None:
    # With the httpx2 this project installs; another release may keep its own backend (slower, same contract).
    pool = SharedTransport()._pool._pool
    assert isinstance(pool, httpcore2.AsyncConnectionPool)
    assert isinstance(pool._network_backend, AsyncioBackend)
