"""Issue 18 / SPEC §9: hostile HTTP and JSON-RPC thrown at the real `mcp-guard serve`.

One proxy per module, in front of the SMSAPI sandbox and the feature server (so `resources/read`
and `prompts/get` are offered, and the fast path takes them too), and Hypothesis throws batches of
malformed requests at it: random bytes, cut and wrongly shaped JSON, batches, deep nesting, invalid
UTF-8 and lone surrogates, huge strings, wrong headers and methods, oversize heads, and slow
clients. Every answer must be a 4xx or a JSON-RPC error (never a 5xx, never a traceback, never a
hang: every request is bounded by a client timeout), and after each batch the real `mcp` client must
still initialize and list tools.

Requests go both ways through the proxy: with a valid 2026-07-28 envelope (`MCP-Protocol-Version`
header, no session) or on an initialised handshake-era session, a hot method (`tools/call`,
`tools/list`, `resources/read`, `prompts/get`) is the fast path's (proxy/fastpath.py), whose params
are fuzzed here; everything else, and every request the fast path finds the SDK would refuse, is
replayed to the SDK's transport.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import anyio
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY

from tests.harness import FEATURES, SANDBOX, Proc, jsonrpc_messages, proxy_http, spawn, write_policy

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
HEADER_TIMEOUT = 3.0  # the proxy's --header-timeout here, so slow clients are dropped quickly
REQUEST_TIMEOUT = 20.0  # no answer within this is a hang
ACCEPT = "application/json, text/event-stream"
JSON_HEADERS = {"Accept": ACCEPT, "Content-Type": "application/json"}
HOT = ["tools/call", "tools/list", "resources/read", "prompts/get"]
# Tools the fuzzer may really call: quick, and asking the client nothing.
TOOLS = ["feat__echo", "feat__structured", "feat__fail", "smsapi__get_profile"]
MAX_BODY = 1024 * 1024  # proxy.http.MAX_BODY_BYTES

FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Target:
    proxy: Proc
    url: str
    host: str
    port: int
    session: str  # an initialised handshake-era session of this (anonymous) caller

    def __repr__(self) -> str:  # Hypothesis prints the fixture with a failing example: keep it short
        return f"Target({self.url}, session {self.session})"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    where = tmp_path_factory.mktemp("hostile")
    with (
        spawn([*SANDBOX, "--port", "0", "--record", str(where / "sms.jsonl")]) as sms,
        spawn([*FEATURES, "--port", "0", "--record", str(where / "feat.jsonl")]) as feat,
    ):
        policy = write_policy(
            where / "p.yaml",
            {"smsapi": {"url": sms.url, "profile": "smsapi"}, "feat": {"url": feat.url}},
            scopes=["profile"],
            audit={"path": str(where / "audit.jsonl")},
        )
        with proxy_http(policy, "--header-timeout", str(HEADER_TIMEOUT)) as proxy:
            parsed = urlparse(proxy.url)
            assert parsed.hostname is not None and parsed.port is not None
            yield Target(proxy, proxy.url, parsed.hostname, parsed.port, _open_session(proxy.url))


def _open_session(url: str) -> str:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        # No elicitation or sampling: nothing a fuzzed call does can wait on this client's answer.
        "params": {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}},
    }
    with httpx2.Client(timeout=REQUEST_TIMEOUT) as http:
        opened = http.post(url, json=init, headers=JSON_HEADERS)
        assert opened.status_code == 200, opened.text
        session = opened.headers["mcp-session-id"]
        done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        headers = {**JSON_HEADERS, "Mcp-Session-Id": session, "MCP-Protocol-Version": HANDSHAKE}
        assert http.post(url, json=done, headers=headers).status_code == 202
    return session


# -- what every answer must be ----------------------------------------------------------------------------


def _no_leak(text: str) -> None:
    assert "Traceback" not in text, text[:2000]
    assert 'File "/' not in text, text[:2000]


def assert_refused(response: httpx2.Response) -> None:
    """A 4xx, or a JSON-RPC error response; never a 5xx, never a traceback."""
    _no_leak(response.text)
    assert response.status_code < 500, (response.status_code, response.text[:2000])
    if 400 <= response.status_code < 500:
        return
    messages = jsonrpc_messages(response)
    assert messages and isinstance(messages[-1], dict), (response.status_code, response.text[:2000])
    error = messages[-1].get("error")
    assert isinstance(error, dict) and isinstance(error.get("code"), int), (response.status_code, response.text[:2000])


def assert_answered(response: httpx2.Response, request_id: Any) -> None:
    """A 4xx, or one JSON-RPC response to `request_id` (a result or an error); never a 5xx or a traceback."""
    _no_leak(response.text)
    assert response.status_code < 500, (response.status_code, response.text[:2000])
    if 400 <= response.status_code < 500:
        return
    final = jsonrpc_messages(response)[-1]
    assert final["id"] == request_id and ("result" in final) != ("error" in final), final


async def assert_still_serving(target: Target) -> None:
    """A well-formed initialize and tools/list through the real SDK client."""
    with anyio.fail_after(REQUEST_TIMEOUT):
        async with Client(target.url, mode="legacy") as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
    assert {"feat__echo", "smsapi__get_profile"} <= names


async def post_all(target: Target, requests: list[tuple[bytes, dict[str, str]]]) -> list[httpx2.Response]:
    """Send the batch at once, each bounded by the client's timeout."""
    answers: list[httpx2.Response | None] = [None] * len(requests)
    async with httpx2.AsyncClient(timeout=REQUEST_TIMEOUT) as http:

        async def one(i: int, body: bytes, headers: dict[str, str]) -> None:
            # Wall-clock bound too: a stream kept alive by pings never trips the client's read timeout.
            with anyio.fail_after(REQUEST_TIMEOUT):
                answers[i] = await http.post(target.url, content=body, headers=resolve(target, headers))

        async with anyio.create_task_group() as tg:
            for i, (body, headers) in enumerate(requests):
                tg.start_soon(one, i, body, headers)
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


