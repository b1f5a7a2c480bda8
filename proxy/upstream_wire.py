"""The direct path for one request to a 2026-07-28 upstream over Streamable HTTP.

The mcp SDK sends a request through its dispatcher: memory streams, a task per POST and a task per
notification, pydantic at every hop. In the 2026-07-28 era a request over Streamable HTTP is one
self-contained POST whose answer comes back on that POST, so mcp-guard sends it itself, on the same
pooled `httpx2.AsyncClient` the SDK transport uses (same headers, same event hooks), and reads the
answer the way the SDK transport and dispatcher do. Where that client adds nothing per request, the
POST goes on its pool directly (`Lean`) with the bytes the client would send. What the upstream
sees is what the SDK would have sent, and what the caller sees is what the SDK would have raised or
returned: the exceptions to that are listed in `send`.

Everything else, the handshake era, stdio, the old SSE transport, listings and subscriptions, stays
on the SDK. mcp is pinned, so its private parts used here cannot move under us.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractContextManager, aclosing, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, cast

import anyio
import httpx2
from httpx2 import EventSource, ServerSentEvent
from mcp.client.session import ClientSession
from mcp.client.streamable_http import (
    DEFAULT_MAX_SSE_EVENT_SIZE,
    DEFAULT_RECONNECTION_DELAY_MS,
    LAST_EVENT_ID,
    MAX_RECONNECTION_ATTEMPTS,
    _unfollowed_redirect,
)
from mcp.shared._httpx_utils import next_request_within_origin, sse_within_origin, stream_within_origin
from mcp.shared._otel import inject_trace_context, otel_span
from mcp.shared.dispatcher import CallOptions, ProgressFnT, coerce_request_id, run_notify_intercept
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp_types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    REQUEST_TIMEOUT,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from opentelemetry.trace import ProxyTracerProvider, SpanKind, StatusCode, get_tracer_provider
from opentelemetry.trace.span import Span
from pydantic import ValidationError

from proxy.upstream_transport import Lean

logger = logging.getLogger(__name__)

_ACCEPT = "application/json, text/event-stream"
Outcome = dict[str, Any] | ErrorData


class NotMCP(Exception):
    """The upstream's answer is not MCP; `request` names the upstream that sent it."""


@dataclass(frozen=True, slots=True)
class Wire:
    """The HTTP client and endpoint the SDK transport of one session uses."""

    http: httpx2.AsyncClient
    url: str
    lean: Lean | None = None


# Keyed by the SDK session the pipeline holds, so `raw_request(session, ...)` keeps its signature.
_WIRES: weakref.WeakKeyDictionary[ClientSession, Wire] = weakref.WeakKeyDictionary()


def attach(session: ClientSession, http: httpx2.AsyncClient, url: str, lean: Lean | None = None) -> None:
    """Let requests of `session` go straight to `url` on `http`, once it is known to be 2026-07-28."""
    _WIRES[session] = Wire(http, url, lean)


def detach(session: ClientSession) -> None:
    _WIRES.pop(session, None)


def direct(session: ClientSession) -> Wire | None:
    """The wire for a request on `session`, or None when only the SDK can send it the same way.

    A 2026-07-28 session never ran `initialize`, so its transport holds no `Mcp-Session-Id` (the
    SDK adopts one only from an initialize response): the headers built here are the transport's.
    A closed session goes to the SDK too, which fails it as it always has.
    """
    wire = _WIRES.get(session)
    if wire is None or session.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return None
    if session.initialize_result is not None or wire.http.is_closed:
        return None
    dispatcher = session._dispatcher
    if not isinstance(dispatcher, JSONRPCDispatcher) or dispatcher._closed or not dispatcher._running:
        return None
    return wire


