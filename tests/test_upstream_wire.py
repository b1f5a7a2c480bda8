"""The direct upstream path (proxy/upstream_wire.py) against a real 2026-07-28 upstream over Streamable HTTP.

The upstream is the feature server (tests/servers/features.py) behind a hostile layer that answers
some `tools/call` names itself, with what no SDK server sends: HTTP errors without a JSON-RPC body, a
202, HTML, broken JSON, streams that end without an answer or resume elsewhere, notifications that
are invalid or in an order we choose. Everything else reaches the real SDK server. Each case runs on
the direct path and, where the two must agree, on the SDK dispatcher too, and the outcomes are
compared.

Run as a script, this file is that upstream: `python tests/test_upstream_wire.py --port 0 [--record FILE]`.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, REQUEST_TIMEOUT

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy import upstream_wire
from proxy.policy import Upstream
from proxy.upstream import UpstreamConnection
from proxy.upstream_changes import Relay, current_relay
from proxy.upstream_errors import UpstreamUnavailable
from proxy.upstream_requests import raw_request
from proxy.upstream_transport import SharedTransport
from proxy.upstream_wire import NotMCP
from tests.harness import PY, Proc, spawn
from tests.servers.procs import read_record, wait_for_record

pytestmark = pytest.mark.anyio

ASGI = Callable[..., Awaitable[None]]
GONE = "gone:"  # a resumable stream whose resumption the upstream refuses
RESUME = "hostile:"
FEATURES_SCRIPT = str(Path(__file__).resolve().parent / "servers" / "features.py")
THIS_SCRIPT = str(Path(__file__).resolve())  # a resumable stream whose answer comes on the GET that resumes it


# -- the upstream ---------------------------------------------------------------------------------------


def _frame(message: dict[str, Any], *, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: message\ndata: {json.dumps(message)}\n\n".encode()


def _note(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def _log(text: str, level: str = "warning") -> dict[str, Any]:
    return _note("notifications/message", {"level": level, "logger": "hostile", "data": text})


def _progress(token: Any, value: float, total: float | None = None, message: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"progressToken": token, "progress": value}
    if total is not None:
        params["total"] = total
    if message is not None:
        params["message"] = message
    return _note("notifications/progress", params)


def _result(rid: Any, text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": text}]}}


def _answers(name: str, rid: Any, token: Any, raw: bytes, headers: list[list[str]]) -> tuple[int, str, list[bytes]]:
    """What the hostile layer sends for tools/call `name`: status, content type, body chunks."""
    sse = "text/event-stream"
    match name:
        case "mirror":
            return 200, "application/json", [json.dumps(_result(rid, json.dumps([raw.decode(), headers]))).encode()]
        case "http500":
            return 500, "text/plain", [b"boom"]
        case "http500_rpc":
            error = {"code": -32050, "message": "upstream says no", "data": {"why": "because"}}
            return 500, "application/json", [json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()]
        case "http404":
            return 404, "text/plain", [b""]
        case "accepted":
            return 202, "", [b""]
        case "html":
            return 200, "text/html", [b"<p>hello</p>"]
        case "not_json":
            return 200, "application/json", [b"this is not json"]
        case "list_result":
            return 200, "application/json", [json.dumps({"jsonrpc": "2.0", "id": rid, "result": [1, 2]}).encode()]
        case "redirect":  # reached after the 307 that sent it here
            return 200, "application/json", [json.dumps(_result(rid, "moved")).encode()]
        case "gzip":
            return 200, "application/json", [gzip.compress(json.dumps(_result(rid, "unzipped")).encode())]
        case "gzip_bomb":  # 3 MB of text in a few kilobytes
            return 200, "application/json", [gzip.compress(json.dumps(_result(rid, "0" * 3_000_000)).encode())]
        case "other_id":
            return 200, "application/json", [json.dumps(_result(rid + 1000, "not yours")).encode()]
        case "cut":
            return 200, sse, [_frame(_log("before the cut"))]
        case "bad_event":
            return 200, sse, [b"event: message\ndata: {not json\n\n"]
        case "huge_event":
            return 200, sse, [b"data: " + b"x" * (1024 * 1024 + 10) + b"\n\n"]
        case "resume":
            primer = f"id: {RESUME}{rid}\nretry: 5\ndata: \n\n".encode()
            return 200, sse, [primer, _frame(_progress(token, 1, 2, "before the break"), event_id=f"{RESUME}{rid}")]
        case "resume_gone":
            return 200, sse, [f"id: {GONE}{rid}\nretry: 5\ndata: \n\n".encode()]
        case "ordered":
            return (
                200,
                sse,
                [
                    _frame(_log("first")),
                    _frame(_progress(token, 1, 3, "one")),
                    _frame(_note("notifications/message", {"level": "loud", "data": "invalid level"})),
                    _frame(_progress("someone-else", 9, 9, "not ours")),
                    _frame(_progress(token, True, None, "a bool is no progress")),
                    _frame(
                        {"jsonrpc": "2.0", "id": "srv-1", "method": "elicitation/create", "params": {"message": "hi"}}
                    ),
                    b"event: other\ndata: {}\n\n",
                    b": a comment\n\n",
                    _frame(_note("notifications/unknown", {"x": 1})),
                    _frame(_log("second")),
                    _frame(_progress(token, 2, 3, "two")),
                    _frame(_note("notifications/tools/list_changed", {})),
                    _frame(_result(rid, "ordered done")),
                    _frame(_log("after the answer")),
                ],
            )
    raise AssertionError(name)


class Hostile:
    """ASGI layer before the SDK server: the named calls are answered here, everything else passes."""

    def __init__(self, app: ASGI) -> None:
        self._app = app

    async def __call__(self, scope: dict[str, Any], receive: ASGI, send: ASGI) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        resumed = dict(headers).get("last-event-id", "")
        if scope["method"] == "GET" and resumed.startswith(RESUME):
            rid = int(resumed.removeprefix(RESUME))
            await _send(send, 200, "text/event-stream", [_frame(_result(rid, "resumed"))])
            return
        if scope["method"] == "GET" and resumed.startswith(GONE):
            await _send(send, 405, "text/plain", [b"no"])
            return
        if scope["method"] != "POST":
            await self._app(scope, receive, send)
            return
        moved = scope.get("query_string") == b"moved"
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            request = json.loads(raw)
            params = request.get("params") or {}
            name = params.get("name") if request.get("method") == "tools/call" else None
        except (ValueError, AttributeError):
            name = None
        if name == "redirect" and not moved:
            await send({"type": "http.response.start", "status": 307, "headers": [(b"location", b"/mcp?moved")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if isinstance(name, str) and name in HOSTILE:
            token = (params.get("_meta") or {}).get("progressToken")
            status, content_type, chunks = _answers(name, request.get("id"), token, raw, headers)
            await _send(send, status, content_type, chunks)
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()  # type: ignore[no-any-return]

        await self._app(scope, replay, send)


HOSTILE = {
    "mirror", "http500", "http500_rpc", "http404", "accepted", "html", "not_json", "list_result", "other_id",
    "gzip", "gzip_bomb", "redirect", "cut", "bad_event", "huge_event", "resume", "resume_gone", "ordered",
}  # fmt: skip


async def _send(send: ASGI, status: int, content_type: str, chunks: list[bytes]) -> None:
    headers = [(b"content-type", content_type.encode())] if content_type else []
    if chunks and chunks[0].startswith(b"\x1f\x8b"):
        headers.append((b"content-encoding", b"gzip"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def main(argv: list[str] | None = None) -> int:
    from proxy.backends.sandbox import run_until_signalled, server_arg_parser
    from proxy.netutil import bind, serve_asgi
    from tests.servers.features import build_features

    args = server_arg_parser("test_upstream_wire.py", "The feature upstream behind a hostile layer.").parse_args(argv)
    server = build_features(args.record)

    async def serve() -> None:
        app = server.streamable_http_app(streamable_http_path="/mcp", host=args.host)
        await serve_asgi(Hostile(app), bind(args.host, args.port), announce=lambda url: f"hostile: MCP {url}/mcp")

    return run_until_signalled(serve, "hostile")


# -- fixtures and helpers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Path]]:
    record = tmp_path_factory.mktemp("wire") / "record.jsonl"
    with spawn([PY, THIS_SCRIPT, "--port", "0", "--record", str(record)]) as proc:
        yield proc, record


@asynccontextmanager
async def connected(
    url: str, *, seconds: float = 30.0, max_result_bytes: int = 16 * 1024 * 1024
) -> AsyncIterator[UpstreamConnection]:
    """A connection whose requests time out after `seconds`, on a pool as `UpstreamPool` gives it one."""
    transport = SharedTransport(max_result_bytes)
    async with anyio.create_task_group() as tg:
        config = Upstream(url=url, timeout_seconds=seconds)
        conn = UpstreamConnection("wire", config, {}, tg, allow_sampling=False, transport=transport)
        try:
            session = await conn.session()
            assert await conn.modern()
            wire = upstream_wire.direct(session)
            assert wire is not None and wire.lean is not None
            yield conn
        finally:
            await conn.close()
            await transport.close()


@contextmanager
def counting(session: ClientSession, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The methods sent through the SDK dispatcher while the block runs."""
    sent: list[str] = []
    original = session._dispatcher.send_raw_request

    async def count(method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        sent.append(method)
        return await original(method, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(session._dispatcher, "send_raw_request", count)
        yield sent


@contextmanager
def via_httpx2(session: ClientSession) -> Iterator[None]:
    """The direct path through httpx2's client rather than past it (`upstream_wire.Lean`)."""
    wire = upstream_wire._WIRES[session]
    upstream_wire._WIRES[session] = upstream_wire.Wire(wire.http, wire.url)
    try:
        yield
    finally:
        upstream_wire._WIRES[session] = wire


@contextmanager
def via_sdk(session: ClientSession) -> Iterator[None]:
    """The same session without its wire: raw_request takes the SDK dispatcher, as before."""
    wire = upstream_wire._WIRES.pop(session)
    try:
        yield
    finally:
        upstream_wire._WIRES[session] = wire


def call(name: str, arguments: dict[str, Any] | None = None) -> types.CallToolRequest:
    return types.CallToolRequest(params=types.CallToolRequestParams(name=name, arguments=arguments or {}))


async def outcome(conn: UpstreamConnection, request: Any) -> tuple[Any, ...]:
    """What a caller of `conn.request` observes, as a comparable value."""
    try:
        return ("result", await conn.request(lambda s: raw_request(s, request)))
    except MCPError as exc:
        return ("mcp", exc.code, exc.message, exc.data)
    except UpstreamUnavailable as exc:
        return ("unavailable", exc.detail, exc.upstream_text, conn.http_status)


async def echoed(conn: UpstreamConnection, text: str) -> str:
    raw = await conn.request(lambda s: raw_request(s, call("echo", {"text": text})))
    return str(raw["content"][0]["text"])


async def both(conn: UpstreamConnection, request: Any) -> tuple[Any, ...]:
    """The outcome on the direct path, checked equal to the same path through httpx2's client and to the SDK's."""
    assert upstream_wire.direct(await conn.session()) is not None
    direct = await outcome(conn, request)
    with via_httpx2(await conn.session()):  # reopened if that failed at the connection level
        client = await outcome(conn, request)
    with via_sdk(await conn.session()):
        sdk = await outcome(conn, request)
    assert direct == client == sdk
    return direct


# -- tests -----------------------------------------------------------------------------------------------


async def test_results_equal_the_sdk_path_and_skip_the_dispatcher(
    upstream: tuple[Proc, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    requests: list[Any] = [
        call("echo", {"text": "héllo <b>"}),
        call("structured", {"n": 7}),
        call("fail"),
        call("no_such_tool"),
        types.ReadResourceRequest(params=types.ReadResourceRequestParams(uri="note://1")),
        types.GetPromptRequest(params=types.GetPromptRequestParams(name="greet", arguments={"name": "Zoë"})),
        types.CompleteRequest(
            params=types.CompleteRequestParams(
                ref=types.PromptReference(name="greet"), argument=types.CompletionArgument(name="name", value="A")
            )
        ),
    ]
    seen: list[tuple[Any, ...]] = []
    async with connected(upstream[0].url) as conn:
        session = await conn.session()
        for request in requests:
            with counting(session, monkeypatch) as sent:
                direct = await outcome(conn, request)
            assert sent == []
            with via_sdk(session), counting(session, monkeypatch) as sent:
                sdk = await outcome(conn, request)
            assert sent == [request.method]
            assert direct == sdk
            seen.append(direct)
    echo, structured, fail, unknown, read, prompt, completion = seen
    assert echo[1]["content"] == [{"type": "text", "text": "héllo <b>"}]
    assert structured[1]["structuredContent"]["square"] == 49
    assert fail[:2] == ("mcp", INTERNAL_ERROR) and fail[2].startswith("fail() failed on purpose")
    assert unknown[0] == "mcp" and "no_such_tool" in unknown[2]
    assert read[1]["contents"][0]["text"].startswith("Welcome!")
    assert "Zoë" in json.dumps(prompt[1], ensure_ascii=False)
    assert completion[1]["completion"]["values"]


async def test_the_request_on_the_wire_is_the_sdks_byte_for_byte(upstream: tuple[Proc, Path]) -> None:
    async def progress(value: float, total: float | None, message: str | None) -> None:
        pass

    async with connected(upstream[0].url) as conn:
        session = await conn.session()
        seen = []
        for path in (nullcontext, partial(via_httpx2, session), partial(via_sdk, session)):
            for with_progress in (False, True):
                request = call("mirror", {"text": "ünïcode ✓", "n": [1, 2.5, None]})
                with path():
                    result = await raw_request(session, request, progress=progress if with_progress else None)
                body, headers = json.loads(result["content"][0]["text"])
                rid = json.loads(body)["id"]
                body = body.replace(f'"id":{rid},', '"id":ID,').replace(f'"progressToken":{rid}', '"progressToken":ID')
                headers = [(k, v) for k, v in headers if k != "content-length"]
                seen.append((with_progress, body, headers))
        assert seen[:2] == seen[2:4] == seen[4:]
        assert '"progressToken":ID' in seen[1][1] and "progressToken" not in seen[0][1]
        assert dict(seen[0][2])["mcp-name"] == "mirror"


async def test_log_lines_and_progress_reach_the_callbacks_in_order_before_the_result(
    upstream: tuple[Proc, Path],
) -> None:
    heard: list[tuple[Any, ...]] = []

    async def log(server: str, params: types.LoggingMessageNotificationParams) -> None:
        heard.append(("log", params.level, params.data))

    async def progress(value: float, total: float | None, message: str | None) -> None:
        heard.append(("progress", value, total, message))

    async def refuse(server: str, params: Any) -> types.ErrorData:
        raise AssertionError("no question is relayed on a 2026-07-28 stream")

    async with connected(upstream[0].url) as conn:
        changed: list[Any] = []
        conn.tools = {"stale": types.Tool(name="stale", input_schema={"type": "object"})}
        conn.bus.publish = lambda event: _append(changed, event)  # type: ignore[method-assign]
        token = current_relay.set(Relay(elicit=refuse, sample=refuse, log=log))
        try:
            session = await conn.session()
            raw = await raw_request(session, call("ordered"), progress=progress)
            assert raw["content"][0]["text"] == "ordered done"
            assert heard == [
                ("log", "warning", "first"),
                ("progress", 1.0, 3.0, "one"),
                ("log", "warning", "second"),
                ("progress", 2.0, 3.0, "two"),
            ]
            # list_changed reached _on_message, which listed the tools again before telling anyone
            assert "stale" not in conn.tools and "echo" in conn.tools and len(changed) == 1

            # The feature server's own notifications, through the real SDK server.
            heard.clear()
            raw = await raw_request(session, call("progress", {"steps": 3}), progress=progress)
            assert raw["content"][0]["text"] == "done 3 steps"
            assert heard == [("progress", float(i), 3.0, f"step {i} of 3") for i in (1, 2, 3)]
            heard.clear()
            raw = await raw_request(session, call("chatty", {"text": "a line"}))
            assert heard == [("log", "warning", "a line")]
        finally:
            current_relay.reset(token)


async def _append(into: list[Any], event: Any) -> None:
    into.append(event)


async def test_http_errors_map_as_before(upstream: tuple[Proc, Path]) -> None:
    async with connected(upstream[0].url) as conn:
        # Connection-level: the SDK's stand-in words, and the status for the person who fixes it.
        stand_in = "Server returned an error response"
        bare = await both(conn, call("http500"))
        assert bare == ("unavailable", f"it answered with error {INTERNAL_ERROR}: HTTP 500", stand_in, 500)
        not_found = await both(conn, call("http404"))
        assert not_found == ("unavailable", f"it answered with error {METHOD_NOT_FOUND}: HTTP 404", "Not Found", 404)
        # A JSON-RPC error in the body of an HTTP error is the upstream answering this request.
        rpc = await both(conn, call("http500_rpc"))
        assert rpc == ("mcp", -32050, "upstream says no", {"why": "because"})
        assert await both(conn, call("accepted")) == (
            "mcp", INVALID_REQUEST, "server answered a request with 202 Accepted", None,
        )  # fmt: skip
        assert await both(conn, call("html")) == ("mcp", INVALID_REQUEST, "Unexpected content type: text/html", None)


async def test_compressed_and_redirected_answers_read_as_the_sdk_reads_them(upstream: tuple[Proc, Path]) -> None:
    async with connected(upstream[0].url) as conn:
        assert await both(conn, call("gzip")) == ("result", {"content": [{"type": "text", "text": "unzipped"}]})
        assert await both(conn, call("redirect")) == ("result", {"content": [{"type": "text", "text": "moved"}]})
    async with connected(upstream[0].url, max_result_bytes=1024 * 1024) as conn:
        # Counted as it inflates: its compressed bytes are far under the cap. The SDK's transport
        # ends the connection on the same refusal, in its own words.
        refused = await outcome(conn, call("gzip_bomb"))
        assert refused[0] == "unavailable" and "max_result_bytes (1048576 bytes)" in refused[1]
        with via_httpx2(await conn.session()):
            assert await outcome(conn, call("gzip_bomb")) == refused
        with via_sdk(await conn.session()):
            assert await outcome(conn, call("gzip_bomb")) == ("unavailable", "connection closed", None, None)
        assert await echoed(conn, "after the bomb") == "after the bomb"


async def test_streams_that_end_without_an_answer_map_to_the_sdks_words(upstream: tuple[Proc, Path]) -> None:
    async with connected(upstream[0].url) as conn:
        session = await conn.session()
        with pytest.raises(MCPError) as cut:
            await raw_request(session, call("cut"))
        assert (cut.value.code, cut.value.message) == (CONNECTION_CLOSED, "SSE stream ended without a response")
        assert await both(conn, call("cut")) == ("unavailable", "connection closed", None, None)
        gone = await both(conn, call("resume_gone"))
        assert gone == ("unavailable", "connection closed: HTTP 405", None, 405)  # the GET that would resume
        huge = await both(conn, call("huge_event"))
        assert huge[:3] == ("unavailable", "connection closed", None)


async def test_a_resumable_stream_is_resumed_with_last_event_id(upstream: tuple[Proc, Path]) -> None:
    heard: list[tuple[Any, ...]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        heard.append((value, total, message))

    async with connected(upstream[0].url) as conn:
        session = await conn.session()
        raw = await raw_request(session, call("resume"), progress=progress)
        assert raw["content"][0]["text"] == "resumed"
        assert heard == [(1.0, 2.0, "before the break")]
        assert await both(conn, call("resume")) == ("result", raw)


async def test_answers_that_are_not_json_rpc_fail_closed(upstream: tuple[Proc, Path]) -> None:
    async with connected(upstream[0].url) as conn:
        session = await conn.session()
        for name in ("not_json", "list_result", "other_id", "bad_event"):
            with pytest.raises(NotMCP):
                await raw_request(session, call(name))
            assert await outcome(conn, call(name)) == (
                "unavailable", "it sent a response that is not valid MCP", None, None,
            )  # fmt: skip
        assert await echoed(conn, "still fine") == "still fine"


async def test_a_timeout_maps_as_before_and_the_upstream_hears_it(upstream: tuple[Proc, Path]) -> None:
    proc, record = upstream
    async with connected(proc.url, seconds=1.0) as conn:
        session = await conn.session()
        before = sum(1 for _ in _cancelled(record))
        with pytest.raises(MCPError) as timed_out:
            await raw_request(session, call("slow", {"seconds": 30}))
        assert (timed_out.value.code, timed_out.value.message) == (REQUEST_TIMEOUT, "Request 'tools/call' timed out")
        # Closing the POST is the 2026-07-28 cancellation: the upstream's handler was cancelled.
        await wait_for_record(record, _is_cancelled, count=before + 1, seconds=10)
        assert await both(conn, call("slow", {"seconds": 30})) == ("unavailable", "timed out", None, None)
        # Both paths' calls were cancelled upstream before the next test counts them.
        await wait_for_record(record, _is_cancelled, count=before + 3, seconds=10)
        assert await echoed(conn, "after") == "after"


async def test_a_cancelled_caller_closes_the_call_upstream(upstream: tuple[Proc, Path]) -> None:
    proc, record = upstream
    started = anyio.Event()

    async def progress(value: float, total: float | None, message: str | None) -> None:
        started.set()

    before = sum(1 for _ in _cancelled(record))
    async with connected(proc.url) as conn:
        session = await conn.session()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    await raw_request(session, call("slow", {"seconds": 30}), progress=progress)

                tg.start_soon(run)
                await started.wait()
                tg.cancel_scope.cancel()
        await wait_for_record(record, _is_cancelled, count=before + 1, seconds=10)
        assert await echoed(conn, "after") == "after"


def _is_cancelled(entry: dict[str, Any]) -> bool:
    return entry.get("event") == "cancelled"


def _cancelled(record: Path) -> Iterator[dict[str, Any]]:
    return (e for e in read_record(record) if _is_cancelled(e))


async def test_closed_and_stdio_sessions_keep_the_sdk_path(
    upstream: tuple[Proc, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with connected(upstream[0].url) as conn:
        session = await conn.session()
        assert upstream_wire.direct(session) is not None
    assert upstream_wire.direct(session) is None  # the owner task detached it as it left the client

    # A stdio upstream speaks 2026-07-28 too, but has no HTTP client to share: the SDK sends its requests.
    async with anyio.create_task_group() as tg:
        conn = UpstreamConnection(
            "stdio", Upstream(command=(PY, FEATURES_SCRIPT, "--stdio")), {}, tg, allow_sampling=False
        )
        try:
            session = await conn.session()
            assert await conn.modern() and upstream_wire.direct(session) is None
            with counting(session, monkeypatch) as sent:
                raw = await conn.request(lambda s: raw_request(s, call("echo", {"text": "over stdio"})))
            assert sent == ["tools/call"] and raw["content"][0]["text"] == "over stdio"
        finally:
            await conn.close()


if __name__ == "__main__":
    raise SystemExit(main())
