"""The HTTP transport under every upstream connection: one pool per upstream, and answers capped
as they stream in, so an upstream cannot fill mcp-guard's memory with one result. `Lean` sends a
2026-07-28 POST on that pool past httpx2's client, for `upstream_wire`.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpcore2
import httpx2

from proxy.upstream_io import AsyncioBackend

# Every connection a burst opened stays for the next one (httpx2 keeps only 20 by default, so a
# burst of more calls than that closed and reopened the rest each time), and an idle one is retired
# before the 5 s after which common servers (uvicorn, Node's http) close it: a request sent on a
# connection the upstream is closing at that instant fails without an answer.
POOL_LIMITS = httpx2.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=4.0)


class SharedTransport(httpx2.AsyncBaseTransport):
    """An upstream's connection pool, lent to each credential's client: closing one of those clients
    leaves the pool to the others; the pool closes with the `UpstreamPool`."""

    def __init__(self, max_result_bytes: int = 16 * 1024 * 1024) -> None:
        self._pool = httpx2.AsyncHTTPTransport(limits=POOL_LIMITS)
        # httpx2's transport with httpcore2's pool on mcp-guard's asyncio backend (upstream_io.py): the
        # pool is the transport's only state, built here as httpx2 builds it but for the backend. httpx2
        # is not pinned: a release that keeps its pool elsewhere keeps its own backend, only slower.
        if isinstance(getattr(self._pool, "_pool", None), httpcore2.AsyncConnectionPool):
            self._pool._pool = httpcore2.AsyncConnectionPool(
                ssl_context=httpx2.create_ssl_context(),
                max_connections=POOL_LIMITS.max_connections,
                max_keepalive_connections=POOL_LIMITS.max_keepalive_connections,
                keepalive_expiry=POOL_LIMITS.keepalive_expiry,
                network_backend=AsyncioBackend(),
            )
        self._limit = max_result_bytes

    @property
    def pool(self) -> httpcore2.AsyncConnectionPool | None:
        """httpcore2's pool under httpx2's transport, where `post_json` can reach it."""
        pool = getattr(self._pool, "_pool", None)
        return pool if isinstance(pool, httpcore2.AsyncConnectionPool) else None

    async def post_json(
        self,
        url: httpcore2.URL,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeouts: dict[str, float | None],
        request: Callable[[], httpx2.Request],
    ) -> bytes | httpx2.Response:
        """POST `body` on httpcore2's pool without httpx2's client, request and response objects.

        The common answer, a 200 with an uncompressed JSON body that sets no cookie, comes back as its
        bytes, read and capped. Any other answer comes back unread, as the `httpx2.Response` this
        transport would have returned for `request()` (built only then), so the caller treats it as the
        SDK would. Failures are httpx2's exceptions, as from httpx2's own transport.
        """
        pool = self.pool
        assert pool is not None
        try:
            with _as_httpx2():
                answer = await pool.handle_async_request(
                    httpcore2.Request(b"POST", url, headers=headers, content=body, extensions={"timeout": timeouts})
                )
                if answer.status == 200 and _plain_json(answer.headers):
                    return await self._read(answer)
        except httpx2.RequestError as exc:
            exc.request = request()  # as httpx2's client attaches it
            raise
        built = request()
        response = httpx2.Response(
            answer.status,
            headers=answer.headers,
            stream=_CoreStream(answer),
            extensions=answer.extensions,
            request=built,
        )
        return await self._capped(response, built)

    async def _read(self, answer: httpcore2.Response) -> bytes:
        try:
            for name, value in answer.headers:
                if name.lower() == b"content-length" and value.isdigit() and int(value) > self._limit:
                    raise ResultTooLarge(self._limit)
            return b"".join([chunk async for chunk in _Capped(answer.aiter_stream(), self._limit, None)])
        finally:
            await answer.aclose()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self._capped(await self._pool.handle_async_request(request), request)

    async def _capped(self, response: httpx2.Response, request: httpx2.Request) -> httpx2.Response:
        kind = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind == "text/event-stream":
            return response  # a stream of events, each capped by the SSE reader
        await cap(response, request, self._limit)
        return response

    async def aclose(self) -> None:
        return None  # a borrower is done; the pool is not

    async def close(self) -> None:
        await self._pool.aclose()


# httpcore2's failures as httpx2's transport reports them, the most specific first.
_MAPPED: tuple[tuple[type[Exception], type[httpx2.TransportError]], ...] = (
    (httpcore2.ConnectTimeout, httpx2.ConnectTimeout),
    (httpcore2.ReadTimeout, httpx2.ReadTimeout),
    (httpcore2.WriteTimeout, httpx2.WriteTimeout),
    (httpcore2.PoolTimeout, httpx2.PoolTimeout),
    (httpcore2.TimeoutException, httpx2.TimeoutException),
    (httpcore2.ConnectError, httpx2.ConnectError),
    (httpcore2.ReadError, httpx2.ReadError),
    (httpcore2.WriteError, httpx2.WriteError),
    (httpcore2.NetworkError, httpx2.NetworkError),
    (httpcore2.ProxyError, httpx2.ProxyError),
    (httpcore2.UnsupportedProtocol, httpx2.UnsupportedProtocol),
    (httpcore2.LocalProtocolError, httpx2.LocalProtocolError),
    (httpcore2.RemoteProtocolError, httpx2.RemoteProtocolError),
    (httpcore2.ProtocolError, httpx2.ProtocolError),
)


@contextmanager
def _as_httpx2() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, mapped in _MAPPED:
            if isinstance(exc, core):
                raise mapped(str(exc)) from exc
        raise


class _CoreStream(httpx2.AsyncByteStream):
    """httpcore2's response body as httpx2's transport hands it on."""

    def __init__(self, answer: httpcore2.Response) -> None:
        self._answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx2():
            async for part in self._answer.aiter_stream():
                yield part

    async def aclose(self) -> None:
        await self._answer.aclose()


async def cap(response: httpx2.Response, request: httpx2.Request, limit: int) -> None:
    """Make `response`, not read yet, stop past `limit` bytes of body, counted after inflating it."""
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        await response.aclose()
        raise ResultTooLarge(limit, request)
    # Not read yet, so its body can still be swapped for the capped one (a second Response cost more).
    codings = [c for c in response.headers.get("content-encoding", "").lower().replace(" ", "").split(",") if c]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        response.stream = _Capped(response.stream, limit, request)
        return
    # httpx2 would inflate the body above any cap of its raw bytes: a few compressed kilobytes can
    # stand for gigabytes. It is inflated here instead, counted as it comes out.
    if codings not in (["gzip"], ["x-gzip"], ["deflate"]):
        await response.aclose()
        raise UnreadableEncoding(response.headers["content-encoding"], request)
    response.stream = _Inflated(response.stream, codings[0], limit, request)
    del response.headers["content-encoding"]


def capping_hook(limit: int) -> Callable[[httpx2.Response], Awaitable[None]]:
    """An httpx2 response hook that caps every answer of a one-off client (OAuth discovery,
    registration, token exchange) as an upstream's are, event streams included."""

    async def hook(response: httpx2.Response) -> None:
        await cap(response, response.request, limit)

    return hook


