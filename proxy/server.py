"""The downstream side: one low-level MCP `Server` served over stdio or Streamable HTTP.

This module knows transports and requests; it turns each request into a `Caller` and hands
it to the team's `Pipeline`. It never decides anything itself.
"""

from __future__ import annotations

import logging
import warnings
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import mcp.types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.server.subscriptions import ListenHandler
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import INTERNAL_ERROR
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

from proxy import __version__
from proxy.audit import digest_arguments, digest_session
from proxy.downstream import Downstream
from proxy.gateway import IDENTITY_KEY, Gateway, Identity, caller_for, current_identity
from proxy.pipeline import Caller, Pipeline, ToolCall
from proxy.upstream_changes import Relay
from proxy.upstream_errors import UpstreamUnavailable

logger = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)


def caller_of(ctx: ServerRequestContext[Any, Any], gateway: Gateway) -> Caller:
    request = ctx.request
    if request is None:
        # stdio: one local user, and the process is the session.
        return Caller(team=gateway.default_team, principal="stdio", session="stdio")
    identity = request.scope.get(IDENTITY_KEY)
    if not isinstance(identity, Identity):
        raise MCPError(code=INTERNAL_ERROR, message="mcp-guard: request reached MCP without an identity")
    modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
    return caller_for(identity, request.scope["path"], request.headers.get("mcp-session-id"), modern=modern)


# -- what the gate and the relay need from the downstream request ------------------------------------


class SdkChannel:
    """The way to a downstream request's client through the SDK's session (the `Downstream`'s `Channel`)."""

    def __init__(self, ctx: ServerRequestContext[Any, Any]) -> None:
        self.ctx = ctx
        self.modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        self.capabilities = ctx.session.client_capabilities
        listener = listener_of(ctx)
        self.log_floor = listener.log_level if listener is not None else None
        # The SDK's session decides what reaches the client (a 2026-07-28 request's opt-ins included).
        self.takes_logs = self.takes_progress = True

    async def request(self, request: types.ServerRequest, result_type: type[R]) -> R:
        metadata = ServerMessageMetadata(related_request_id=self.ctx.request_id)
        return await self.ctx.session.send_request(request, result_type, metadata=metadata)

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        # `send_log_message` applies the 2026-07-28 rule that logs go only to requests that opted in;
        # it is deprecated along with the logging capability, which is still forwarded faithfully.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await self.ctx.session.send_log_message(
                params.level, params.data, logger=params.logger, related_request_id=self.ctx.request_id
            )

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        await self.ctx.session.report_progress(progress, total, message)


class SessionListener:
    """What one handshake-era downstream connection hears from its upstreams outside any request:
    list_changed, and updates of the resources it subscribed to (and no other's).

    Sent on the connection's standalone stream; held weakly, so a closed connection is forgotten.
    """

    def __init__(self, connection: Any) -> None:
        self._connection = weakref.ref(connection)
        self.subscriptions: set[str] = set()
        self.log_level: types.LoggingLevel | None = None  # what logging/setLevel asked for, if it did

    async def notify(self, server: str, notification: types.ServerNotification) -> None:
        connection = self._connection()
        if connection is None:
            return
        # Rebuilt, not passed on: the upstream's `_meta` (and anything else it added) stays behind.
        params: dict[str, Any] | None = None
        if isinstance(notification, types.ResourceUpdatedNotification):
            uri = str(notification.params.uri)
            if uri not in self.subscriptions:
                return
            params = {"uri": uri}  # the client's own words: the URI it subscribed to
        elif not isinstance(notification, _LIST_CHANGED):
            return
        await connection.notify(notification.method, params)


_LIST_CHANGED = (
    types.ToolListChangedNotification,
    types.PromptListChangedNotification,
    types.ResourceListChangedNotification,
)
_LISTENERS: weakref.WeakKeyDictionary[Any, SessionListener] = weakref.WeakKeyDictionary()
# One handler per upstream connection's bus: it bounds the streams open on it.
_LISTEN_HANDLERS: weakref.WeakKeyDictionary[Any, ListenHandler] = weakref.WeakKeyDictionary()


def listener_of(ctx: ServerRequestContext[Any, Any]) -> SessionListener | None:
    """The connection's listener; none in the sessionless 2026-07-28 era, which has no channel for it."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return None
    # A ServerSession lives for one request; the connection it belongs to is what lasts.
    return listener_for(ctx.session._connection)


def listener_for(connection: Any) -> SessionListener:
    listener = _LISTENERS.get(connection)
    if listener is None:
        listener = _LISTENERS[connection] = SessionListener(connection)
    return listener


def _remember_connections(gateway: Gateway) -> ServerMiddleware[Any]:
    """Middleware: each handshake-era session's connection by its id, so the fast path can serve the
    session's requests with what its `initialize` said (capabilities, protocol version)."""

    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        connection = ctx.session._connection
        if connection.session_id is not None and connection.session_id not in gateway.connections:
            gateway.connections[connection.session_id] = connection
        return await call_next(ctx)

    return middleware