# -- strategies -------------------------------------------------------------------------------------------

# Lone surrogates (JSON can escape them; UTF-8 cannot carry them), and other awkward text.
ODD_TEXT = ["\ud800", "a\udc80b", "\udfff\ud800", "", "\x00", "\u202e", "<script>", "../../etc", "\U0010ffff"]
TEXT = st.text(max_size=40) | st.sampled_from(ODD_TEXT)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**64), st.floats(), TEXT)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12
)
NOT_OBJECT = JSON.filter(lambda v: not isinstance(v, dict))
ERAS = st.sampled_from(["modern", "session", "none"])


# Strategies are drawn before a test runs: they name the fixture's session by these placeholders.
SESSION, OTHER_SESSION = "<session>", "<session, upper-cased>"


def era_headers(era: str) -> dict[str, str]:
    if era == "modern":
        return {**JSON_HEADERS, "MCP-Protocol-Version": MODERN}
    if era == "session":
        return {**JSON_HEADERS, "Mcp-Session-Id": SESSION, "MCP-Protocol-Version": HANDSHAKE}
    return dict(JSON_HEADERS)


def resolve(target: Target, headers: dict[str, str]) -> dict[str, str]:
    real = {SESSION: target.session, OTHER_SESSION: target.session.upper()}
    return {name: real.get(value, value) for name, value in headers.items()}


def encode(value: Any, *, strict: bool) -> bytes:
    """JSON text; `strict` False writes lone surrogates as raw (invalid UTF-8) bytes, not escapes."""
    if strict:
        return json.dumps(value, ensure_ascii=True).encode()
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def envelope() -> dict[str, Any]:
    return {
        PROTOCOL_VERSION_META_KEY: MODERN,
        CLIENT_CAPABILITIES_META_KEY: {},
        CLIENT_INFO_META_KEY: {"name": "fuzz", "version": "1"},
    }


