"""Requests on an upstream's SDK session, sent past the SDK's result validation.

`raw_request` stamps a request as the SDK would and returns the upstream's result as wire JSON,
for mcp-guard's own allowlist to read (proxy/untrusted.py); `list_page` and `walk` read listings
through it, each listed entry kept once across every credential's connection.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import mcp.types as types
from mcp.client import session as sdk_session
from mcp.client.session import ClientSession
from mcp.shared.dispatcher import CallOptions, ProgressFnT
from mcp.shared.inbound import MCP_NAME_HEADER, encode_header_value
from mcp_types import LOG_LEVEL_META_KEY
from mcp_types import methods as wire_methods
from pydantic import BaseModel

from proxy import upstream_wire
from proxy.upstream_wire import NotMCP

R = TypeVar("R", bound=BaseModel)


_LISTINGS: dict[str, tuple[Any, type[Any]]] = {
    "tools": (types.ListToolsRequest, types.ListToolsResult),
    "prompts": (types.ListPromptsRequest, types.ListPromptsResult),
    "resources": (types.ListResourcesRequest, types.ListResourcesResult),
    "resource_templates": (types.ListResourceTemplatesRequest, types.ListResourceTemplatesResult),
}


async def walk(session: ClientSession, kind: str) -> dict[str, Any]:
    """Every entry of a listing over every page, by name."""
    entries: dict[str, Any] = {}
    async for page in pages(session, kind):
        entries.update((entry.name, entry) for entry in getattr(page, kind))
    return entries


async def pages(session: ClientSession, kind: str) -> AsyncIterator[Any]:
    """Every page of a listing, at most 1000: an upstream's cursor cannot keep mcp-guard listing for ever."""
    cursor: str | None = None
    for _ in range(1000):
        page = await list_page(session, kind, cursor)
        yield page
        if (cursor := page.next_cursor) is None:
            return


async def list_page(session: ClientSession, kind: str, cursor: str | None) -> Any:
    """One page of a listing (`kind` "tools", "prompts", "resources" or "resource_templates") as the
    session's `list_*` returns it, with its entries kept once across connections (`_shared`).

    It is asked on the direct path where there is one (upstream_wire), not through the session's
    `list_*`: the SDK's dispatcher keeps the last message it received until the next one, and a
    listing kept so by each credential's idle connection cost 120 KB apiece.
    """
    request_type, result_type = _LISTINGS[kind]
    params = types.PaginatedRequestParams(cursor=cursor)
    page = await sdk_result(session, request_type(params=params), result_type)
    if isinstance(page, types.ListToolsResult):
        page = session._absorb_tool_listing(page, complete=cursor is None and page.next_cursor is None)
    entries = [_shared(entry) for entry in getattr(page, kind)]
    if kind == "tools":
        # The session keeps each tool's output schema too (for results it validates itself): the kept copy.
        schemas = session._tool_output_schemas
        for tool in entries:
            if tool.name in schemas and schemas[tool.name] == tool.output_schema:
                schemas[tool.name] = tool.output_schema
    return page.model_copy(update={kind: entries})


async def sdk_result(session: ClientSession, request: Any, result_type: type[R]) -> R:
    """`request`'s result as `ClientSession.send_request` returns it (same checks, same model), sent
    by `raw_request`."""
    raw = await raw_request(session, request)
    sdk_session._clamp_inbound_ttl(raw)
    version = session.protocol_version or "2025-11-25"  # the SDK's own fallback
    method = request.method
    try:
        wire_methods.validate_server_result(method, version, raw)
    except KeyError:
        pass
    if not (foreign := sdk_session._later_revision_fields(method, version)).isdisjoint(raw):
        raw = {key: value for key, value in raw.items() if key not in foreign}
    return result_type.model_validate(raw, by_name=False)


# Every credential has its own connection and listing; an upstream lists the same definitions to
# all of them, and one SMSAPI listing is about 200 KB of models. Identical entries are kept once.
_ENTRIES: weakref.WeakValueDictionary[tuple[str, str], Any] = weakref.WeakValueDictionary()


def _shared(entry: Any) -> Any:
    """The one kept copy of a listed entry equal to `entry` (entries are read, never changed)."""
    try:
        key = (type(entry).__qualname__, entry.model_dump_json(by_alias=True))
    except ValueError:  # what pydantic cannot write as JSON (nested too deep) is simply not shared
        return entry
    kept = _ENTRIES.get(key)
    if kept is None:
        _ENTRIES[key] = kept = entry
    return kept


async def raw_request(
    session: ClientSession,
    request: types.ClientRequest,
    *,
    progress: ProgressFnT | None = None,
    logs: bool = True,
) -> dict[str, Any]:
    """Send `request` on the SDK session and return the upstream's result as wire JSON, unvalidated.
    `logs=False` leaves out the request's 2026-07-28 log opt-in: nobody would receive its log lines.

    The SDK validates a result against the MCP schema before anyone sees it, so one content block
    of a type it does not know fails the whole result.  mcp-guard reads results through its own
    allowlist instead (proxy/untrusted.py), which turns such a block into a placeholder.  This stamps
    the request as `ClientSession.send_request` does (mcp is pinned to one version); a 2026-07-28
    session over Streamable HTTP then sends it itself (upstream_wire), any other on the SDK dispatcher.
    """
    data = request.model_dump(by_alias=True, mode="json", exclude_none=True)
    opts: CallOptions = {}
    session._stamp(data, opts)
    if not logs and isinstance(meta := (data.get("params") or {}).get("_meta"), dict) and LOG_LEVEL_META_KEY in meta:
        data["params"]["_meta"] = {key: value for key, value in meta.items() if key != LOG_LEVEL_META_KEY}
    headers = opts.setdefault("headers", {})
    if (key := type(request).name_param) is not None and MCP_NAME_HEADER not in headers:
        name = (data.get("params") or {}).get(key)
        if isinstance(name, str):
            headers[MCP_NAME_HEADER] = encode_header_value(name)
    if session._session_read_timeout_seconds is not None:
        opts["timeout"] = session._session_read_timeout_seconds
    if progress is not None:
        opts["on_progress"] = progress
    wire = upstream_wire.direct(session)
    if wire is not None:
        raw = await upstream_wire.send(session, wire, data, opts)
    else:
        raw = await session._dispatcher.send_raw_request(data["method"], data.get("params"), opts)
    if not isinstance(raw, dict):
        raise NotMCP("a result that is not a JSON object")
    return raw
