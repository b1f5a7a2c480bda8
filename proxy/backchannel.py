"""The fast path's way back to a client while its request runs.

A fast-path answer starts as nothing: it becomes one JSON response when the request ends
without having to say anything first, and an event stream from the first message it must send
before its answer (a confirmation prompt, an upstream's question, a log line, progress) or once
it has been silent for a ping interval. A handshake-era client answers a question by POSTing a
JSON-RPC response on its session; `Backchannel` hands that answer to the request that asked.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, TypeVar

import anyio
import mcp.types as types
from mcp.shared.exceptions import MCPError
from mcp_types import methods as wire_methods
from pydantic import BaseModel
from starlette.types import Send

R = TypeVar("R", bound=BaseModel)

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]


class ResponseStream:
    """One HTTP response: JSON if nothing is sent before the answer, else an event stream."""

    def __init__(self, send: Send, headers: list[tuple[bytes, bytes]]) -> None:
        self._send = send
        self._headers = headers  # besides the content type: the session id of a handshake-era request
        # Uncontended (the common case: one answer, nothing streamed) it is taken without a scheduler round.
        self._lock = anyio.Lock(fast_acquire=True)
        self.streaming = False

    async def message(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        await self._event(b"event: message\r\ndata: " + data + b"\r\n\r\n")

    async def ping(self) -> None:
        await self._event(b": ping\r\n\r\n")

    async def finish(self, status: int, body: bytes | None) -> None:
        """The answer (`body`), or the end of a stream without one (a cancelled request)."""
        async with self._lock:
            if self.streaming:
                event = b"event: message\r\ndata: " + body + b"\r\n\r\n" if body is not None else b""
                await self._send({"type": "http.response.body", "body": event, "more_body": False})
                return
            if body is None:
                await self._send(
                    {"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *self._headers]}
                )
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await self._send({"type": "http.response.start", "status": status, "headers": [*headers, *self._headers]})
            await self._send({"type": "http.response.body", "body": body})

    async def _event(self, event: bytes) -> None:
        async with self._lock:
            if not self.streaming:
                self.streaming = True
                await self._send(
                    {"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *self._headers]}
                )
            await self._send({"type": "http.response.body", "body": event, "more_body": True})


class Backchannel:
    """Requests mcp-guard sends to handshake-era clients on fast-path streams, matched to the answers
    the clients POST back. Ids are strings of our own, so they never meet the SDK's integer ids."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[tuple[str, str], tuple[anyio.Event, list[dict[str, Any]]]] = {}

    async def ask(self, session_id: str, stream: ResponseStream, method: str, params: Any) -> dict[str, Any]:
        request_id = f"mcp-guard-{next(self._ids)}"
        key = (session_id, request_id)
        answered = anyio.Event()
        self._waiting[key] = (answered, answer := [])
        try:
            message = {"jsonrpc": "2.0", "id": request_id, "method": method}
            if params is not None:
                message["params"] = params
            await stream.message(message)
            await answered.wait()
        except anyio.get_cancelled_exc_class():
            # We stopped waiting (a timeout, a cancelled call): the client withdraws its prompt.
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                withdrawn = {"requestId": request_id, "reason": "mcp-guard stopped waiting for the answer"}
                await stream.message({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": withdrawn})
            raise
        finally:
            self._waiting.pop(key, None)
        reply = answer[0]
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            code, text = error.get("code"), error.get("message")
            raise MCPError(
                code=code if isinstance(code, int) else -32603,
                message=text if isinstance(text, str) else "the client answered with an error",
            )
        result = reply.get("result")
        if not isinstance(result, dict):
            raise MCPError(code=-32602, message="the client's answer is not a JSON object")
        return result

    def answer(self, session_id: str, message: dict[str, Any]) -> bool:
        """Hand a client's JSON-RPC response to the request waiting on it; False when none is."""
        request_id = message.get("id")
        waiting = self._waiting.get((session_id, request_id)) if isinstance(request_id, str) else None
        if waiting is None or ("result" in message) == ("error" in message):
            return False
        answered, answer = waiting
        if not answered.is_set():
            answer.append(message)
            answered.set()
        return True


class WireChannel:
    """The `Channel` of a handshake-era fast-path request: its own stream, its session's back-channel."""

    modern = False
    takes_logs = True  # a handshake-era session's log lines, at the level it set

    def __init__(
        self,
        backchannel: Backchannel,
        session_id: str,
        stream: ResponseStream,
        *,
        version: str,
        capabilities: types.ClientCapabilities | None,
        log_floor: types.LoggingLevel | None,
        progress_token: str | int | None,
    ) -> None:
        self._backchannel = backchannel
        self._session_id = session_id
        self._stream = stream
        self._version = version
        self.capabilities = capabilities
        self.log_floor = log_floor
        self._progress_token = progress_token
        self.takes_progress = progress_token is not None

    async def request(self, request: types.ServerRequest, result_type: type[R]) -> R:
        data = request.model_dump(by_alias=True, mode="json", exclude_none=True)
        result = await self._backchannel.ask(self._session_id, self._stream, data["method"], data.get("params"))
        try:
            wire_methods.validate_client_result(data["method"], self._version, result)
        except KeyError:
            pass
        return result_type.model_validate(result, by_name=False)

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        dumped = params.model_dump(by_alias=True, mode="json", exclude_none=True)
        await self._stream.message({"jsonrpc": "2.0", "method": "notifications/message", "params": dumped})

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        if self._progress_token is None:
            return  # the client asked for none
        params: dict[str, Any] = {"progressToken": self._progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self._stream.message({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})


class NoBackchannel:
    """The `Channel` of a 2026-07-28 request on the fast path: nothing goes back before the answer (a
    request that opted into progress or logs takes the SDK's path), and nothing can be asked mid-call."""

    modern = True
    log_floor: types.LoggingLevel | None = None
    takes_logs = False
    takes_progress = False

    def __init__(self, capabilities: types.ClientCapabilities | None) -> None:
        self.capabilities = capabilities

    async def request(self, request: types.ServerRequest, result_type: type[R]) -> R:
        raise MCPError(code=-32603, message="a 2026-07-28 request cannot be asked anything mid-call")

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        return None  # 2026-07-28 logs go only to requests that opted in

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        return None  # no progress token: the client asked for none
