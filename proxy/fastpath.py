"""The fast path: the hot methods answered on their JSON-RPC, the SDK at the edges.

For `tools/call`, `tools/list`, `resources/read` and `prompts/get` this layer parses the body once,
checks it as the SDK would, hands it to the team's pipeline (every guard, relay decision and
audit line the SDK path has) and answers as one JSON response, or as an event stream from the
first message the request must send before its answer (backchannel.py). That skips the SDK's
per-request kernel: for a handshake-era session its task, memory streams and SSE writer; for
both eras a session object, a middleware chain, two validations of the request and one of the
result.

- 2026-07-28: a request is one self-contained POST, checked with the SDK's own inbound ladder.
- Handshake era: a request of an open session (its owner, after `initialize`), served with what
  its `initialize` said. The client's answers to our questions and its `notifications/cancelled`
  for our requests are taken here too.

It takes only what it can answer exactly as the SDK would. Everything else is replayed, byte for
byte, to the SDK's transport: other methods, a resumed 2026-07-28 call (its sealed state is the
SDK's `RequestStateBoundary`'s to verify), a 2026-07-28 progress or log opt-in, `Mcp-Param-*`
headers, and every request the SDK would refuse, so each error keeps the SDK's words and status.
An `InputRequiredResult` it answers is sealed by that same boundary.

Which requests it takes and how it answers are here; what each hot method asks of the pipeline is
`fastpath_methods`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import mcp.types as types
import pydantic_core
from mcp.server import Server
from mcp.server.connection import Connection
from mcp.server.request_state import RequestStateBoundary
from mcp.server.runner import modern_error_data
from mcp.server.streamable_http import check_accept_headers
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PARAM_HEADER_PREFIX,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp.shared.jsonrpc_dispatcher import (
    cancelled_request_id_from_params,
    handler_exception_to_error_data,
    progress_token_from_params,
)
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    LOG_LEVEL_META_KEY,
    PARSE_ERROR,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
    ErrorData,
)
from mcp_types import methods as wire_methods
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.backchannel import Backchannel, NoBackchannel, ResponseStream, WireChannel
from proxy.downstream import Channel
from proxy.fastpath_methods import HANDLERS, HOT, HotRequest
from proxy.fastpath_wire import (
    NOT_A_MESSAGE,
    Refused,
    json_rpc_message,
    lenient_json,
    plain_id,
    read_body,
    refuse,
    replay_body,
    routing,
    valid_request,
)
from proxy.gateway import IDENTITY_KEY, Gateway, Identity, caller_for
from proxy.server import listener_for
from proxy.upstream_errors import UpstreamUnavailable

logger = logging.getLogger(__name__)

_PARAM_PREFIX = MCP_PARAM_HEADER_PREFIX.lower()
_PING_SECONDS = 15.0  # as the SDK: a request silent this long commits to a stream kept open by pings
# Most calls are answered before this; only a call still running then gets a task watching its client.
_WATCH_AFTER = 0.25

SessionCheck = Callable[[str, Scope], bool]
"""Whether a handshake-era session id is open and belongs to the scope's caller (the SDK's own rule)."""


class _SealingContext:
    """What `RequestStateBoundary` reads off a request context to seal a state for it."""

    def __init__(self, method: str, params: Mapping[str, Any]) -> None:
        self.method = method
        self.params = params


class FastPath:
    """ASGI layer in front of the SDK's Streamable HTTP app (and behind the identity middleware)."""

    def __init__(
        self,
        app: ASGIApp,
        gateway: Gateway,
        server: Server[Any],
        security: TransportSecuritySettings,
        *,
        max_body_bytes: int,
        session_open: SessionCheck,
    ) -> None:
        self.app = app
        self.gateway = gateway
        self.server = server
        self.boundary = next(m for m in server.middleware if isinstance(m, RequestStateBoundary))
        self.security = TransportSecurityMiddleware(security)
        self.max_body_bytes = max_body_bytes
        self.session_open = session_open
        offered = gateway.offered
        self.methods = {m for m, feature in HOT.items() if feature == "tools" or offered is None or feature in offered}
        self.backchannel = Backchannel()
        # Handshake-era requests in flight here, for the client's notifications/cancelled.
        self._running: dict[tuple[str, str | int], anyio.CancelScope] = {}
        # Handshake-era request ids in flight on each session, on either path (see `_claim`).
        self._in_flight: set[tuple[str, str | int]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        version, session_id = routing(scope)
        modern = version in MODERN_PROTOCOL_VERSIONS
        handshake = session_id is not None and (version is None or version in HANDSHAKE_PROTOCOL_VERSIONS)
        if not (modern or handshake):
            await self.app(scope, receive, send)
            return
        body, whole = await read_body(receive, self.max_body_bytes)
        decoded = None
        if whole and len(body) <= self.max_body_bytes:
            decoded = await self._decode(scope, body, modern=modern)
            if isinstance(decoded, Refused):
                # A handshake-era session that is not this caller's is the SDK's to answer (404) first.
                if modern or self.session_open(session_id or "", scope):
                    await refuse(decoded.code, decoded.message, send, None if modern else session_id)
                    return
                decoded = None
        claimed = None
        if decoded is not None and session_id is not None and not modern:
            claimed = self._claim(decoded, session_id, scope)
            if isinstance(claimed, str):
                await refuse(INVALID_REQUEST, f"Invalid Request: {claimed}", send, session_id)
                return
        try:
            taken = None  # a request with `Mcp-Param-*` headers is the SDK's to check against the tool's schema
            if decoded is not None and not any(k.startswith(_PARAM_PREFIX.encode()) for k, _ in scope["headers"]):
                taken = self._modern(decoded, scope) if modern else self._handshake(decoded, scope, session_id or "")
            if taken is None and handshake and decoded is not None and not json_rpc_message(decoded):
                if self.session_open(session_id or "", scope):
                    await refuse(INVALID_REQUEST, NOT_A_MESSAGE, send, session_id)
                    return
            if taken is None:
                await self.app(scope, replay_body(body, whole, receive), send)
            elif taken is True:
                await send({"type": "http.response.start", "status": 202, "headers": []})
                await send({"type": "http.response.body", "body": b""})
            else:
                assert isinstance(taken, HotRequest)
                await self._answer(taken, scope, receive, send)
        finally:
            if claimed is not None:
                self._in_flight.discard(claimed)

    # -- which requests -------------------------------------------------------------------------------

    async def _decode(self, scope: Scope, body: bytes, *, modern: bool) -> dict[str, Any] | Refused | None:
        """The JSON-RPC body of a POST the SDK's transport would accept; None when it would not.

        Bodies are parsed as the SDK's handshake-era transport parses them (`pydantic_core`): UTF-8,
        no unpaired surrogate, nested at most ~200 deep. Its 2026-07-28 transport uses `json.loads`,
        which takes all three, and what it takes then fails deep in the pipeline (an unpaired
        surrogate cannot be encoded for the audit digest or the upstream; a value nested past
        pydantic's serialisation limit cannot be forwarded) as an internal error. So a 2026-07-28
        body that only `json.loads` can read is refused here, for the SDK's path too, as a parse
        error; one neither can read goes to the SDK, for its own words. A handshake-era body that is
        no JSON-RPC 2.0 object (a batch, a number) is refused as an invalid request: that transport
        would answer with pydantic's whole report, the input echoed (the 2026-07-28 one says -32600).
        """
        http = Request(scope)
        if await self.security.validate_request(http, is_post=True) is not None:
            return None
        if check_accept_headers(http) != (True, True):
            return None
        try:
            decoded = pydantic_core.from_json(body)
        except ValueError as exc:
            return Refused(PARSE_ERROR, f"Parse error: {exc}") if modern and lenient_json(body) else None
        if not isinstance(decoded, dict) or decoded.get("jsonrpc") != "2.0":
            return None if modern else Refused(INVALID_REQUEST, NOT_A_MESSAGE)
        return decoded

    def _claim(self, decoded: dict[str, Any], session_id: str, scope: Scope) -> tuple[str, str | int] | str | None:
        """Mark a handshake-era request's id in flight on its session; why it is refused instead, or None
        when there is nothing to mark (not a request, or not this caller's open session: the SDK answers).

        The SDK's handshake-era transport takes a request whose id is not a string or an integer as
        a notification (202, no answer: the client waits for ever), and of two requests in flight
        with one id on one session it answers only one (the other's stream stays open, unanswered).
        Both are refused here, on either path, as the 2026-07-28 transport refuses the first.
        """
        method = decoded.get("method")
        if "id" not in decoded or not isinstance(method, str) or not self.session_open(session_id, scope):
            return None
        request_id = decoded["id"]
        if not plain_id(request_id):
            if method.startswith("notifications/"):
                return None  # a notification with a stray id: the SDK ignores the id, harmlessly
            return "a request id must be a string or an integer"
        key = (session_id, request_id)
        if key in self._in_flight:
            return f"request id {json.dumps(request_id)} is already in flight on this session"
        self._in_flight.add(key)
        return key

    def _modern(self, decoded: dict[str, Any], scope: Scope) -> HotRequest | None:
        request_id, method, params = decoded.get("id"), decoded.get("method"), decoded.get("params")
        if not isinstance(method, str) or method not in self.methods:  # a list or an object is not hashable
            return None
        if not isinstance(params, dict) or not plain_id(request_id):
            return None
        meta = params.get("_meta")
        if not isinstance(meta, dict) or "progressToken" in meta or LOG_LEVEL_META_KEY in meta:
            return None
        if params.get("requestState") is not None or params.get("inputResponses") is not None:
            return None
        raw_headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        if find_duplicated_routing_header(raw_headers) is not None:
            return None
        route = classify_inbound_request(decoded, headers=dict(raw_headers))
        if isinstance(route, InboundLadderRejection):
            return None
        if not valid_request(method, route.protocol_version, params):
            return None
        connection = Connection.from_envelope(route.protocol_version, route.client_info, route.client_capabilities)
        assert isinstance(request_id, str | int)
        return HotRequest(request_id, method, params, route.protocol_version, connection.client_capabilities)

    def _handshake(self, decoded: dict[str, Any], scope: Scope, session_id: str) -> HotRequest | bool | None:
        if not self.session_open(session_id, scope):
            return None
        connection = self.gateway.connections.get(session_id)
        if connection is None or not connection.initialize_accepted:
            return None
        method, params = decoded.get("method"), decoded.get("params")
        if method is None and "id" in decoded:
            return self.backchannel.answer(session_id, decoded) or None  # the answer to a question of ours
        if method == "notifications/cancelled" and "id" not in decoded and isinstance(params, dict):
            running = self._running.get((session_id, cancelled_request_id_from_params(params)))  # type: ignore[arg-type]
            if running is None:
                return None
            running.cancel()
            return True
        request_id = decoded.get("id")
        if not isinstance(method, str) or method not in self.methods or not plain_id(request_id):
            return None
        if not (params is None or isinstance(params, dict)):
            return None
        if (
            isinstance(params, dict)
            and isinstance(params.get("_meta"), dict)
            and PROTOCOL_VERSION_META_KEY in params["_meta"]
        ):
            return None  # the SDK refuses a 2026-07-28 envelope on a handshake-era session
        version = connection.protocol_version
        if not valid_request(method, version, params):
            return None
        assert isinstance(request_id, str | int)
        token = progress_token_from_params(params)
        caps = connection.client_capabilities
        return HotRequest(request_id, method, params or {}, version, caps, session_id, connection, token)

    # -- the answer ---------------------------------------------------------------------------------

    async def _answer(self, request: HotRequest, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request; a client that goes away (or, in the handshake era, cancels it) cancels it,
        as on the SDK's path. A request silent for a ping interval keeps its stream open with pings.

        The request runs in this task. A watcher that reads the connection starts beside it only if
        the request is still running after `_WATCH_AFTER`: a task per request cost about 5 % of the
        CPU of a short call, which is over before a client could be seen going away.
        """
        headers = [] if request.session_id is None else [(b"mcp-session-id", request.session_id.encode("latin-1"))]
        stream = ResponseStream(send, headers)
        running = anyio.CancelScope()
        key = (request.session_id or "", request.id)
        finished = False
        loop = asyncio.get_running_loop()
        begun = loop.time()

        async def watch() -> None:
            quiet_since = begun
            try:
                while True:
                    with anyio.move_on_after(max(0.0, quiet_since + _PING_SECONDS - loop.time())) as silent:
                        message = await receive()
                    if silent.cancelled_caught:
                        quiet_since = loop.time()
                        if not finished:
                            await stream.ping()
                    elif message["type"] == "http.disconnect":
                        if not finished:
                            running.cancel()
                        return
            except Exception:
                logger.debug("watching the client of a fast-path request failed", exc_info=True)

        watcher: list[asyncio.Task[None]] = []
        timer = loop.call_later(_WATCH_AFTER, lambda: watcher.append(loop.create_task(watch())))
        if request.session_id is not None:
            self._running[key] = running
        try:
            answer = None
            with running:
                answer = await self._reply(request, scope, stream)
            finished = True
            await stream.finish(*answer) if answer is not None else await stream.finish(200, None)
        finally:
            timer.cancel()
            for task in watcher:
                task.cancel()  # its response is complete: there is nothing left to watch for
            if self._running.get(key) is running:
                del self._running[key]

    async def _reply(self, request: HotRequest, scope: Scope, stream: ResponseStream) -> tuple[int, bytes]:
        """The HTTP status and JSON-RPC body; an error as the SDK's path of that era answers it."""
        status = 200
        try:
            result = await self._result(request, scope, stream)
            message: dict[str, Any] = {"jsonrpc": "2.0", "id": request.id, "result": result}
        except Exception as exc:
            if request.modern:
                error = modern_error_data(exc)
                status = ERROR_CODE_HTTP_STATUS.get(error.code, 200)
            else:
                error = handler_exception_to_error_data(exc) or _internal(exc)
            message = {"jsonrpc": "2.0", "id": request.id, "error": error.model_dump(mode="json", exclude_none=True)}
        return status, json.dumps(message, separators=(",", ":")).encode()

    async def _result(self, request: HotRequest, scope: Scope, stream: ResponseStream) -> dict[str, Any]:
        identity = scope.get(IDENTITY_KEY)
        if not isinstance(identity, Identity):
            raise MCPError(code=INTERNAL_ERROR, message="mcp-guard: request reached MCP without an identity")
        caller = caller_for(identity, scope["path"], request.session_id, modern=request.modern)
        pipeline = self.gateway.pipeline(caller.team)
        channel: Channel
        if request.connection is None:
            channel = NoBackchannel(request.capabilities)
        else:
            listener = listener_for(request.connection)
            pipeline.listen(caller, listener)
            channel = WireChannel(
                self.backchannel, request.session_id or "", stream, version=request.version,
                capabilities=request.capabilities, log_floor=listener.log_level, progress_token=request.progress_token,
            )  # fmt: skip
        try:
            result = await HANDLERS[request.method](pipeline, caller, request, channel)
        except UpstreamUnavailable as exc:
            raise pipeline.upstream_error(exc) from None
        if isinstance(result, types.InputRequiredResult) and request.modern:
            sealed = self.boundary._seal_result(_SealingContext(request.method, request.params), result, None)  # type: ignore[arg-type]
            assert isinstance(sealed, types.InputRequiredResult)
            result = sealed
        return self._wire(request, result)

    def _wire(self, request: HotRequest, result: types.Result) -> dict[str, Any]:
        """The result as the SDK's kernel puts it on the wire: the version's sieve, and for 2026-07-28
        `resultType` and the `serverInfo` stamp."""
        dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        dumped = wire_methods.serialize_server_result(request.method, request.version, dumped)
        if not request.modern:
            return dumped
        if dumped.get("resultType") is None:
            dumped["resultType"] = "complete"
        meta = dumped.get("_meta")
        if meta is None:
            dumped["_meta"] = {SERVER_INFO_META_KEY: self.server.server_info_stamp}
        elif isinstance(meta, dict) and meta.get(SERVER_INFO_META_KEY) is None:
            dumped["_meta"] = {**meta, SERVER_INFO_META_KEY: self.server.server_info_stamp}
        return dumped


def _internal(exc: Exception) -> ErrorData:
    # The SDK would put str(exc) on the wire; a proxy's internals stay in its log.
    logger.error("fast path: %s raised %s", "handler", type(exc).__name__, exc_info=exc)
    return ErrorData(code=INTERNAL_ERROR, message="Internal error")