@st.composite
def wrong_shapes(draw: st.DrawFn) -> Any:
    """Valid JSON that is no valid JSON-RPC request: not an object, a batch, or a request with at
    least one of `jsonrpc`, `id`, `method`, `params` of the wrong type."""
    kind = draw(st.sampled_from(["scalar", "batch", "fields"]))
    if kind == "scalar":
        return draw(NOT_OBJECT)
    request = {"jsonrpc": "2.0", "id": draw(st.integers(0, 10**6)), "method": draw(st.sampled_from(HOT)), "params": {}}
    if kind == "batch":
        return draw(st.lists(st.just(request) | JSON, max_size=5))
    wrong = {
        "jsonrpc": JSON.filter(lambda v: v != "2.0"),
        "id": st.one_of(st.floats(), st.booleans(), st.lists(SCALARS, max_size=2), st.dictionaries(TEXT, SCALARS)),
        "method": JSON.filter(lambda v: not isinstance(v, str)),
        "params": NOT_OBJECT.filter(lambda v: v is not None),
    }
    for field in draw(st.lists(st.sampled_from(sorted(wrong)), min_size=1, max_size=4, unique=True)):
        if draw(st.booleans()) and field in ("jsonrpc", "method"):
            del request[field]
        else:
            request[field] = draw(wrong[field])
    return request


VALID = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "tools/call",
    "params": {"name": "feat__echo", "arguments": {"text": "hi"}},
}


@st.composite
def broken_bodies(draw: st.DrawFn) -> bytes:
    """Bytes that are no JSON-RPC request at all."""
    kind = draw(st.sampled_from(["bytes", "truncated", "shape", "utf8", "nested"]))
    if kind == "bytes":
        return draw(st.binary(max_size=600))
    if kind == "truncated":
        text = encode(draw(st.sampled_from([VALID, {**VALID, "params": draw(JSON)}])), strict=True)
        return text[: draw(st.integers(0, len(text) - 1))]
    if kind == "shape":
        return encode(draw(wrong_shapes()), strict=draw(st.booleans()))
    if kind == "utf8":  # a request whose text is not UTF-8: bytes cut into a string or a name
        text = encode({**VALID, "params": {"name": "feat__echo", "arguments": {"text": "XX"}}}, strict=True)
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]))
        return text.replace(b"XX", bad) if draw(st.booleans()) else text.replace(b"tools/call", b"tools/" + bad)
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    depth = draw(st.sampled_from([5_000, 100_000]))
    return opener * depth + (closer * depth if draw(st.booleans()) else b"")


@st.composite
def hot_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str], Any, bool]:
    """A hot-method request the fast path parses, in either era, with fuzzed params.

    Returns the body, headers, the request id, and whether the params are certainly wrong (so the
    answer must be an error)."""
    era = draw(st.sampled_from(["modern", "session"]))
    method = draw(st.sampled_from(HOT))
    fields = {
        "tools/call": {"name": st.sampled_from(TOOLS) | TEXT, "arguments": st.dictionaries(TEXT, JSON, max_size=4)},
        "tools/list": {"cursor": TEXT},
        "resources/read": {"uri": st.sampled_from(["config://settings", "note://1", "file:///logo.png"]) | TEXT},
        "prompts/get": {"name": st.sampled_from(["greet", "plain"]) | TEXT, "arguments": st.dictionaries(TEXT, TEXT)},
    }[method]
    params = {key: draw(value) for key, value in fields.items() if draw(st.booleans()) or key in ("name", "uri")}
    wrong = draw(st.booleans())
    if wrong:  # one field of the wrong type
        key = draw(st.sampled_from(sorted(fields)))
        params[key] = draw(JSON.filter(lambda v: v is not None and not isinstance(v, str | dict)))
    if draw(st.booleans()):  # an unknown key
        params[draw(TEXT.filter(lambda k: k not in fields and k != "_meta"))] = draw(JSON)
    if draw(st.booleans()):
        params["_meta"] = {"progressToken": draw(st.integers(0, 99) | st.text(max_size=5))}
    request_id: Any = draw(st.integers(-(2**63), 2**63) | st.text(max_size=20))
    headers = era_headers(era)
    if era == "modern":
        params["_meta"] = {**params.get("_meta", {}), **envelope()}
        headers["Mcp-Method"] = method
        if isinstance(params.get("name"), str) and params["name"].isascii() and params["name"].isprintable():
            headers["Mcp-Name"] = params["name"]
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    return encode(body, strict=draw(st.booleans())), headers, request_id, wrong


