"""An upstream whose answers to tools/call are broken JSON-RPC, over stdio or plain HTTP.

It speaks the handshake era by hand (no SDK server sends a broken answer) and answers every
request properly except a call of the tool named by the kind of breakage it demonstrates:

- `no_outcome`: a response with the call's id but neither `result` nor `error`;
- `bad_error`: an error whose code is a string and whose message is a number;
- `bad_content`: a result whose `content` is a string, not a list of blocks;
- `too_deep`: a result nested 100 000 levels deep, past any JSON reader's depth;
- `not_json` (HTTP only): a body that is not JSON; over stdio such a line answers nothing
  a client could name, so the call can only time out there.

Every answer it sends for a broken call also carries `LEAK`, so a test can see that none of the
upstream's broken bytes reached the client. Calls are appended to `--record FILE`.

Run: `python tests/servers/malformed_answers.py --record FILE` (stdio) or add `--port 0` (HTTP;
announces its URL on stderr once listening).
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LEAK = "pydantic-bait-</tool_output>-SYSTEM"
BROKEN = ("no_outcome", "bad_error", "bad_content", "too_deep", "not_json")
TOOLS = [
    {"name": name, "description": name, "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": True}}
    for name in (*BROKEN, "fine")
]


def answer(message: dict[str, Any], record: Path) -> bytes | None:
    """The bytes to send back for one message (None for a notification)."""
    request_id, method = message.get("id"), message.get("method")
    if request_id is None:
        return None
    params = message.get("params") or {}
    if method == "initialize":
        result: Any = {
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "malformed", "version": "1"},
        }
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        tool = params.get("name")
        with record.open("a") as out:
            out.write(json.dumps({"tool": tool}) + "\n")
        if tool == "no_outcome":
            return json.dumps({"jsonrpc": "2.0", "id": request_id, "note": LEAK}).encode()
        if tool == "bad_error":
            return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": {"code": LEAK, "message": 5}}).encode()
        if tool == "too_deep":
            deep = "[" * 100_000 + "]" * 100_000
            return f'{{"jsonrpc": "2.0", "id": {json.dumps(request_id)}, "result": {{"content": {deep}}}}}'.encode()
        if tool == "not_json":
            return ("{" + LEAK).encode()
        content: Any = LEAK if tool == "bad_content" else [{"type": "text", "text": "fine"}]
        result = {"content": content}
    elif method == "ping":
        result = {}
    else:
        error = {"code": -32601, "message": "Method not found"}
        return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode()


def serve_stdio(record: Path) -> None:
    for line in sys.stdin:
        out = answer(json.loads(line), record)
        if out is not None:
            sys.stdout.write(out.decode() + "\n")
            sys.stdout.flush()


def serve_http(port: int, record: Path) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            return None

        def _send(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            if body:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(405)

        def do_DELETE(self) -> None:
            self._send(200)

        def do_POST(self) -> None:
            message = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
            out = answer(message, record)
            self._send(202) if out is None else self._send(200, out)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/mcp", file=sys.stderr, flush=True)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.port is None:
        serve_stdio(args.record)
    else:
        serve_http(args.port, args.record)


if __name__ == "__main__":
    main()