async def send(session: ClientSession, wire: Wire, data: dict[str, Any], opts: CallOptions) -> dict[str, Any]:
    """Send the stamped request `data` as `JSONRPCDispatcher.send_raw_request` would, and return its result.

    Raises what the SDK raises: MCPError with the upstream's error, with the transport's own words for
    an HTTP error without a JSON-RPC body, a 202, a redirect not followed or an unexpected content type,
    `REQUEST_TIMEOUT` when `opts["timeout"]` elapses and `CONNECTION_CLOSED` when the stream ends without
    an answer; httpx2 errors as they are. Where the SDK would report a parse failure as an upstream
    error quoting the upstream's bytes (or wait for a response that cannot come), this raises NotMCP.
    """
    dispatcher = cast(JSONRPCDispatcher[Any], session._dispatcher)
    method: str = data["method"]
    # The SDK's own counter: ids stay integers, unique on the connection, as the SDK would send them.
    request_id = dispatcher._allocate_id()
    while request_id in dispatcher._pending:
        request_id = dispatcher._allocate_id()
    params = dict(data.get("params") or {})
    meta = dict(params.get("_meta") or {})
    on_progress = opts.get("on_progress")
    if on_progress is not None:
        meta["progressToken"] = request_id  # as the dispatcher does: the request id is the token
    timeout = opts.get("timeout")
    with _span(method, params.get("name"), request_id) as span:
        if span is not None:
            inject_trace_context(meta)
        if meta:
            params["_meta"] = meta
        else:
            params.pop("_meta", None)
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params:
            body["params"] = params
        exchange = _Exchange(session, wire, request_id, on_progress)
        outcome: Outcome | None = None
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        # Leaving this scope, by the deadline or by the caller's cancellation, closes the POST: in the
        # 2026-07-28 HTTP wire that is the cancellation, and the SDK sends no frame for it either.
        with anyio.CancelScope(deadline=deadline) as scope:
            outcome = await exchange.post(body, dict(opts.get("headers") or {}))
        if scope.cancelled_caught:
            raise MCPError(code=REQUEST_TIMEOUT, message=f"Request {method!r} timed out")
        assert outcome is not None
        if isinstance(outcome, ErrorData) and span is not None:
            code = str(outcome.code)
            span.set_attributes({"error.type": code, "rpc.response.status_code": code})
            span.set_status(StatusCode.ERROR, outcome.message)
    if isinstance(outcome, ErrorData):
        raise MCPError(code=outcome.code, message=outcome.message, data=outcome.data)
    return outcome


def _span(method: str, target: object, request_id: int) -> AbstractContextManager[Span | None]:
    """The SDK's client span for the request, when a tracer provider is set; else nothing.

    With no provider every span is a no-op and the current span is invalid, so the SDK's span and
    trace-context injection change nothing on the wire; skipping them saves a few percent per call.
    """
    if isinstance(get_tracer_provider(), ProxyTracerProvider):
        return nullcontext()
    span_name = f"MCP send {method}{f' {target}' if isinstance(target, str) else ''}"
    attributes = {"mcp.method.name": method, "jsonrpc.request.id": str(request_id)}
    return otel_span(span_name, kind=SpanKind.CLIENT, attributes=attributes)


