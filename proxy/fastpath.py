"""The fast path: the hot methods of a 2026-07-28 request answered on its JSON-RPC, the SDK at the edges.

A 2026-07-28 request is one self-contained POST. For `tools/call`, `tools/list`, `resources/read`
and `prompts/get` this layer parses the body once, checks it with the SDK's own inbound ladder,
hands it to the team's pipeline (every guard, relay decision and audit line the SDK path has)
and writes the answer as one JSON response. That skips the SDK's per-request server kernel
(a session object, middleware chain, two validations of the request and one of the result).

It takes only what it can answer exactly as the SDK would. Anything else is replayed, byte for
byte, to the SDK's transport: another era or method, a resumed call (its sealed state is the
SDK's `RequestStateBoundary`'s to verify), a progress or log opt-in (they need a stream),
`Mcp-Param-*` headers, and every request the ladder would refuse, so each error keeps the SDK's
words and status. An `InputRequiredResult` it answers is sealed by that same boundary.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import mcp.types as types
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
from mcp_types import LOG_LEVEL_META_KEY, SERVER_INFO_META_KEY
from mcp_types import methods as wire_methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.pipeline import Pipeline, ToolCall
from proxy.relay import can_elicit_form, can_elicit_url, refuse_question, refuse_sampling
from proxy.server import IDENTITY_KEY, Gateway, Identity, caller_for
from proxy.upstream import Relay, UpstreamUnavailable

logger = logging.getLogger(__name__)

_VERSION_HEADER = b"mcp-protocol-version"
_PARAM_PREFIX = MCP_PARAM_HEADER_PREFIX.lower()
_PING_SECONDS = 15.0  # as the SDK: a call silent this long commits to a stream kept open by pings
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]
_JSON_HEADERS = [(b"content-type", b"application/json")]
_HOT = {"tools/call": "tools", "tools/list": "tools", "resources/read": "resources", "prompts/get": "prompts"}


@dataclass(frozen=True)
class _Request:
    """A request the fast path takes: its id, method, wire params and envelope."""

    id: str | int
    method: str
    params: dict[str, Any]
    version: str
    capabilities: types.ClientCapabilities | None


class _SealingContext:
    """What `RequestStateBoundary` reads off a request context to seal a state for it."""

    def __init__(self, method: str, params: Mapping[str, Any]) -> None:
        self.method = method
        self.params = params


class ModernClient:
    """The gate's `Prompter` and the upstream `Relay` for a 2026-07-28 request: it has no back-channel,
    so the gate asks with an `InputRequiredResult` and an upstream's mid-call question is refused."""

    modern = True
    request_state: str | None = None
    input_responses: dict[str, Any] | None = None

    def __init__(self, capabilities: types.ClientCapabilities | None, *, allow_url: bool, allow_sampling: bool) -> None:
        self.can_elicit = can_elicit_form(capabilities)
        self.can_elicit_url = can_elicit_url(capabilities)
        self._allow_url = allow_url
        self._allow_sampling = allow_sampling

    async def elicit(self, message: str, schema: dict[str, Any]) -> types.ElicitResult:
        raise MCPError(code=-32603, message="a 2026-07-28 request cannot be asked mid-call")

    def relay(self) -> Relay:
        # No log relay: 2026-07-28 logs go only to requests that opted in, and those take the SDK path.
        return Relay(elicit=self._elicit, sample=self._sample)

    async def _elicit(self, server: str, params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
        refusal = refuse_question(server, params, allow_url=self._allow_url, modern=True)
        assert refusal is not None  # the era alone refuses it
        return refusal

    async def _sample(
        self, server: str, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.ErrorData:
        refusal = refuse_sampling(server, allow_sampling=self._allow_sampling, modern=True)
        assert refusal is not None
        return refusal


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
    ) -> None:
        self.app = app
        self.gateway = gateway
        self.server = server
        self.boundary = next(m for m in server.middleware if isinstance(m, RequestStateBoundary))
        self.security = TransportSecurityMiddleware(security)
        self.max_body_bytes = max_body_bytes
        offered = gateway.offered
        self.methods = {m for m, feature in _HOT.items() if feature == "tools" or offered is None or feature in offered}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not _modern(scope):
            await self.app(scope, receive, send)
            return
        body, whole = await _read_body(receive, self.max_body_bytes)
        request = await self._admit(scope, body) if whole and len(body) <= self.max_body_bytes else None
        if request is None:
            await self.app(scope, _replay(body, whole, receive), send)
            return
        await self._answer(request, scope, receive, send)

    # -- which requests -------------------------------------------------------------------------------

    async def _admit(self, scope: Scope, body: bytes) -> _Request | None:
        """The request, when the fast path answers it exactly as the SDK would; None replays it."""
        raw_headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        if any(name.startswith(_PARAM_PREFIX) for name, _ in raw_headers):
            return None
        if find_duplicated_routing_header(raw_headers) is not None:
            return None
        http = Request(scope)
        if await self.security.validate_request(http, is_post=True) is not None:
            return None
        if check_accept_headers(http) != (True, True):
            return None
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if not isinstance(decoded, dict) or decoded.get("jsonrpc") != "2.0":
            return None
        request_id, method, params = decoded.get("id"), decoded.get("method"), decoded.get("params")
        if method not in self.methods or not isinstance(params, dict) or not _plain_id(request_id):
            return None
        meta = params.get("_meta")
        if not isinstance(meta, dict) or "progressToken" in meta or LOG_LEVEL_META_KEY in meta:
            return None
        if params.get("requestState") is not None or params.get("inputResponses") is not None:
            return None
        route = classify_inbound_request(decoded, headers=dict(raw_headers))
        if isinstance(route, InboundLadderRejection):
            return None
        try:
            wire_methods.validate_client_request(method, route.protocol_version, params)
        except Exception:
            return None  # the SDK words the refusal
        connection = Connection.from_envelope(route.protocol_version, route.client_info, route.client_capabilities)
        assert isinstance(request_id, str | int)
        return _Request(request_id, method, params, route.protocol_version, connection.client_capabilities)

    # -- the answer ---------------------------------------------------------------------------------

    async def _answer(self, request: _Request, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request; a client that goes away cancels it, as on the SDK's path. A call silent for
        longer than the ping interval commits to an event stream kept open by pings."""
        done = anyio.Event()
        answer: list[tuple[int, bytes]] = []

        async def run() -> None:
            answer.append(await self._reply(request, scope))
            done.set()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            tg.start_soon(watch_disconnect)
            with anyio.move_on_after(_PING_SECONDS):
                await done.wait()
            if done.is_set():
                status, body = answer[0]
                headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            else:
                await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
                while not done.is_set():
                    await send({"type": "http.response.body", "body": b": ping\r\n\r\n", "more_body": True})
                    with anyio.move_on_after(_PING_SECONDS):
                        await done.wait()
                event = b"event: message\r\ndata: " + answer[0][1] + b"\r\n\r\n"
                await send({"type": "http.response.body", "body": event, "more_body": False})
            tg.cancel_scope.cancel()

    async def _reply(self, request: _Request, scope: Scope) -> tuple[int, bytes]:
        """The HTTP status and JSON-RPC body, an error mapped to its status as the SDK maps it."""
        status = 200
        try:
            result = await self._result(request, scope)
            message: dict[str, Any] = {"jsonrpc": "2.0", "id": request.id, "result": result}
        except Exception as exc:
            error = modern_error_data(exc)
            status = ERROR_CODE_HTTP_STATUS.get(error.code, 200)
            message = {"jsonrpc": "2.0", "id": request.id, "error": error.model_dump(mode="json", exclude_none=True)}
        return status, json.dumps(message, separators=(",", ":")).encode()

    async def _result(self, request: _Request, scope: Scope) -> dict[str, Any]:
        identity = scope.get(IDENTITY_KEY)
        if not isinstance(identity, Identity):
            raise MCPError(code=-32603, message="mcp-guard: request reached MCP without an identity")
        caller = caller_for(identity, scope["path"], None, modern=True)
        pipeline = self.gateway.pipeline(caller.team)
        params = request.params
        handled = _HANDLERS[request.method](self, pipeline, caller, request)
        try:
            result = await handled
        except UpstreamUnavailable as exc:
            raise pipeline.upstream_error(exc) from None
        if isinstance(result, types.InputRequiredResult):
            sealed = self.boundary._seal_result(_SealingContext(request.method, params), result, None)  # type: ignore[arg-type]
            assert isinstance(sealed, types.InputRequiredResult)
            result = sealed
        return self._wire(request, result)

    def _wire(self, request: _Request, result: types.Result) -> dict[str, Any]:
        """The result as the SDK's kernel puts it on the wire: the version's sieve, `resultType`, and
        the `serverInfo` stamp."""
        dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        dumped = wire_methods.serialize_server_result(request.method, request.version, dumped)
        if dumped.get("resultType") is None:
            dumped["resultType"] = "complete"
        meta = dumped.get("_meta")
        if meta is None:
            dumped["_meta"] = {SERVER_INFO_META_KEY: self.server.server_info_stamp}
        elif isinstance(meta, dict) and meta.get(SERVER_INFO_META_KEY) is None:
            dumped["_meta"] = {**meta, SERVER_INFO_META_KEY: self.server.server_info_stamp}
        return dumped

    # -- one per method -------------------------------------------------------------------------------

    async def _call_tool(self, pipeline: Pipeline, caller: Any, request: _Request) -> types.Result:
        params = types.CallToolRequestParams.model_validate(request.params)
        policy = pipeline.loaded.policy
        client = ModernClient(
            request.capabilities,
            allow_url=policy.url_elicitation == "allow",
            allow_sampling=policy.sampling == "allow",
        )
        call = ToolCall(
            caller=caller, name=params.name, arguments=dict(params.arguments or {}), prompter=client,
            relay=client.relay(),
        )  # fmt: skip
        return await pipeline.call_tool(call)

    async def _list_tools(self, pipeline: Pipeline, caller: Any, request: _Request) -> types.Result:
        cursor = request.params.get("cursor")
        return await pipeline.list_tools(caller, cursor if isinstance(cursor, str) else None)

    async def _read_resource(self, pipeline: Pipeline, caller: Any, request: _Request) -> types.Result:
        params = types.ReadResourceRequestParams.model_validate(request.params)
        return await pipeline.read_resource(caller, str(params.uri))

    async def _get_prompt(self, pipeline: Pipeline, caller: Any, request: _Request) -> types.Result:
        params = types.GetPromptRequestParams.model_validate(request.params)
        return await pipeline.get_prompt(caller, params.name, params.arguments)


_HANDLERS: dict[str, Callable[[FastPath, Pipeline, Any, _Request], Awaitable[types.Result]]] = {
    "tools/call": FastPath._call_tool,
    "tools/list": FastPath._list_tools,
    "resources/read": FastPath._read_resource,
    "prompts/get": FastPath._get_prompt,
}


def _modern(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == _VERSION_HEADER:
            return value.decode("latin-1") in MODERN_PROTOCOL_VERSIONS
    return False


def _plain_id(value: object) -> bool:
    return (isinstance(value, str) or isinstance(value, int)) and not isinstance(value, bool)


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The request body, read until it ends or passes `limit` bytes, and whether it ended."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > limit:
            return b"".join(chunks), False


def _replay(body: bytes, whole: bool, receive: Receive) -> Receive:
    """A `receive` that hands the SDK the body already read, then the rest of the exchange."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": not whole}
        return await receive()

    return replay
