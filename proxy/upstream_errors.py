"""How an upstream failed, in mcp-guard's words: the exception and the descriptions of its causes.

The SDK reports a lost connection and an upstream's own error alike, as an `MCPError`; these tell
them apart (`sdk_said`), keep the upstream's words apart from ours (`upstream_text`, untrusted and
never in `str(exc)`) and describe a failure without a secret in it (`describe`).
"""

from __future__ import annotations

import re

import httpx2
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, PARSE_ERROR, REQUEST_TIMEOUT
from pydantic import ValidationError

from proxy.upstream_transport import ResultTooLarge


class UpstreamUnavailable(Exception):
    """The upstream could not be reached or broke mid-request.

    `detail` is mcp-guard's own words and carries no secret; `upstream_text` is what the upstream
    itself said (an error message), untrusted: it never enters `str(exc)`, and reaches a client
    only cleaned and enveloped (E6).
    """

    def __init__(self, server: str, detail: str, upstream_text: str | None = None) -> None:
        super().__init__(f"upstream '{server}' is unavailable: {detail}")
        self.server = server
        self.detail = detail
        self.upstream_text = upstream_text
        self.answered = False  # the server sent an MCP/HTTP error: it is there, just not usable as asked


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a connection failure, in mcp-guard's own words."""
    if isinstance(exc, MCPError):
        return f"it answered with error {exc.code}"
    if isinstance(exc, ValidationError):
        return "it sent a response that is not valid MCP"
    if isinstance(exc, ResultTooLarge):
        return str(exc)  # our own words
    if isinstance(exc, httpx2.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(exc, httpx2.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return f"could not start or reach it ({exc.strerror or type(exc).__name__})"
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions[:3])
    return type(exc).__name__


def logged(exc: UpstreamUnavailable | MCPError) -> str:
    """A failure as a log line may show it. An upstream's error message is its own text: with a line
    break it would add lines of its choosing to the log (which is the audit log without
    `audit.path`), so only mcp-guard's words about it are logged."""
    return str(exc) if isinstance(exc, UpstreamUnavailable) else describe(exc)


def server_answered(exc: BaseException) -> bool:
    if isinstance(exc, MCPError):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(server_answered(e) for e in exc.exceptions)
    return False


# What the SDK itself says when the transport gave up.  An upstream may answer -32000 or -32001 for
# errors of its own (servers use -32000 for ordinary errors): those are its words, not a lost link.
_SDK_TIMED_OUT = re.compile(r"Request '[^']*' timed out")
_SDK_CLOSED = ("Connection closed", "SSE stream ended without a response",
               "SSE stream ended and reconnection attempts were exhausted")  # fmt: skip


def sdk_said(exc: MCPError) -> bool:
    if exc.code == CONNECTION_CLOSED:
        return exc.message in _SDK_CLOSED or exc.message.startswith("SSE stream failed: ")
    return exc.code == REQUEST_TIMEOUT and _SDK_TIMED_OUT.fullmatch(exc.message) is not None


NOT_MCP = object()
"""The `data` of the error mcp-guard's stdio reader puts in place of an answer that is not JSON-RPC."""
# The SDK's HTTP transport answers a body it cannot parse with this, quoting the body in pydantic's words.
_SDK_UNPARSED = ("Failed to parse JSON response: ", "Failed to parse SSE message: ")


def not_mcp(exc: MCPError) -> bool:
    """The request's answer could not be read as JSON-RPC. An upstream can send these words as its
    own error, and gains nothing by it: its words are then dropped."""
    return exc.data is NOT_MCP or (exc.code == PARSE_ERROR and exc.message.startswith(_SDK_UNPARSED))


def upstream_error_kind(exc: MCPError) -> str:
    if sdk_said(exc):
        return "connection closed" if exc.code == CONNECTION_CLOSED else "timed out"
    return f"it answered with error {exc.code}"


def upstream_text(exc: BaseException) -> str | None:
    """The upstream's own words in a failure, if it sent any (never our transport's)."""
    if isinstance(exc, MCPError) and not sdk_said(exc) and not not_mcp(exc):
        return exc.message
    if isinstance(exc, BaseExceptionGroup):
        texts = [t for e in exc.exceptions[:3] if (t := upstream_text(e))]
        return "\n".join(texts) or None
    return None