async def _internal_errors(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Middleware: an exception no handler answered is an internal error in our words. The SDK would
    answer a handshake-era request with `{"code": 0, "message": str(exc)}`: empty, or internals."""
    try:
        return await call_next(ctx)
    except (MCPError, ValidationError):
        raise  # answered as such by the SDK, without pydantic's report
    except Exception:
        logger.exception("%s failed inside mcp-guard", ctx.method)
        raise MCPError(
            code=INTERNAL_ERROR, message="mcp-guard: internal error; the request was not completed"
        ) from None


def _audit_refused_state(gateway: Gateway) -> ServerMiddleware[Any]:
    """Middleware outside `RequestStateBoundary`: a confirmation state it rejects is an audited refusal too."""

    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        try:
            return await call_next(ctx)
        except MCPError as exc:
            data = exc.data if isinstance(exc.data, dict) else {}
            if ctx.method == "tools/call" and data.get("reason") == "invalid_request_state":
                _audit_state_refusal(ctx, gateway)
            raise

    return middleware


def _audit_state_refusal(ctx: ServerRequestContext[Any, Any], gateway: Gateway) -> None:
    try:
        caller = caller_of(ctx, gateway)
        pipeline = gateway.pipeline(caller.team)
    except MCPError:
        return
    params = ctx.params or {}
    name = params.get("name")
    arguments = params.get("arguments")
    target = pipeline.catalog.resolve(name) if isinstance(name, str) else None
    pipeline.audit.write(
        team=caller.team,
        principal=caller.principal,
        session=digest_session(caller.session),
        server=target[0] if target else None,
        tool=name if isinstance(name, str) else None,
        decision="denied",
        reason="confirmation state forged, altered, expired or of another caller",
        args_sha256=digest_arguments(arguments if isinstance(arguments, dict) else {}),
        duration_ms=0.0,
    )


# -- the MCP server ----------------------------------------------------------------------------------


def build_server(gateway: Gateway, *, instructions: str | None = None) -> Server[Gateway]:
    def pipe(ctx: ServerRequestContext[Any, Any]) -> tuple[Caller, Pipeline]:
        caller = caller_of(ctx, gateway)
        pipeline = gateway.pipeline(caller.team)
        if (listener := listener_of(ctx)) is not None:
            pipeline.listen(caller, listener)
        return caller, pipeline

    async def on_list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller, pipeline = pipe(ctx)
        return await _upstream_errors(pipeline, pipeline.list_tools(caller, params.cursor if params else None))

    async def on_call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        caller, pipeline = pipe(ctx)
        policy = pipeline.loaded.policy
        downstream = Downstream(
            SdkChannel(ctx),
            params,
            allow_sampling=policy.sampling == "allow",
            timeout=policy.confirm.timeout_seconds,
            allow_url=policy.url_elicitation == "allow",
        )
        call = ToolCall(
            caller=caller,
            name=params.name,
            arguments=dict(params.arguments or {}),
            prompter=downstream,
            relay=downstream.relay(),
            progress=downstream.progress_relay,
        )
        return await pipeline.call_tool(call)

    async def on_list_resources(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        caller, pipeline = pipe(ctx)
        return await _upstream_errors(pipeline, pipeline.list_resources(caller, params.cursor if params else None))

    async def on_list_resource_templates(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        caller, pipeline = pipe(ctx)
        return await _upstream_errors(
            pipeline, pipeline.list_resource_templates(caller, params.cursor if params else None)
        )

    async def on_read_resource(
        ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        caller, pipeline = pipe(ctx)
        return await _upstream_errors(pipeline, pipeline.read_resource(caller, str(params.uri)))

    async def on_list_prompts(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        caller, pipeline = pipe(ctx)
        return await _upstream_errors(pipeline, pipeline.list_prompts(caller, params.cursor if params else None))

    async def on_get_prompt(
        ctx: ServerRequestContext[Any, Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        caller, pipeline = pipe(ctx)
        return await _upstream_errors(pipeline, pipeline.get_prompt(caller, params.name, params.arguments))

    async def on_completion(
        ctx: ServerRequestContext[Any, Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        caller, pipeline = pipe(ctx)
        return await _upstream_errors(pipeline, pipeline.complete(caller, params))

    async def on_subscribe_resource(
        ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        caller, pipeline = pipe(ctx)
        uri = str(params.uri)
        await _upstream_errors(pipeline, pipeline.subscribe(caller, uri, _log_relay(ctx, pipeline)))
        if (listener := listener_of(ctx)) is not None:
            listener.subscriptions.add(uri)
        return types.EmptyResult()

    async def on_unsubscribe_resource(
        ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        caller, pipeline = pipe(ctx)
        uri = str(params.uri)
        listener = listener_of(ctx)
        if listener is not None and uri in listener.subscriptions:
            listener.subscriptions.discard(uri)
            await _upstream_errors(pipeline, pipeline.unsubscribe(caller, uri, _log_relay(ctx, pipeline)))
        return types.EmptyResult()

    async def on_subscriptions_listen(
        ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        caller, pipeline = pipe(ctx)
        uris = list(params.notifications.resource_subscriptions or ())
        try:
            async with pipeline.listening(caller, uris) as bus:
                handler = _LISTEN_HANDLERS.get(bus)
                if handler is None:
                    handler = _LISTEN_HANDLERS[bus] = ListenHandler(bus)
                return await handler(ctx, params)
        except UpstreamUnavailable as exc:
            raise pipeline.upstream_error(exc) from None

    async def on_set_logging_level(
        ctx: ServerRequestContext[Any, Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        caller, pipeline = pipe(ctx)
        if (listener := listener_of(ctx)) is not None:
            listener.log_level = params.level
        await pipeline.set_logging_level(caller, params.level)
        return types.EmptyResult()

    def tool_schema(name: str) -> Mapping[str, Any] | None:
        # The SDK asks before any middleware, with no request context: the caller's team comes from
        # the HTTP request's identity. Another team's tool of that name is another upstream's.
        identity = current_identity.get()
        if identity is None or identity.team not in gateway.pipelines:
            return None  # no caller known: no schema that could be another team's
        return gateway.pipelines[identity.team].tool_schema(name)

    @asynccontextmanager
    async def lifespan(_: Server[Gateway]) -> AsyncIterator[Gateway]:
        async with gateway.running() as running:
            yield running

    server: Server[Gateway] = Server(
        "mcp-guard",
        version=__version__,
        instructions=instructions,
        lifespan=lifespan,
        get_tool_input_schema=tool_schema,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
        on_subscriptions_listen=on_subscriptions_listen,
        **_offered(
            gateway.offered,
            resources={
                "on_list_resources": on_list_resources,
                "on_list_resource_templates": on_list_resource_templates,
                "on_read_resource": on_read_resource,
            },
            subscribe={
                "on_subscribe_resource": on_subscribe_resource,
                "on_unsubscribe_resource": on_unsubscribe_resource,
            },
            prompts={"on_list_prompts": on_list_prompts, "on_get_prompt": on_get_prompt},
            completions={"on_completion": on_completion},
            logging={"on_set_logging_level": on_set_logging_level},
        ),
    )
    # Upstream list_changed notifications are relayed (SessionListener), so the capability says so.
    announce = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
    server.create_initialization_options = partial(server.create_initialization_options, announce)  # type: ignore[method-assign]
    timeout = max(p.policy.confirm.timeout_seconds for p in gateway.policies.values())
    server.middleware.append(_internal_errors)
    server.middleware.append(_remember_connections(gateway))
    server.middleware.append(_audit_refused_state(gateway))
    ttl = timeout + 60
    security = (
        RequestStateSecurity(keys=[gateway.state_key], ttl=ttl)
        if gateway.state_key is not None
        else RequestStateSecurity.ephemeral(ttl=ttl)
    )
    server.middleware.append(RequestStateBoundary(security, default_audience="mcp-guard"))
    return server


def _log_relay(ctx: ServerRequestContext[Any, Any], pipeline: Pipeline) -> Relay:
    """The relay of a request that is no tool call: it carries the upstream's log lines, nothing else."""
    policy = pipeline.loaded.policy
    return Downstream(SdkChannel(ctx), None, allow_sampling=False, timeout=policy.confirm.timeout_seconds).relay()


def offered_by(caps: types.ServerCapabilities | None) -> set[str]:
    """The features an upstream's capabilities offer, as `Gateway.offered` names them."""
    if caps is None:
        return set()
    names = {name for name in ("resources", "prompts", "completions", "logging") if getattr(caps, name) is not None}
    if caps.resources is not None and caps.resources.subscribe:
        names.add("subscribe")
    return names


def _offered(offered: frozenset[str] | None, **handlers: dict[str, Any]) -> dict[str, Any]:
    """The handlers of the features some upstream offers (all of them when that is not known), so an
    advertised method never answers "Method not found"."""
    chosen: dict[str, Any] = {}
    for feature, group in handlers.items():
        if offered is None or feature in offered:
            chosen.update(group)
    return chosen


async def _upstream_errors(pipeline: Pipeline, awaitable: Any) -> Any:
    """Listings and reads: an unavailable upstream is a JSON-RPC error naming it, never a crash."""
    try:
        return await awaitable
    except UpstreamUnavailable as exc:
        raise pipeline.upstream_error(exc) from None
