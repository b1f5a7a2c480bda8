"""An in-memory SMSAPI sandbox: an MCP server with the hosted SMSAPI server's tool catalogue.

It never touches the network. Results are SMSAPI REST JSON passed through as text, like the
hosted server does; `get_sms`, `get_contacts` and `get_groups` also return the same object as
`structuredContent` and declare an `outputSchema`. REST calls that answer `204 No Content`
are rendered as a small JSON acknowledgement (`{"deleted": true, ...}`) so the model sees
something. Errors are SMSAPI error JSON with `isError: true`.

The tools live by group in `sandbox_messaging`, `sandbox_contacts` and `sandbox_account`, over the
account and registry of `sandbox_core`; this module records calls and serves them.

The call record (`build_sandbox(record_path)`) appends one JSON line per `tools/call`
*before* the call runs, so tests can prove the upstream never saw a call the proxy refused:
`{"ts", "method": "tools/call", "tool", "arguments", "auth_sha256", "era"}` (plus
`"input_responses": [keys]` on a 2026-07-28 retry, and `"asked": ["logs", "progress"]` for what the
caller opted into on that call). `auth_sha256` is the sha256 of the HTTP
Authorization header (null on stdio/in memory); raw header values are never written.

Run: `python -m proxy.backends.sandbox [--host H] [--port N | --stdio] [--record FILE]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import INVALID_PARAMS

# Importing the tool modules registers their tools in TOOLS, in the hosted catalogue's order.
# isort: off
from proxy.backends import sandbox_messaging, sandbox_contacts, sandbox_account  # noqa: F401

# isort: on
from proxy.backends.sandbox_core import TOOLS, Json, Sandbox, SmsapiError, ToolDef, normalise_number, sms_error
from proxy.netutil import bind, run_until_signalled, serve_asgi

__all__ = [
    "RECORD_ENV",
    "TOOLS",
    "CallRecorder",
    "Sandbox",
    "ToolDef",
    "build_sandbox",
    "json_result",
    "normalise_number",
    "run_tool",
    "run_until_signalled",
    "serve_http",
    "serve_stdio",
    "server_arg_parser",
]

SERVER_NAME = "smsapi-sandbox"
RECORD_ENV = "MCP_GUARD_SANDBOX_RECORD"


# --------------------------------------------------------------------------- call record


def auth_digest(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """sha256 of the HTTP Authorization header, so records prove identity without holding secrets."""
    headers = getattr(ctx.request, "headers", None)
    value = headers.get("authorization") if headers is not None else None
    return hashlib.sha256(value.encode()).hexdigest() if value is not None else None


# The SDK hands a request's `_meta` on with the progress token under its Python name.
_ASKED = {"progress_token": "progress", "progressToken": "progress", "io.modelcontextprotocol/logLevel": "logs"}


class CallRecorder:
    """Appends one JSON line per event to a file; a no-op without a path.

    Each line is written and closed (hence flushed) synchronously before the caller goes on,
    so a reader never misses a call that was received, even if the server is killed next.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path else None

    def write(self, entry: Json) -> None:
        if self.path is None:
            return
        line = json.dumps({"ts": time.time(), **entry}, ensure_ascii=False)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def request(self, ctx: ServerRequestContext[Any, Any], method: str, **fields: Any) -> None:
        self.write({"method": method, **fields, "auth_sha256": auth_digest(ctx), "era": ctx.protocol_version})

    def tool_call(self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams) -> None:
        fields: Json = {"tool": params.name, "arguments": params.arguments or {}}
        metas = [m for m in (ctx.meta, params.meta) if isinstance(m, Mapping)]
        if asked := sorted({name for key, name in _ASKED.items() if any(key in meta for meta in metas)}):
            fields["asked"] = asked  # what the caller opted into: progress, log lines
        if params.input_responses:
            # A 2026-07-28 retry: note which answers came back, never their content.
            fields["input_responses"] = sorted(params.input_responses)
        self.request(ctx, "tools/call", **fields)


# --------------------------------------------------------------------------- MCP server


def _validate_arguments(tool: types.Tool, arguments: Json) -> None:
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(tool.input_schema).iter_errors(arguments))
    if error is not None:
        raise sms_error(8, f"Error in request: {error.message}")


def json_result(body: Any, *, is_error: bool = False, structured: bool = False) -> types.CallToolResult:
    """REST JSON passed through as text, optionally also as structuredContent."""
    text = json.dumps(body, ensure_ascii=False)
    return types.CallToolResult(
        content=[types.TextContent(text=text)], is_error=is_error, structured_content=body if structured else None
    )


def run_tool(sb: Sandbox, name: str, arguments: Json) -> types.CallToolResult:
    spec = TOOLS.get(name)
    if spec is None:
        raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {name}")
    try:
        _validate_arguments(spec.tool, arguments)
        body = spec.run(sb, arguments)
    except SmsapiError as exc:
        return json_result(exc.body, is_error=True)
    return json_result(body, structured=spec.tool.output_schema is not None)


def build_sandbox(record_path: str | os.PathLike[str] | None = None) -> Server[Any]:
    """A fresh sandbox server with its own in-memory account."""
    sb = Sandbox()
    recorder = CallRecorder(record_path)

    async def on_list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[spec.tool for spec in TOOLS.values()])

    async def on_call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        recorder.tool_call(ctx, params)
        return run_tool(sb, params.name, params.arguments or {})

    def input_schema(name: str) -> Json | None:
        spec = TOOLS.get(name)
        return spec.tool.input_schema if spec else None

    return Server(
        SERVER_NAME,
        version="1.0.0",
        title="SMSAPI sandbox",
        instructions="In-memory SMSAPI sandbox: the hosted SMSAPI MCP tool catalogue over fake account data. "
        "Nothing is sent; no network is used.",
        get_tool_input_schema=input_schema,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )


# --------------------------------------------------------------------------- serving


async def serve_http(server: Server[Any], host: str, port: int, label: str) -> None:
    """Streamable HTTP at /mcp on a socket we bind, announcing "<label>: MCP endpoint URL" on stderr."""
    app = server.streamable_http_app(streamable_http_path="/mcp", host=host)
    sock = bind(host, port)
    await serve_asgi(app, sock, announce=lambda url: f"{label}: MCP endpoint {url}/mcp")


async def serve_stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


async def serve_sandbox_http(
    host: str = "127.0.0.1", port: int = 0, record_path: str | os.PathLike[str] | None = None
) -> None:
    await serve_http(build_sandbox(record_path), host, port, "mcp-guard sandbox")


async def serve_sandbox_stdio(record_path: str | os.PathLike[str] | None = None) -> None:
    await serve_stdio(build_sandbox(record_path))


def server_arg_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--port", type=int, default=0, help="HTTP port; 0 picks a free one (default)")
    where.add_argument("--stdio", action="store_true", help="serve MCP on stdin/stdout instead of HTTP")
    parser.add_argument("--record", metavar="FILE", help="append one JSON line per received call to FILE")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = server_arg_parser("python -m proxy.backends.sandbox", "In-memory SMSAPI sandbox MCP server.")
    args = parser.parse_args(argv)
    record = args.record or os.environ.get(RECORD_ENV) or None

    async def serve() -> None:
        if args.stdio:
            await serve_sandbox_stdio(record)
        else:
            await serve_sandbox_http(args.host, args.port, record)

    return run_until_signalled(serve, "mcp-guard sandbox")


if __name__ == "__main__":
    raise SystemExit(main())
