"""The SMSAPI sandbox as a replaced upstream: a new version, or one that speaks only the handshake era.

`--legacy` answers `server/discover` with handshake-era versions only, so an `auto` client (mcp-guard's
upstream connection) falls back to `initialize` and holds an `Mcp-Session-Id`, which a restart makes
unknown. `--drop TOOL` leaves a tool out of the catalogue; `--describe TOOL=TEXT` gives a tool a new
description (drift against a pin). Both repeat. Everything else is `proxy.backends.sandbox`, record
included.

Run: `python tests/servers/sandbox_variant.py --port N [--record FILE] [--legacy] [--drop T] [--describe T=X]`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.server import ServerRequestContext
from mcp_types.version import LATEST_HANDSHAKE_VERSION

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from proxy.backends import sandbox
from proxy.netutil import run_until_signalled

NAME = "smsapi-sandbox-variant"


def main(argv: list[str] | None = None) -> int:
    parser = sandbox.server_arg_parser("sandbox_variant.py", "The SMSAPI sandbox, changed for a restart.")
    parser.add_argument("--legacy", action="store_true", help="advertise only handshake-era versions")
    parser.add_argument("--drop", action="append", default=[], metavar="TOOL", help="leave TOOL out")
    parser.add_argument("--describe", action="append", default=[], metavar="TOOL=TEXT", help="new description")
    args = parser.parse_args(argv)
    for name in args.drop:
        del sandbox.TOOLS[name]
    for change in args.describe:
        name, _, description = change.partition("=")
        spec = sandbox.TOOLS[name]
        tool = spec.tool.model_copy(update={"description": description})
        sandbox.TOOLS[name] = dataclasses.replace(spec, tool=tool)
    server = sandbox.build_sandbox(args.record or os.environ.get(sandbox.RECORD_ENV) or None)
    if args.legacy:

        async def discover_legacy(ctx: ServerRequestContext[Any, Any], params: types.RequestParams) -> Any:
            # Naming no modern version is an explicit legacy advertisement (as tests/servers/conformance_fixture).
            return types.DiscoverResult(
                supported_versions=[LATEST_HANDSHAKE_VERSION], capabilities=server.get_capabilities()
            )

        server.add_request_handler("server/discover", types.RequestParams, discover_legacy)

    async def serve() -> None:
        if args.stdio:
            await sandbox.serve_stdio(server)
        else:
            await sandbox.serve_http(server, args.host, args.port, NAME)

    return run_until_signalled(serve, NAME)


if __name__ == "__main__":
    raise SystemExit(main())
