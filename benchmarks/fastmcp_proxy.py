"""fastmcp's own proxy in front of one upstream: the third peer mcp-guard is measured against.

    benchmarks/.venv-peers/bin/python benchmarks/fastmcp_proxy.py --upstream URL [--port 0]

Runs in the side venv run.py makes (fastmcp 4.1.6 with mcp 2.3.0), never in the project's: fastmcp
is a peer we compare with, not a dependency. The proxy is built the way fastmcp's documentation
recommends, `fastmcp.server.create_proxy(url)`, with its defaults: a fresh backend client per
request whose protocol era mirrors the caller's, so both eras are served as they come. Streamable
HTTP at "/" on a socket bound here (TCP_NODELAY, as for the plain proxy), announced as
"fastmcp-proxy: MCP endpoint URL/" on stderr once bound, which is what tests.harness.spawn waits for.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys

import anyio
from fastmcp.server import create_proxy


def listen(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP,
    # and without it every small response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(upstream: str, sock: socket.socket) -> None:
    host, port = sock.getsockname()[:2]
    proxy = create_proxy(upstream, name="fastmcp-proxy")
    print(f"fastmcp-proxy: MCP endpoint http://{host}:{port}/", file=sys.stderr, flush=True)
    # host/port only feed fastmcp's Host-header protection and its log line; the socket is ours.
    await proxy.run_http_async(
        show_banner=False,
        host=host,
        port=port,
        path="/",
        log_level="warning",
        uvicorn_config={"access_log": False},
        sockets=[sock],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fastmcp's proxy in front of one upstream, for benchmarks.")
    parser.add_argument("--upstream", required=True, help="the upstream's Streamable HTTP URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    sock = listen(args.host, args.port)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM ends it like Ctrl-C: quietly
    try:
        anyio.run(serve, args.upstream, sock)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