# -- bodies -----------------------------------------------------------------------------------------------


@FUZZ
@given(batch=st.lists(st.tuples(broken_bodies(), ERAS), min_size=1, max_size=6))
async def test_broken_bodies_are_refused_in_every_era(target: Target, batch: list[tuple[bytes, str]]) -> None:
    answers = await post_all(target, [(body, era_headers(era)) for body, era in batch])
    for answer in answers:
        assert_refused(answer)
    await assert_still_serving(target)


@FUZZ
@given(batch=st.lists(hot_requests(), min_size=1, max_size=6))
async def test_fuzzed_hot_method_params_are_answered(target: Target, batch: list[tuple[bytes, Any, Any, bool]]) -> None:
    answers = await post_all(target, [(body, headers) for body, headers, _, _ in batch])
    for (_, _, request_id, wrong), answer in zip(batch, answers, strict=True):
        assert_answered(answer, request_id)
        if wrong:
            assert_refused(answer)
    await assert_still_serving(target)


@pytest.mark.parametrize("era", ["modern", "session", "none"])
async def test_deep_and_huge_requests_are_refused_or_answered(target: Target, era: str) -> None:
    """Nesting past any parser's recursion limit, at the top and inside a hot method's arguments, and
    strings just under and over the body limit."""
    headers = era_headers(era)
    if era == "modern":
        headers = {**headers, "Mcp-Method": "tools/call", "Mcp-Name": "feat__echo"}

    def call(value: bytes = b'"x"', key: bytes = b"text") -> bytes:
        params: dict[str, Any] = {"name": "feat__echo", "arguments": {"KEY": "VALUE"}}
        if era == "modern":
            params["_meta"] = envelope()
        body = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params}).encode()
        return body.replace(b'"KEY"', b'"' + key + b'"').replace(b'"VALUE"', value)

    def nested(depth: int) -> bytes:
        return b"[" * depth + b"]" * depth

    answered = [call(nested(depth)) for depth in (100, 150)]
    answered += [call(b'"' + b"x" * (MAX_BODY - 400) + b'"'), call(key=b"k" * (MAX_BODY - 400))]
    # Past the SDK parser's ~200 levels: in either era a parse error, on either path.
    refused = [call(nested(depth)) for depth in (250, 500, 900, 990, 2_000, 100_000)]
    refused += [b"[" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"[" * 100_000 + b"]" * 100_000]
    refused += [call(b'"' + b"x" * 2 * MAX_BODY + b'"')]
    answers = await post_all(target, [(body, headers) for body in answered + refused])
    for answer in answers[: len(answered)]:
        assert_answered(answer, 9)
    for answer in answers[len(answered) :]:
        assert_refused(answer)
    assert answers[-1].status_code == 413, answers[-1].status_code  # over the body limit
    await assert_still_serving(target)


@pytest.mark.parametrize("era", ["modern", "session", "none"])
async def test_each_field_of_the_wrong_type_is_refused(target: Target, era: str) -> None:
    """Every field of a hot-method request, in turn, of every wrong JSON type (the fuzzing above draws
    these too, but by chance): one batch, each request with an id of its own."""
    wrong: list[Any] = [[], [1], {}, {"a": 1}, 1.5, -1, None, True, "", "2.0"]
    batch = []
    for i, (field, value) in enumerate((f, v) for f in ("jsonrpc", "id", "method", "params") for v in wrong):
        params: Any = {"name": "feat__echo", "arguments": {"text": "x"}}
        if era == "modern":
            params["_meta"] = envelope()
        request = {"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call", "params": params}
        if (field, value) in (("jsonrpc", "2.0"), ("params", {})) or (field == "id" and value in ("", "2.0", -1)):
            continue  # not wrong
        request[field] = value
        headers = era_headers(era) | ({"Mcp-Method": "tools/call", "Mcp-Name": "feat__echo"} if era == "modern" else {})
        batch.append((encode(request, strict=True), headers))
    for answer in await post_all(target, batch):
        assert_refused(answer)
    await assert_still_serving(target)


