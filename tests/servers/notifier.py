"""An upstream that announces things outside any request: resource updates, list changes, log lines.

Tools: `touch(uri)` sends `notifications/resources/updated` for `uri` to every session that
subscribed to it; `change()` sends `notifications/tools/list_changed` to the calling session.
`resources/subscribe`, `resources/unsubscribe` and `logging/setLevel` are recorded (`--record FILE`).

Run: `python tests/servers/notifier.py --stdio | --port N [--record FILE]`.
"""

from __future__ import annotations

import os
import sys
import warnings
import weakref
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.shared.subscriptions import ResourceUpdated, ToolsListChanged
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from proxy.backends.sandbox import CallRecorder, run_until_signalled, serve_http, serve_stdio, server_arg_parser

Ctx = ServerRequestContext[Any, Any]
NAME = "notifier"
URIS = ["note://a", "note://b"]
READ_ONLY = types.ToolAnnotations(read_only_hint=True)


def build(record_path: str | os.PathLike[str] | None = None) -> Server[Any]:
    recorder = CallRecorder(record_path)
    bus = InMemorySubscriptionBus()  # 2026-07-28 clients hear changes on their subscriptions/listen stream
    subscribers: dict[str, weakref.WeakSet[Any]] = {uri: weakref.WeakSet() for uri in URIS}
    tools = [
        types.Tool(
            name="touch",
            description="Announce that a resource changed.",
            input_schema={"type": "object", "properties": {"uri": {"type": "string"}}, "required": ["uri"]},
            annotations=READ_ONLY,
        ),
        types.Tool(name="change", description="Announce that the tool list changed.",
                   input_schema={"type": "object"}, annotations=READ_ONLY),
        types.Tool(name="log", description="Log one line at info and one at warning.",
                   input_schema={"type": "object"}, annotations=READ_ONLY),
        types.Tool(name="open_url", description="Ask the user to open a page (URL-mode elicitation).",
                   input_schema={"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
                   annotations=READ_ONLY),
    ]  # fmt: skip

    async def on_list_tools(ctx: Ctx, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def on_call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> Any:
        recorder.tool_call(ctx, params)
        if params.name == "open_url":
            return await open_url(ctx, params)
        if params.name == "touch":
            uri = str((params.arguments or {}).get("uri"))
            for session in list(subscribers.get(uri, ())):
                await session.send_resource_updated(uri)
            await bus.publish(ResourceUpdated(uri=uri))
        elif params.name == "log":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                for level in ("info", "warning"):
                    await ctx.session.send_log_message(level, f"a {level} line", related_request_id=ctx.request_id)
        elif params.name == "change":
            if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
                await bus.publish(ToolsListChanged())
            else:
                await ctx.session.send_tool_list_changed()
        return types.CallToolResult(content=[types.TextContent(text="done")])

    async def open_url(ctx: Ctx, params: types.CallToolRequestParams) -> Any:
        url = str((params.arguments or {}).get("url"))
        message = "Sign in <b>now</b> to continue."
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            answer = await ctx.session.elicit_url(message, url, "eid-1", related_request_id=ctx.request_id)
        elif not params.input_responses:
            url_params = types.ElicitRequestURLParams(message=message, url=url, elicitation_id="eid-1")
            return types.InputRequiredResult(
                input_requests={"open": types.ElicitRequest(params=url_params)}, request_state="open-url"
            )
        else:
            answer = types.ElicitResult.model_validate(params.input_responses["open"])
        recorder.request(ctx, "url-answer", action=answer.action)
        return types.CallToolResult(content=[types.TextContent(text=f"answer: {answer.action}")])

    async def on_list_resources(ctx: Ctx, params: Any) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[types.Resource(uri=uri, name=uri[7:]) for uri in URIS])

    async def on_read_resource(ctx: Ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        return types.ReadResourceResult(contents=[types.TextResourceContents(uri=params.uri, text="note")])

    async def on_subscribe(ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
        recorder.request(ctx, "resources/subscribe", uri=str(params.uri))
        subscribers.setdefault(str(params.uri), weakref.WeakSet()).add(ctx.session)
        return types.EmptyResult()

    async def on_unsubscribe(ctx: Ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        recorder.request(ctx, "resources/unsubscribe", uri=str(params.uri))
        subscribers.get(str(params.uri), weakref.WeakSet()).discard(ctx.session)
        return types.EmptyResult()

    async def on_set_level(ctx: Ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
        recorder.request(ctx, "logging/setLevel", level=params.level)
        return types.EmptyResult()

    return Server(
        NAME,
        version="1.0.0",
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
        on_list_resources=on_list_resources,
        on_read_resource=on_read_resource,
        on_subscribe_resource=on_subscribe,
        on_unsubscribe_resource=on_unsubscribe,
        on_set_logging_level=on_set_level,
        on_subscriptions_listen=_recording(ListenHandler(bus), recorder),
    )


def _recording(handler: ListenHandler, recorder: CallRecorder) -> Any:
    async def listen(ctx: Ctx, params: Any) -> Any:
        uris = sorted(params.notifications.resource_subscriptions or ())
        recorder.request(ctx, "subscriptions/listen", uris=uris)
        return await handler(ctx, params)

    return listen


def main(argv: list[str] | None = None) -> int:
    args = server_arg_parser("notifier.py", "An upstream that announces things outside requests.").parse_args(argv)
    server = build(args.record)

    async def serve() -> None:
        if args.stdio:
            await serve_stdio(server)
        else:
            await serve_http(server, args.host, args.port, NAME)

    return run_until_signalled(serve, NAME)


if __name__ == "__main__":
    raise SystemExit(main())
