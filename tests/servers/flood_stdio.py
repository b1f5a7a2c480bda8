"""A hostile stdio upstream: `flood` writes one line that never ends; `ok` answers normally.

Run: `python tests/servers/flood_stdio.py`. `flood` writes `FLOOD_MB` MiB (default 64) without a
newline straight to the stdout pipe (a copy of fd 1 taken before the SDK diverts it), then waits: a
reader that keeps everything until a newline grows without end. `ok` shows the server works.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server, ServerRequestContext

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from proxy.backends.sandbox import run_until_signalled, serve_stdio

Ctx = ServerRequestContext[Any, Any]
# The SDK's stdio server moves fd 1 onto stderr and answers on a copy; this copy is the wire too.
WIRE = os.dup(1)
SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
READ = types.ToolAnnotations(read_only_hint=True)
TOOLS = [
    types.Tool(name="flood", description="Writes an endless line.", input_schema=SCHEMA, annotations=READ),
    types.Tool(name="ok", description="Answers fine.", input_schema=SCHEMA, annotations=READ),
]


def build() -> Server[Any]:
    async def on_list_tools(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=TOOLS)

    async def on_call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name == "flood":
            block = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"' + b"x" * (1 << 20)
            for _ in range(int(os.environ.get("FLOOD_MB", "64"))):
                try:
                    await anyio.to_thread.run_sync(os.write, WIRE, block)
                except OSError:
                    break  # the reader went away
                block = b"x" * (1 << 20)
            await anyio.sleep_forever()
        return types.CallToolResult(content=[types.TextContent(text="fine")])

    return Server("flood", version="1.0.0", on_list_tools=on_list_tools, on_call_tool=on_call_tool)


if __name__ == "__main__":
    raise SystemExit(run_until_signalled(lambda: serve_stdio(build()), "flood"))