@pytest.mark.parametrize("era", ["modern", "session"])
@pytest.mark.parametrize("request_id", [7.5, 1.0, True, None, [7], {"a": 1}])
async def test_a_request_id_of_the_wrong_type_is_refused(target: Target, era: str, request_id: Any) -> None:
    """Not taken as a notification (202, and the client waits for ever for the answer)."""
    for method, params in [("tools/list", {}), ("tools/call", {"name": "feat__echo", "arguments": {"text": "x"}})]:
        headers = era_headers(era)
        if era == "modern":
            params = {**params, "_meta": envelope()}
            headers |= {"Mcp-Method": method, **({"Mcp-Name": "feat__echo"} if "name" in params else {})}
        body = encode({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}, strict=True)
        (answer,) = await post_all(target, [(body, headers)])
        assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
        assert answer.json()["error"]["code"] == -32600


async def test_a_request_id_already_in_flight_on_the_session_is_refused(target: Target) -> None:
    """Two requests in flight with one id on one session: the second is refused (the SDK's transport
    would answer one of them and leave the other's stream open for ever), on either path."""
    headers = resolve(target, era_headers("session"))
    slow = {"name": "feat__slow", "arguments": {"seconds": 1}, "_meta": {"progressToken": "t"}}
    again = [
        {"jsonrpc": "2.0", "id": 41, "method": "tools/list"},  # the fast path's
        {"jsonrpc": "2.0", "id": 41, "method": "resources/list"},  # the SDK's
        {"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": {"name": "feat__echo", "arguments": {}}},
    ]
    with anyio.fail_after(REQUEST_TIMEOUT):
        async with httpx2.AsyncClient(timeout=REQUEST_TIMEOUT) as http:
            first = {"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": slow}
            async with http.stream("POST", target.url, json=first, headers=headers) as running:
                events = running.aiter_lines()
                async for line in events:  # its first progress event: the call is surely in flight
                    if "notifications/progress" in line:
                        break
                for body in again:
                    refused = await http.post(target.url, json=body, headers=headers)
                    assert refused.status_code == 400, refused.text
                    assert refused.json()["error"]["code"] == -32600
                    assert "already in flight" in refused.json()["error"]["message"]
                final = [json.loads(line[5:]) for line in [x async for x in events] if line.startswith("data:")]
            assert final[-1]["id"] == 41 and "slept" in json.dumps(final[-1]["result"])
            # The session serves on, on both paths. (MCP forbids reusing an id in a session at all, so a
            # fresh one: the refusal above is for ids in flight, with no memory of answered ones.)
            for i, body in enumerate(again[:2]):
                fresh = await http.post(target.url, json={**body, "id": 42 + i}, headers=headers)
                assert fresh.status_code == 200 and jsonrpc_messages(fresh)[-1]["id"] == 42 + i, fresh.text


# -- headers and methods ----------------------------------------------------------------------------------

HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(str.strip)


