"""A 2026-07-28 POST sent past httpx2's client (proxy/upstream_wire.py `Lean`, proxy/upstream_transport.py
`post_json`) keeps httpx2's contract: the same bytes on the wire, every answer but the plain JSON one
handed back as httpx2's response, the result cap, httpx2's exceptions with their request, and no lean
path for a client that adds anything per request.

The upstream is test_upstream_io's loopback server, which records what it receives byte for byte.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import anyio
import httpcore2
import httpx2
import pytest

from proxy.upstream_transport import ResultTooLarge, SharedTransport
from proxy.upstream_wire import Lean
from tests.test_upstream_io import Upstream, ok, serving

pytestmark = pytest.mark.anyio

BODY = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "send_sms", "arguments": {"to": "ünï ✓"}}}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json", "mcp-name": "send_sms"}


class Recorder:
    """Replies in turn with `replies` (the last one again once they run out) and keeps every request."""

    def __init__(self, *replies: bytes | None) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[bytes, bytes]] = []

    def __call__(self, head: bytes, body: bytes) -> bytes | None:
        self.requests.append((head, body))
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def plain(transport: SharedTransport, **kwargs: Any) -> httpx2.AsyncClient:
    """A client built as upstream.py builds one for a configured upstream."""
    return httpx2.AsyncClient(transport=transport, follow_redirects=False, **kwargs)


def lean_for(http: httpx2.AsyncClient, url: str, transport: SharedTransport, statuses: list[int]) -> Lean:
    lean = Lean.of(http, url, transport, statuses.append)
    assert lean is not None
    return lean


def answer(status: str, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    head = b"".join(b"%s: %s\r\n" % pair for pair in headers)
    return b"HTTP/1.1 %s\r\n%scontent-length: %d\r\n\r\n%s" % (status.encode(), head, len(body), body)


RESULT = json.dumps({"jsonrpc": "2.0", "id": 7, "result": {"content": []}}).encode()


async def test_the_request_is_the_one_httpx2_sends_byte_for_byte() -> None:
    recorder = Recorder(ok(RESULT))
    transport = SharedTransport()
    client_headers = {"Authorization": "Bearer t0ken", "X-Team": "ops", "User-Agent": "team-agent/1"}
    async with serving(Upstream(recorder)) as url, plain(transport, headers=client_headers) as http:
        statuses: list[int] = []
        lean = lean_for(http, url + "?tenant=a", transport, statuses)
        for headers in (HEADERS, {**HEADERS, "accept": "application/json", "X-TEAM": "override"}):
            assert await lean.post(BODY, headers) == RESULT
            response = await http.post(url + "?tenant=a", json=BODY, headers=headers)
            assert response.content == RESULT
            lean_request, httpx2_request = recorder.requests[-2:]
            assert lean_request == httpx2_request
        assert statuses == [200, 200]
    await transport.close()
    head, body = recorder.requests[0]
    assert head.startswith(b"POST /mcp?tenant=a HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Authorization: Bearer t0ken" in head and json.loads(body) == BODY


async def test_every_other_answer_comes_back_as_httpx2s_response() -> None:
    json_type = (b"content-type", b"application/json")
    zipped = answer("200 OK", [json_type, (b"content-encoding", b"gzip")], gzip.compress(RESULT))
    cookie = answer("200 OK", [json_type, (b"set-cookie", b"sticky=b2; Path=/")], RESULT)
    failed = answer("503 Service Unavailable", [(b"content-type", b"text/plain")], b"later")
    events = answer("200 OK", [(b"content-type", b"text/event-stream")], b"event: message\ndata: {}\n\n")
    recorder = Recorder(zipped, failed, events, cookie, ok(RESULT))
    transport = SharedTransport()
    async with serving(Upstream(recorder)) as url, plain(transport) as http:
        statuses: list[int] = []
        lean = lean_for(http, url, transport, statuses)
        for status, content in ((200, RESULT), (503, b"later"), (200, b"event: message\ndata: {}\n\n")):
            response = await lean.post(BODY, HEADERS)
            assert isinstance(response, httpx2.Response) and response.status_code == status
            assert response.request.url == url and response.request.headers["mcp-name"] == "send_sms"
            assert await response.aread() == content  # decoded as httpx2 decodes it
            await response.aclose()
        # A cookie goes into the client's jar, and from then on only the client can send as it would.
        assert isinstance(await lean.post(BODY, HEADERS), httpx2.Response)
        assert http.cookies.get("sticky") == "b2"
        sent = len(recorder.requests)
        assert await lean.post(BODY, HEADERS) is None
        assert len(recorder.requests) == sent
        assert (await http.post(url, json=BODY)).content == RESULT
        assert b"Cookie: sticky=b2" in recorder.requests[-1][0]
        assert statuses == [200, 503, 200, 200]
    await transport.close()


async def test_the_result_cap_holds_and_the_pool_stays_usable() -> None:
    big = b'{"x": "' + b"y" * 300 + b'"}'
    chunked = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    chunked += b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (big[:150], big[150:])) + b"0\r\n\r\n"
    recorder = Recorder(ok(big), chunked, ok(RESULT))
    transport = SharedTransport(max_result_bytes=200)
    async with serving(Upstream(recorder)) as url, plain(transport) as http:
        lean = lean_for(http, url, transport, [])
        for _ in range(2):  # once announced by content-length, once only as it streams in
            with pytest.raises(ResultTooLarge, match="max_result_bytes") as refused:
                await lean.post(BODY, HEADERS)
            assert refused.value.request.url == url
        with anyio.fail_after(5):
            assert await lean.post(BODY, HEADERS) == RESULT
    await transport.close()


async def test_failures_are_httpx2s_exceptions_carrying_the_request() -> None:
    transport = SharedTransport()
    async with serving(Upstream(Recorder(None))) as url:
        http = plain(transport, timeout=httpx2.Timeout(5, read=0.3))
        with pytest.raises(httpx2.ReadTimeout) as timed_out:
            await lean_for(http, url, transport, []).post(BODY, HEADERS)
        assert timed_out.value.request.url == url
        await http.aclose()
    async with plain(transport) as http:  # the server is gone now: nothing listens on its port
        with pytest.raises(httpx2.ConnectError) as refused:
            await lean_for(http, url, transport, []).post(BODY, HEADERS)
        assert refused.value.request.url == url and refused.value.request.method == "POST"
    await transport.close()


async def test_a_client_that_adds_anything_per_request_is_not_bypassed() -> None:
    transport = SharedTransport()
    url = "http://127.0.0.1:9/mcp"

    async def hook(request: httpx2.Request) -> None:
        pass

    assert Lean.of(plain(transport), url, transport, print) is not None
    assert Lean.of(plain(transport, auth=httpx2.BasicAuth("a", "b")), url, transport, print) is None
    assert Lean.of(plain(transport, event_hooks={"request": [hook]}), url, transport, print) is None
    assert Lean.of(plain(httpx2.AsyncHTTPTransport()), url, SharedTransport(), print) is None  # not its pool
    mounted = plain(transport, mounts={"http://127.0.0.1": httpx2.AsyncHTTPTransport()})
    assert Lean.of(mounted, url, transport, print) is None  # another transport is mounted for its URL

    recorder = Recorder(ok(RESULT))
    async with serving(Upstream(recorder)) as url, plain(transport) as http:
        lean = lean_for(http, url, transport, [])
        # A header value httpx2 would encode differently is left to httpx2: nothing is sent here.
        assert await lean.post(BODY, {**HEADERS, "x-note": "zażółć"}) is None
        assert recorder.requests == []
    await transport.close()


async def test_a_compressed_answer_is_capped_as_it_inflates_on_either_path() -> None:
    """A few compressed kilobytes can stand for gigabytes: the cap counts what comes out."""
    bomb = gzip.compress(b'{"x": "' + b"0" * 2_000_000 + b'"}')
    assert len(bomb) < 5_000
    json_type = (b"content-type", b"application/json")
    deflated = zlib.compress(RESULT)
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflated = raw_deflate.compress(RESULT) + raw_deflate.flush()
    recorder = Recorder(
        answer("200 OK", [json_type, (b"content-encoding", b"gzip")], bomb),
        answer("200 OK", [json_type, (b"content-encoding", b"gzip")], bomb),
        answer("200 OK", [json_type, (b"content-encoding", b"deflate")], deflated),
        answer("200 OK", [json_type, (b"content-encoding", b"deflate")], raw_deflated),
        answer("200 OK", [json_type, (b"content-encoding", b"br")], b"\x1b\x00"),
        answer("200 OK", [json_type, (b"content-encoding", b"gzip, gzip")], gzip.compress(gzip.compress(RESULT))),
        answer("200 OK", [json_type, (b"content-encoding", b"gzip")], b"not gzip at all"),
        ok(RESULT),
    )
    transport = SharedTransport(max_result_bytes=100_000)
    async with serving(Upstream(recorder)) as url, plain(transport) as http:
        lean = lean_for(http, url, transport, [])
        response = await lean.post(BODY, HEADERS)
        assert isinstance(response, httpx2.Response)
        with pytest.raises(ResultTooLarge):
            await response.aread()
        await response.aclose()
        with pytest.raises(ResultTooLarge):
            await http.post(url, json=BODY)  # the same through httpx2's client
        for _ in range(2):  # deflate, zlib-wrapped as meant and raw as some servers send it
            response = await lean.post(BODY, HEADERS)
            assert isinstance(response, httpx2.Response) and await response.aread() == RESULT
        for encoding in ("'br'", "'gzip, gzip'"):
            with pytest.raises(httpx2.DecodingError, match=f"content encoding {encoding}, which is not read"):
                await lean.post(BODY, HEADERS)
        response = await lean.post(BODY, HEADERS)
        assert isinstance(response, httpx2.Response)
        with pytest.raises(httpx2.DecodingError, match="could not be inflated"):
            await response.aread()
        await response.aclose()
        with anyio.fail_after(5):
            assert await lean.post(BODY, HEADERS) == RESULT
    await transport.close()


def test_httpcore2_failures_map_to_the_exceptions_httpx2s_transport_raises() -> None:
    from httpx2._transports.default import map_httpcore_exceptions

    from proxy.upstream_transport import _as_httpx2

    for name in dir(httpcore2):
        core = getattr(httpcore2, name)
        if not (isinstance(core, type) and issubclass(core, Exception) and core.__module__.startswith("httpcore2")):
            continue
        raised: list[type[BaseException]] = []
        for mapping in (_as_httpx2, map_httpcore_exceptions):
            try:
                with mapping():
                    raise core("boom")
            except BaseException as exc:  # whatever each raises is compared
                raised.append(type(exc))
        assert raised[0] is raised[1], (name, raised)