def too_large(limit: int) -> str:
    """mcp-guard's words for an upstream answer past `max_result_bytes`, on any transport."""
    return f"its answer is larger than max_result_bytes ({limit} bytes) and was refused"


class ResultTooLarge(httpx2.ReadError):
    """An upstream answer past `max_result_bytes`: reading stopped there."""

    def __init__(self, limit: int, request: httpx2.Request | None = None) -> None:
        super().__init__(too_large(limit), request=request)
        self.limit = limit


class UnreadableEncoding(httpx2.DecodingError):
    """An upstream answer in a content encoding mcp-guard does not inflate (it asks for gzip or deflate)."""

    def __init__(self, encoding: str, request: httpx2.Request) -> None:
        super().__init__(f"its answer came in content encoding {encoding[:40]!r}, which is not read", request=request)


class _Capped(httpx2.AsyncByteStream):
    """A response body that stops being read past `limit` bytes instead of filling memory."""

    def __init__(self, inner: Any, limit: int, request: httpx2.Request | None) -> None:
        self._inner = inner
        self._limit = limit
        self._request = request  # None on the lean path, which attaches the request as it raises

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ResultTooLarge(self._limit, self._request)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Inflated(httpx2.AsyncByteStream):
    """A gzip or deflate body, inflated in bounded steps and refused once it passes `limit` bytes."""

    _STEP = 64 * 1024

    def __init__(self, inner: Any, coding: str, limit: int, request: httpx2.Request) -> None:
        self._inner = inner
        self._coding = coding
        self._limit = limit
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # deflate is meant as zlib-wrapped, but servers send it raw too; the first bytes tell which.
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16 if self._coding != "deflate" else zlib.MAX_WBITS)
        first = self._coding == "deflate"
        read = written = 0
        async for chunk in self._inner:
            read += len(chunk)
            if read > self._limit:
                raise ResultTooLarge(self._limit, self._request)
            data = chunk
            while data:
                try:
                    out = inflater.decompress(data, self._STEP)
                except zlib.error as exc:
                    if not first:
                        raise httpx2.DecodingError(
                            f"its answer could not be inflated: {exc}", request=self._request
                        ) from None
                    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                    first = False
                    continue
                first = False
                written += len(out)
                if written > self._limit:
                    raise ResultTooLarge(self._limit, self._request)
                if out:
                    yield out
                data = inflater.unconsumed_tail
        out = inflater.flush()
        if written + len(out) > self._limit:
            raise ResultTooLarge(self._limit, self._request)
        if out:
            yield out

    async def aclose(self) -> None:
        await self._inner.aclose()


