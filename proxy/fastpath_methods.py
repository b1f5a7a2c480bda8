"""The fast path's hot methods: what it takes of a request, and one function per method that hands it
to the team's pipeline as the SDK's server would (`tools/call` with its downstream channel for
confirmations, relayed questions, progress and logs).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import mcp.types as types
from mcp.server.connection import Connection

from proxy.downstream import Channel, Downstream
from proxy.pipeline import Caller, Pipeline, ToolCall

# Each hot method and the feature an upstream must offer for it to be served here.
HOT = {"tools/call": "tools", "tools/list": "tools", "resources/read": "resources", "prompts/get": "prompts"}


@dataclass(frozen=True)
class HotRequest:
    """A request the fast path takes: its id, method and params, and what its answer is shaped for."""

    id: str | int
    method: str
    params: dict[str, Any]
    version: str  # the protocol version its answer is shaped for
    capabilities: types.ClientCapabilities | None
    session_id: str | None = None  # handshake era
    connection: Connection | None = None  # handshake era
    progress_token: str | int | None = None

    @property
    def modern(self) -> bool:
        return self.session_id is None


async def _call_tool(pipeline: Pipeline, caller: Caller, request: HotRequest, channel: Channel) -> types.Result:
    params = types.CallToolRequestParams.model_validate(request.params)
    policy = pipeline.loaded.policy
    downstream = Downstream(
        channel, params, allow_sampling=policy.sampling == "allow", timeout=policy.confirm.timeout_seconds,
        allow_url=policy.url_elicitation == "allow",
    )  # fmt: skip
    call = ToolCall(
        caller=caller, name=params.name, arguments=dict(params.arguments or {}), prompter=downstream,
        relay=downstream.relay(), progress=downstream.progress_relay,
    )  # fmt: skip
    return await pipeline.call_tool(call)


async def _list_tools(pipeline: Pipeline, caller: Caller, request: HotRequest, channel: Channel) -> types.Result:
    cursor = request.params.get("cursor")
    return await pipeline.list_tools(caller, cursor if isinstance(cursor, str) else None)


async def _read_resource(pipeline: Pipeline, caller: Caller, request: HotRequest, channel: Channel) -> types.Result:
    params = types.ReadResourceRequestParams.model_validate(request.params)
    return await pipeline.read_resource(caller, str(params.uri))


async def _get_prompt(pipeline: Pipeline, caller: Caller, request: HotRequest, channel: Channel) -> types.Result:
    params = types.GetPromptRequestParams.model_validate(request.params)
    return await pipeline.get_prompt(caller, params.name, params.arguments)


HANDLERS: dict[str, Callable[[Pipeline, Caller, HotRequest, Channel], Awaitable[types.Result]]] = {
    "tools/call": _call_tool,
    "tools/list": _list_tools,
    "resources/read": _read_resource,
    "prompts/get": _get_prompt,
}