@st.composite
def header_variants(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    """An HTTP method and headers that are wrong for the MCP endpoint in at least one way."""
    method = draw(st.sampled_from(["POST", "GET", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD", "TRACE"]))
    era = draw(ERAS)
    headers = era_headers(era)
    changes = draw(st.lists(st.sampled_from(["type", "accept", "session", "version", "drop"]), min_size=1, max_size=4))
    if method in ("GET", "DELETE") and era == "session":
        changes.append("session")  # never end (DELETE) or listen on (GET) the session the other tests use
    for change in changes:
        if change == "type":
            headers["Content-Type"] = draw(st.sampled_from(["text/plain", "application/xml", "", "*/*"]) | HEADER_TEXT)
        elif change == "accept":
            headers["Accept"] = draw(st.sampled_from(["text/html", "application/json", "text/event-stream", ""]))
        elif change == "session":
            headers["Mcp-Session-Id"] = draw(HEADER_TEXT | st.just("0" * 32) | st.just(OTHER_SESSION))
        elif change == "version":
            headers["MCP-Protocol-Version"] = draw(st.sampled_from(["2099-01-01", "1.0", "2026-07-28, 2025-11-25"]))
        else:
            headers.pop(draw(st.sampled_from(["Content-Type", "Accept"])), None)
    return method, headers


@FUZZ
@given(batch=st.lists(header_variants(), min_size=1, max_size=6))
async def test_wrong_headers_and_methods_are_refused(target: Target, batch: list[tuple[str, dict[str, str]]]) -> None:
    body = encode({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": envelope()}}, strict=True)
    async with httpx2.AsyncClient(timeout=REQUEST_TIMEOUT) as http:
        del http.headers["Accept"]  # the client's default (*/*) would stand in for a dropped one
        for method, headers in batch:
            answer = await http.request(method, target.url, content=body, headers=resolve(target, headers))
            assert_refused(answer)
    await assert_still_serving(target)


async def raw_exchange(target: Target, data: bytes) -> bytes:
    """Write `data` on a fresh connection and read until the server closes it; b"" if it closed (or
    reset) without an answer. Bounded: a server that neither answers nor closes fails the test."""
    with anyio.fail_after(REQUEST_TIMEOUT):
        stream = await anyio.connect_tcp(target.host, target.port)
        received = b""
        async with stream:
            try:
                await stream.send(data)
                while True:
                    received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError, OSError):
                return received


def head(target: Target, *lines: bytes) -> bytes:
    start = b"POST / HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nAccept: %s\r\n"
    return start % (target.host.encode(), target.port, ACCEPT.encode()) + b"".join(lines)


@pytest.mark.parametrize(
    ("extra", "must_refuse"),
    [
        pytest.param(b"X-Big: " + b"a" * 100_000 + b"\r\n", False, id="one-100KB-header"),
        pytest.param(b"X-Big: " + b"a" * 5_000_000 + b"\r\n", True, id="one-5MB-header"),
        pytest.param(b"".join(b"X-H%d: v\r\n" % i for i in range(20_000)), False, id="20000-headers"),
        pytest.param(b"".join(b"X-H%d: v\r\n" % i for i in range(200_000)), True, id="200000-headers"),
        pytest.param(b"".join(b"X-H%d: v\r\n" % i for i in range(500)), False, id="500-headers"),
        pytest.param(b"Cookie: " + b"c=1; " * 30_000 + b"\r\n", False, id="150KB-cookie"),
    ],
)
async def test_oversize_heads_get_a_4xx_or_a_close(target: Target, extra: bytes, must_refuse: bool) -> None:
    """A head past the limit (64 KiB, overrun by at most one read) gets a 431 or a close; a large one
    under it is served (here: refused as a request without a session)."""
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}'
    length = b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    answer = await raw_exchange(target, head(target, extra, length, body))
    if answer:
        assert 400 <= int(answer.split(b" ", 2)[1]) < 500, answer[:500]
        _no_leak(answer.decode("latin-1"))
    if must_refuse:
        assert not answer or answer.startswith(b"HTTP/1.1 431 "), answer[:500]
    await assert_still_serving(target)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, id="tls-hello"),
        pytest.param(b"GARBAGE\r\n\r\n", id="no-http"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", id="negative-length"),
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="smuggle"
        ),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk"),
        pytest.param(b"POST /\x00 HTTP/1.1\r\n\r\n", id="nul-in-path"),
        pytest.param(b"POST / HTTP/9.9\r\n\r\n", id="http-9.9"),
    ],
)
async def test_broken_http_gets_a_4xx_or_a_close(target: Target, request_bytes: bytes) -> None:
    answer = await raw_exchange(target, request_bytes)
    if answer:
        assert 400 <= int(answer.split(b" ", 2)[1]) < 500, answer[:500]
        _no_leak(answer.decode("latin-1"))
    await assert_still_serving(target)


# -- slow clients -----------------------------------------------------------------------------------------


async def read_answer(stream: anyio.abc.ByteStream) -> bytes:
    """One whole HTTP response with a Content-Length."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += await stream.receive()
    head_part, _, body = received.partition(b"\r\n\r\n")
    length = int(next(line for line in head_part.lower().split(b"\r\n") if line.startswith(b"content-length:"))[15:])
    while len(body) < length:
        body += await stream.receive()
    return head_part


SLOW_HEAD_LINE = b"X-Slow: " + b"a" * 200 + b"\r\n"


async def trickle(target: Target, first: bytes, pace: float) -> tuple[float, bytes, int]:
    """After an optional whole request (`first`, answered), send a request head one byte per `pace`
    seconds (the slowloris attack) until the server closes the connection. Returns how long after the
    slow head began it closed, what the server said, and how many bytes of the head were sent: never
    the whole head, so the server cannot be waiting on a body or on its own answer."""
    slow = head(target, SLOW_HEAD_LINE)
    stream = await anyio.connect_tcp(target.host, target.port)
    answer, sent = b"", 0
    async with stream:
        if first:
            await stream.send(first)
            answered = await read_answer(stream)
            assert answered.startswith(b"HTTP/1.1 200 "), answered
        started = time.monotonic()
        try:
            for byte in slow:
                with anyio.move_on_after(pace):
                    answer += await stream.receive()  # the server's last word, or its close
                await stream.send(bytes([byte]))
                sent += 1
            raise AssertionError(f"a slow head of {sent} bytes was never cut off")
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError, OSError):
            return time.monotonic() - started, answer, sent


async def test_slowloris_is_dropped_and_others_are_served_meanwhile(target: Target) -> None:
    """Slow clients hold no connection past the header timeout, and others are served meanwhile."""
    pace = 0.5
    whole = encode({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": envelope()}}, strict=True)
    routing = b"MCP-Protocol-Version: %s\r\nMcp-Method: tools/list\r\n" % MODERN.encode()
    first = head(target, routing, b"Content-Length: %d\r\n\r\n" % len(whole))
    results: list[tuple[str, tuple[float, bytes, int]]] = []
    served_after: list[float] = []

    async def attacker(name: str, prefix: bytes) -> None:
        results.append((name, await trickle(target, prefix, pace)))

    with anyio.fail_after(HEADER_TIMEOUT + REQUEST_TIMEOUT):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(attacker, f"slowloris {i}", b"")
            tg.start_soon(attacker, "after a request", first + whole)  # keep-alive, then a slow second head
            started = time.monotonic()
            await assert_still_serving(target)
            served_after.append(time.monotonic() - started)
    assert len(results) == 21
    for name, (closed_after, answer, sent) in results:
        # Dropped by the header timeout: not before it, and not long after (allowing for a busy machine).
        assert HEADER_TIMEOUT - 0.6 <= closed_after <= HEADER_TIMEOUT + 5, (name, closed_after)
        assert sent < len(head(target, SLOW_HEAD_LINE)), name
        assert answer.startswith(b"HTTP/1.1 408 "), (name, answer[:300])
    # The SDK client was served while the slow connections were still held.
    assert served_after[0] < HEADER_TIMEOUT - 0.6, served_after


async def test_idle_connection_is_closed_without_an_answer(target: Target) -> None:
    with anyio.fail_after(REQUEST_TIMEOUT):
        stream = await anyio.connect_tcp(target.host, target.port)
        started = time.monotonic()
        async with stream:
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError)):
                await stream.receive()
        closed_after = time.monotonic() - started
    assert HEADER_TIMEOUT - 0.3 <= closed_after <= HEADER_TIMEOUT + 5


def test_nothing_thrown_at_the_proxy_made_it_log_an_unhandled_exception(target: Target) -> None:
    """Runs last: whatever the tests above sent, no handler raised out of the proxy's stack."""
    log = "".join(target.proxy.lines)
    assert "Traceback" not in log, log[-4000:]
    assert "Exception in ASGI application" not in log, log[-4000:]