def _plain_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """A JSON body as it is: no content encoding to undo and no cookie for the client's jar."""
    json = False
    for name, value in headers:
        key = name.lower()
        if key == b"content-type":
            json = value.lower().startswith(b"application/json")
        elif key == b"set-cookie" or (key == b"content-encoding" and value.strip().lower() != b"identity"):
            return False
    return json


@dataclass(frozen=True, slots=True)
class Lean:
    """A POST sent on the upstream's pool past httpx2's client, with the bytes that client would send.

    httpx2's client, request and response objects cost about a tenth of mcp-guard's CPU per call.
    Only a client that adds nothing per request beyond its headers gets one (`Lean.of`): no auth flow,
    no request hook, no other transport mounted for its URL; with a cookie in its jar a request goes
    through the client.
    """

    http: httpx2.AsyncClient
    transport: SharedTransport
    url: str
    target: httpcore2.URL
    host: bytes
    on_status: Callable[[int], None]

    @classmethod
    def of(
        cls, http: httpx2.AsyncClient, url: str, transport: SharedTransport, on_status: Callable[[int], None]
    ) -> Lean | None:
        if http.auth is not None or http.event_hooks["request"] or transport.pool is None:
            return None
        merged = http.build_request("POST", url).url
        route = getattr(http, "_transport_for_url", None)
        if route is None or route(merged) is not transport or not hasattr(http, "_build_redirect_request"):
            return None  # a transport mounted for this URL, or an httpx2 that routes elsewhere
        target = httpcore2.URL(scheme=merged.raw_scheme, host=merged.raw_host, port=merged.port, target=merged.raw_path)
        return cls(http, transport, url, target, merged.netloc, on_status)

    async def post(self, body: dict[str, Any], headers: Mapping[str, str]) -> bytes | httpx2.Response | None:
        """The answer to `body` (see `SharedTransport.post_json`), or None, having sent nothing, when
        only httpx2's client can send it as it would."""
        if self.http.cookies.jar:
            return None
        try:
            extra = [(name.encode("ascii"), value.encode("ascii")) for name, value in headers.items()]
        except UnicodeEncodeError:
            return None
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        # httpx2's merge: the request's headers replace the client's of the same name and come after.
        names = {name.lower() for name, _ in extra}
        raw = [(name, value) for name, value in self.http.headers.raw if name.lower() not in names]
        raw.extend(extra)
        if all(name.lower() != b"host" for name, _ in raw):
            raw.insert(0, (b"Host", self.host))
        if b"content-length" not in names:
            raw.append((b"Content-Length", str(len(content)).encode()))

        def request() -> httpx2.Request:
            return self.http.build_request("POST", self.url, json=body, headers=headers)

        answer = await self.transport.post_json(self.target, raw, content, self.http.timeout.as_dict(), request)
        if isinstance(answer, bytes):
            self.on_status(200)
            return answer
        self.on_status(answer.status_code)
        self.http.cookies.extract_cookies(answer)
        if answer.has_redirect_location:
            # What httpx2's client leaves on a redirect it does not follow, for `_following` to judge.
            answer.next_request = self.http._build_redirect_request(answer.request, answer)
        return answer
