"""The bytes of a fast-path exchange: reading and replaying a POST body, the JSON-RPC checks made
before the SDK would see it, and the refusals written in mcp-guard's words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mcp_types import jsonrpc_message_adapter
from mcp_types import methods as wire_methods
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send


@dataclass(frozen=True)
class Refused:
    """A body mcp-guard refuses before the SDK sees it, in its own words."""

    code: int
    message: str


NOT_A_MESSAGE = "Invalid Request: the body must be one JSON-RPC 2.0 message object"


def json_rpc_message(decoded: dict[str, Any]) -> bool:
    """Whether the SDK's handshake-era transport reads `decoded` as a JSON-RPC message (what it
    refuses, it refuses with pydantic's report). Checked only for what the fast path replays."""
    try:
        jsonrpc_message_adapter.validate_python(decoded, by_name=False)
    except ValidationError:
        return False
    return True


def lenient_json(body: bytes) -> bool:
    """Whether `json.loads` (the SDK's 2026-07-28 parser) reads the body."""
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True


async def refuse(code: int, message: str, send: Send, session_id: str | None = None) -> None:
    """A 400 with a JSON-RPC error without an id, as the SDK's transports answer a body they refuse."""
    body = json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}, separators=(",", ":")
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if session_id is not None:
        headers.append((b"mcp-session-id", session_id.encode("latin-1")))
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def routing(scope: Scope) -> tuple[str | None, str | None]:
    """The protocol version and session id headers, each the first of its name, as the SDK's session
    manager reads them: a later duplicate must not make a request that opens a handshake-era session
    look like a sessionless 2026-07-28 one here (it would escape the session cap)."""
    version = session_id = None
    for name, value in scope["headers"]:
        if name == b"mcp-protocol-version":
            if version is None:
                version = value.decode("latin-1")
        elif name == b"mcp-session-id":
            if session_id is None:
                session_id = value.decode("latin-1")
    return version, session_id


def valid_request(method: str, version: str, params: dict[str, Any] | None) -> bool:
    try:
        wire_methods.validate_client_request(method, version, params)
    except Exception:
        return False  # the SDK words the refusal
    return True


def plain_id(value: object) -> bool:
    """A JSON-RPC request id as mcp-guard takes one, from a client or an upstream: a string or an
    integer (a bool is no integer here)."""
    return isinstance(value, str | int) and not isinstance(value, bool)


async def read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
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


def replay_body(body: bytes, whole: bool, receive: Receive) -> Receive:
    """A `receive` that hands the SDK the body already read, then the rest of the exchange."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": not whole}
        return await receive()

    return replay
