"""A hostile upstream that serves whatever a JSON "shape file" says (issue 13).

The shape file is re-read on every request, so a test starts this server (and mcp-guard in front
of it) once and rewrites the file for each example. Only `instructions` is read once, at start
(the SDK sends it in the handshake / discover result). Keys (all optional; wire spelling):

    instructions        str
    tools               [Tool as on the wire: name, title, description, inputSchema, outputSchema,
                         annotations, _meta, ...]
    calls               {tool name: {"progress": [{progress, total?, message?}],
                                     "logs": [{level, logger?, data}],
                                     "result": CallToolResult as on the wire   (or)
                                     "error": {code, message, data?}}}
    resources           [Resource]          resourceTemplates  [ResourceTemplate]
    reads               {uri: ReadResourceResult | {"error": {...}}}
    prompts             [Prompt]            promptResults      {name: GetPromptResult | {"error": ...}}
    completion          Completion (values, total?, hasMore?) answered for any reference

Results go on the wire exactly as the file spells them: the SDK validates a handler's result
against the protocol's result models, which refuse a content block of a type no MCP version
defines and drop fields they do not know. So each handler returns a valid stand-in (unknown
blocks replaced by text) that the SDK checks and stamps (`resultType`, the 2026 `serverInfo`
`_meta`), and the `_raw_results` middleware then puts the file's JSON in its place, keeping the
stamps. That is how an unknown block type, unknown fields and any `_meta` really reach the proxy.

`--legacy-only` refuses `server/discover`, so an `auto` client (mcp-guard's upstream connection)
falls back to the 2025 handshake era: one server binary serves each era the test wants upstream.

Every request is recorded to `--record FILE` (or env MCP_GUARD_SHAPE_RECORD) before it is
answered, one JSON line each, in the sandbox's CallRecorder format plus `params`:
`{"ts", "method", "params", "auth_sha256", "era"}`.

Run: `python tests/servers/shapes.py --shape FILE (--stdio | --port N) [--record FILE] [--legacy-only]`.
"""

from __future__ import annotations

import contextvars
import json
import os
import sys
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.context import HandlerResult
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types.jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND, ErrorData, JSONRPCError, JSONRPCRequest
from pydantic import BaseModel

if __package__ in (None, ""):
    # Run as a script: make the repository root importable for `proxy`.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from proxy.backends.sandbox import (
    CallRecorder,
    run_until_signalled,
    serve_http,
    serve_stdio,
    server_arg_parser,
)

Ctx = ServerRequestContext[Any, Any]
Json = dict[str, Any]
CallNext = Callable[[Ctx], Awaitable[HandlerResult]]
M = TypeVar("M", bound=BaseModel)

NAME = "shapes"
SHAPE_ENV = "MCP_GUARD_SHAPE_FILE"
RECORD_ENV = "MCP_GUARD_SHAPE_RECORD"
KNOWN_BLOCKS = frozenset({"text", "image", "audio", "resource_link", "resource"})

# The raw JSON a handler wants on the wire, handed to the middleware that wraps it. A mutable box
# set by the middleware: the handler runs inside the middleware's context, so it can fill the box.
_RAW: contextvars.ContextVar[dict[str, Json] | None] = contextvars.ContextVar("shapes_raw", default=None)