class _Exchange:
    """One request's POST and the stream that answers it."""

    def __init__(self, session: ClientSession, wire: Wire, request_id: int, on_progress: ProgressFnT | None) -> None:
        self._session = session
        self._wire = wire
        self._id = request_id
        self._on_progress = on_progress

    def _headers(self) -> dict[str, str]:
        # The transport's `_prepare_headers`: its cached version is the one every stamp of a 2026-07-28
        # session carries.
        version = self._session.protocol_version
        assert version is not None
        return {"accept": _ACCEPT, "content-type": "application/json", MCP_PROTOCOL_VERSION_HEADER: version}

    async def post(self, body: dict[str, Any], stamped: Mapping[str, str]) -> Outcome:
        headers = self._headers()
        headers.update(stamped)
        wire = self._wire
        if wire.lean is not None and (answer := await wire.lean.post(body, headers)) is not None:
            if isinstance(answer, bytes):
                return self._answer(answer)
            async with _following(wire.http, answer) as response:
                return await self._handle(response)
        async with stream_within_origin(wire.http, "POST", wire.url, json=body, headers=headers) as response:
            return await self._handle(response)

    async def _handle(self, response: httpx2.Response) -> Outcome:
        if response.status_code == 202:
            return ErrorData(code=INVALID_REQUEST, message="server answered a request with 202 Accepted")
        if (redirect := _unfollowed_redirect(response)) is not None:
            logger.warning("the upstream redirected a request off its origin; not followed")
            return ErrorData(code=INVALID_REQUEST, message=redirect)
        if response.status_code >= 400:
            return await _http_error(response)
        content_type = response.headers.get("content-type", "").lower()
        if content_type.startswith("application/json"):
            return await self._json(response)
        if content_type.startswith("text/event-stream"):
            return await self._stream(response)
        return ErrorData(code=INVALID_REQUEST, message=f"Unexpected content type: {content_type}")

    async def _json(self, response: httpx2.Response) -> Outcome:
        return self._answer(await response.aread())

    def _answer(self, body: bytes) -> Outcome:
        message = _parse(body)
        if isinstance(message, JSONRPCResponse) and coerce_request_id(message.id) == self._id:
            return message.result
        # An error the upstream could not give an id (`"id": null`) still answers this POST.
        if isinstance(message, JSONRPCError) and (message.id is None or coerce_request_id(message.id) == self._id):
            return message.error
        # The SDK would wait out the timeout for an answer that cannot come on this POST any more.
        raise NotMCP("a JSON body that does not answer the request")

    async def _stream(self, response: httpx2.Response) -> Outcome:
        last_event_id: str | None = None
        retry_ms: int | None = None
        try:
            async with aclosing(EventSource(response, max_event_size=DEFAULT_MAX_SSE_EVENT_SIZE).__aiter__()) as events:
                async for sse in events:
                    if sse.id:
                        last_event_id = sse.id
                    if sse.retry is not None:
                        retry_ms = sse.retry
                    if (outcome := await self._event(sse)) is not None:
                        return outcome
        except httpx2.SSEError as exc:
            return ErrorData(code=CONNECTION_CLOSED, message=f"SSE stream failed: {exc}")
        except NotMCP:
            raise
        except Exception:
            # As the SDK transport: a broken stream is a stream that ended, resumable if it had event ids.
            logger.debug("SSE stream ended", exc_info=True)
        if last_event_id is not None:
            return await self._resume(last_event_id, retry_ms)
        return ErrorData(code=CONNECTION_CLOSED, message="SSE stream ended without a response")

    async def _resume(self, last_event_id: str, retry_ms: int | None) -> Outcome:
        """Reconnect with Last-Event-ID, as `StreamableHTTPTransport._handle_reconnection` does."""
        attempt = 0
        while attempt < MAX_RECONNECTION_ATTEMPTS:
            delay_ms = retry_ms if retry_ms is not None else DEFAULT_RECONNECTION_DELAY_MS
            await anyio.sleep(delay_ms / 1000.0)
            headers = self._headers()
            headers[LAST_EVENT_ID] = last_event_id
            is_sse = False
            try:
                async with sse_within_origin(
                    self._wire.http, self._wire.url, headers=headers, max_event_size=DEFAULT_MAX_SSE_EVENT_SIZE
                ) as source:
                    source.response.raise_for_status()
                    content_type = source.response.headers.get("content-type", "").partition(";")[0]
                    is_sse = content_type.strip().lower() == "text/event-stream"
                    async with aclosing(source.__aiter__()) as events:
                        async for sse in events:
                            if sse.id:
                                last_event_id = sse.id
                            if sse.retry is not None:
                                retry_ms = sse.retry
                            if (outcome := await self._event(sse)) is not None:
                                return outcome
                attempt = 0  # it ended again without an answer: a fresh round, as the SDK's recursion does
            except httpx2.SSEError as exc:
                if is_sse:
                    return ErrorData(code=CONNECTION_CLOSED, message=f"SSE stream failed: {exc}")
                attempt += 1
            except NotMCP:
                raise
            except Exception:
                logger.debug("reconnection failed", exc_info=True)
                attempt += 1
        return ErrorData(code=CONNECTION_CLOSED, message="SSE stream ended and reconnection attempts were exhausted")

    async def _event(self, sse: ServerSentEvent) -> Outcome | None:
        """The answer if `sse` carries it; notifications are handled on the way."""
        if sse.event != "message":
            logger.debug("ignored an SSE event that is not a message")
            return None
        if not sse.data:
            return None  # a priming event: only its id matters, for resuming
        message = _parse(sse.data)
        if isinstance(message, JSONRPCResponse):
            return message.result  # the SDK takes whatever answer ends this POST's stream as this request's
        if isinstance(message, JSONRPCError):
            return message.error
        if isinstance(message, JSONRPCNotification):
            await self._notification(message.method, message.params)
        else:
            # 2026-07-28 has no server-to-client requests; a question comes back as an InputRequiredResult.
            logger.debug("ignored a request the upstream sent on a 2026-07-28 response stream")
        return None

    async def _notification(self, method: str, params: Mapping[str, Any] | None) -> None:
        """What the dispatcher and the session do with a notification, in arrival order and before the answer.

        The SDK runs each in a task of its own, so they may still be running when the result is
        returned; here they have run by then. A raising callback costs only its own notification.
        """
        if method == "notifications/progress" and self._on_progress is not None:
            match params:
                case {"progressToken": str() | int() as token, "progress": int() | float() as progress} if (
                    not isinstance(token, bool)
                    and not isinstance(progress, bool)
                    and coerce_request_id(token) == self._id
                ):
                    total = params.get("total")
                    message = params.get("message")
                    try:
                        await self._on_progress(
                            float(progress),
                            float(total) if isinstance(total, int | float) else None,
                            message if isinstance(message, str) else None,
                        )
                    except Exception:
                        logger.exception("progress callback raised")
                case _:
                    pass
        session = self._session
        if run_notify_intercept(cast(JSONRPCDispatcher[Any], session._dispatcher)._on_notify_intercept, method, params):
            return
        try:
            # The session validates it at the negotiated version, calls the logging callback for a log
            # line and the message handler for the rest, and drops what is invalid. It reads no context.
            await session._on_notify(cast(Any, None), method, params)
        except Exception:
            logger.exception("notification handler for %r raised", method)


@asynccontextmanager
async def _following(http: httpx2.AsyncClient, response: httpx2.Response) -> AsyncIterator[httpx2.Response]:
    """`stream_within_origin` from its first answer on: redirects within the origin are followed."""
    followed = 0
    try:
        while (after := next_request_within_origin(response)) is not None and followed < http.max_redirects:
            try:
                await response.aread()  # drained, so its connection goes back to the pool
            finally:
                await response.aclose()
            response = await http.send(after, stream=True, follow_redirects=False)
            followed += 1
        yield response
    finally:
        await response.aclose()


def _parse(raw: bytes | str) -> Any:
    try:
        return jsonrpc_message_adapter.validate_json(raw, by_name=False)
    except ValidationError:
        # pydantic's message quotes the upstream's bytes: none of it goes on.
        raise NotMCP("an answer that is not a JSON-RPC message") from None


async def _http_error(response: httpx2.Response) -> ErrorData:
    """An HTTP error status: the JSON-RPC error in its body if there is one, else the SDK's stand-in."""
    if response.headers.get("content-type", "").lower().startswith("application/json"):
        try:
            parsed = jsonrpc_message_adapter.validate_json(await response.aread(), by_name=False)
        except (httpx2.StreamError, ValidationError):
            parsed = None
        if isinstance(parsed, JSONRPCError):
            return parsed.error
    if response.status_code == 404:
        # The SDK's words without a session (a 2026-07-28 connection never has one).
        return ErrorData(code=METHOD_NOT_FOUND, message="Not Found")
    return ErrorData(code=INTERNAL_ERROR, message="Server returned an error response")