class ShapeFile:
    """The shape file, read afresh on every access (a test rewrites it between requests)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path else None

    def read(self) -> Json:
        if self.path is None or not self.path.exists():
            return {}
        try:
            shape = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # half-written by the test: treat as empty rather than crash the server
        return shape if isinstance(shape, dict) else {}


def _raw(result: Json, model: type[M], stand_in: Json | None = None) -> M:
    """Queue `result` to go on the wire as spelt; return the model the SDK validates and stamps.

    A model, not a dict: the SDK fills the fields a 2026-07-28 result needs (`resultType`,
    `ttlMs`, `cacheScope`) only from a model's defaults.
    """
    box = _RAW.get()
    if box is not None:
        box["raw"] = result
    return model.model_validate(result if stand_in is None else stand_in)


def _error(spec: Any) -> MCPError:
    if not isinstance(spec, dict):
        return MCPError(code=INVALID_PARAMS, message=str(spec))
    return MCPError(code=int(spec.get("code", -32603)), message=str(spec.get("message", "")), data=spec.get("data"))


def _valid_block(block: Any) -> Any:
    # The SDK's stand-in for a block type it does not know: what the raw JSON replaces anyway.
    if isinstance(block, dict) and block.get("type") not in KNOWN_BLOCKS:
        return {"type": "text", "text": f"(stand-in for a {block.get('type')!r} block)"}
    return block


def _stand_in(result: Json) -> Json:
    content = [_valid_block(b) for b in result.get("content", [])]
    return {**result, "content": content}


def _raw_results(legacy_only: bool) -> Callable[[Ctx, CallNext], Awaitable[HandlerResult]]:
    async def middleware(ctx: Ctx, call_next: CallNext) -> HandlerResult:
        if legacy_only and ctx.method == "server/discover":
            raise MCPError(code=METHOD_NOT_FOUND, message="Method not found", data="server/discover")
        box: dict[str, Json] = {}
        token = _RAW.set(box)
        try:
            result = await call_next(ctx)
        finally:
            _RAW.reset(token)
        raw = box.get("raw")
        if raw is None or not isinstance(result, dict):
            return result
        # The file's JSON replaces the validated dump; the SDK's own stamps (resultType, the
        # serverInfo _meta of 2026-07-28, cache hints) stay, the file's _meta merged over them.
        merged = {**result, **raw}
        meta = {**(result.get("_meta") or {}), **(raw.get("_meta") or {})}
        if meta:
            merged["_meta"] = meta
        return merged

    return middleware


def _recording(recorder: CallRecorder) -> Callable[[Ctx, CallNext], Awaitable[HandlerResult]]:
    async def middleware(ctx: Ctx, call_next: CallNext) -> HandlerResult:
        recorder.request(ctx, ctx.method, params=ctx.params)
        return await call_next(ctx)

    return middleware


def build_shapes(
    shape_path: str | os.PathLike[str] | None,
    record_path: str | os.PathLike[str] | None = None,
    *,
    legacy_only: bool = False,
) -> Server[Any]:
    shapes = ShapeFile(shape_path)
    recorder = CallRecorder(record_path)

    async def on_list_tools(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return _raw({"tools": shapes.read().get("tools", [])}, types.ListToolsResult)

    async def on_call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        call = shapes.read().get("calls", {}).get(params.name)
        if not isinstance(call, dict):
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {params.name}")
        for step in call.get("progress", []):
            await ctx.session.report_progress(step["progress"], step.get("total"), step.get("message"))
        for entry in call.get("logs", []):
            # send_log_message is deprecated with the logging capability; it still applies the
            # 2026 per-request opt-in, which mcp-guard's upstream connection gives.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                await ctx.session.send_log_message(
                    entry.get("level", "info"), entry.get("data"), entry.get("logger"), ctx.request_id
                )
        if "error" in call:
            raise _error(call["error"])
        result = call.get("result", {"content": []})
        return _raw(result, types.CallToolResult, _stand_in(result))

    async def on_list_resources(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        return _raw({"resources": shapes.read().get("resources", [])}, types.ListResourcesResult)

    async def on_list_templates(
        ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        templates = shapes.read().get("resourceTemplates", [])
        return _raw({"resourceTemplates": templates}, types.ListResourceTemplatesResult)

    async def on_read_resource(ctx: Ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        read = shapes.read().get("reads", {}).get(params.uri)
        if not isinstance(read, dict):
            raise MCPError(code=INVALID_PARAMS, message=f"Resource not found: {params.uri}")
        if "error" in read:
            raise _error(read["error"])
        return _raw(read, types.ReadResourceResult)

    async def on_list_prompts(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        return _raw({"prompts": shapes.read().get("prompts", [])}, types.ListPromptsResult)

    async def on_get_prompt(ctx: Ctx, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        got = shapes.read().get("promptResults", {}).get(params.name)
        if not isinstance(got, dict):
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown prompt: {params.name}")
        if "error" in got:
            raise _error(got["error"])
        return _raw(got, types.GetPromptResult)

    async def on_completion(ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
        return _raw({"completion": shapes.read().get("completion", {"values": []})}, types.CompleteResult)

    def input_schema(name: str) -> dict[str, Any] | None:
        for tool in shapes.read().get("tools", []):
            if isinstance(tool, dict) and tool.get("name") == name:
                schema = tool.get("inputSchema")
                return schema if isinstance(schema, dict) else None
        return None

    instructions = shapes.read().get("instructions")
    server: Server[Any] = Server(
        NAME,
        version="1.0.0",
        instructions=instructions if isinstance(instructions, str) else None,
        get_tool_input_schema=input_schema,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
        on_list_resources=on_list_resources,
        on_list_resource_templates=on_list_templates,
        on_read_resource=on_read_resource,
        on_list_prompts=on_list_prompts,
        on_get_prompt=on_get_prompt,
        on_completion=on_completion,
    )
    # Recording first (outermost): a request is on record before anything can refuse it.
    server.middleware.extend([_recording(recorder), _raw_results(legacy_only)])
    return server


async def serve_stdio_legacy_only(server: Server[Any]) -> None:
    """stdio in the 2025 handshake era only: `server/discover` is refused before the server sees it.

    (Over stdio the SDK settles a connection's era on its first request, before any middleware
    runs: a discover probe would lock the connection to 2026-07-28 and the client's fallback
    `initialize` would then be refused. Answering the probe here keeps the first request the
    handshake.)
    """
    async with stdio_server() as (read_stream, write_stream):
        send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def pump() -> None:
            async with send:
                async for item in read_stream:
                    message = item.message if isinstance(item, SessionMessage) else None
                    if isinstance(message, JSONRPCRequest) and message.method == "server/discover":
                        refusal = ErrorData(code=METHOD_NOT_FOUND, message="Method not found", data="server/discover")
                        answer = JSONRPCError(jsonrpc="2.0", id=message.id, error=refusal)
                        await write_stream.send(SessionMessage(answer))
                        continue
                    await send.send(item)

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            await server.run(receive, write_stream, server.create_initialization_options())
            tg.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = server_arg_parser("shapes.py", "An MCP upstream serving whatever a JSON shape file says.")
    parser.add_argument("--shape", metavar="FILE", help=f"the shape file (default: ${SHAPE_ENV})")
    parser.add_argument("--legacy-only", action="store_true", help="refuse server/discover (2025 handshake era)")
    args = parser.parse_args(argv)
    server = build_shapes(
        args.shape or os.environ.get(SHAPE_ENV),
        args.record or os.environ.get(RECORD_ENV) or None,
        legacy_only=args.legacy_only,
    )

    async def serve() -> None:
        if args.stdio:
            await (serve_stdio_legacy_only(server) if args.legacy_only else serve_stdio(server))
        else:
            await serve_http(server, args.host, args.port, NAME)

    return run_until_signalled(serve, NAME)


if __name__ == "__main__":
    raise SystemExit(main())
