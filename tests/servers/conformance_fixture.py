"""The official MCP conformance suite's server scenarios, served by a Python upstream.

`@modelcontextprotocol/conformance` (pinned in tests/npm) tests a server against what its own
TypeScript "everything" reference server offers (examples/servers/typescript/everything-server.ts
in the suite's repository); that server is not on the npm registry, so this fixture offers the
same names, argument shapes and outputs — read from the scenario sources in the package
(`conformance list --server`) and from the reference server of the pinned version, 0.1.16: the
`test_*` tools, `json_schema_2020_12_tool`, `test_reconnection`, the `test://` resources and
template, the `test_*` prompts, completion, `logging/setLevel` and `resources/subscribe` and
`unsubscribe`.

How the reference puts things on the wire matters to a proxy, so the handshake era copies it:
the logging and progress tools notify on the call's own stream, but elicitation and sampling are
requests on the session's standalone (GET) stream, not tied to the call — as `server.request()`
of the TypeScript SDK 1.x sends them — and so are the log messages answering `logging/setLevel`,
`resources/subscribe` and `unsubscribe`. On 2026-07-28 server-to-client requests are
`InputRequiredResult` round trips, logging is the per-request opt-in the SDK enforces, and
subscriptions are a `subscriptions/listen` stream.

`--legacy` makes it advertise only handshake-era versions from `server/discover`, so an SDK
client in `mode="auto"` (as mcp-guard's upstream connection is) falls back to `initialize` —
the only era the reference server speaks.

Run: `python tests/servers/conformance_fixture.py --stdio | --port N [--legacy] [--record FILE]`.
The record has the sandbox's format plus a `method` field: tools/call, logging/setLevel,
resources/subscribe, resources/unsubscribe, subscriptions/listen, and the answers the client
gave (`elicitation/answer`, `sampling/answer`).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import INVALID_PARAMS
from mcp_types.version import LATEST_HANDSHAKE_VERSION, MODERN_PROTOCOL_VERSIONS

if __package__ in (None, ""):
    # Run as a script: make the repository root importable for `proxy`.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from proxy.backends.sandbox import (
    CallRecorder,
    run_until_signalled,
    serve_http,
    serve_stdio,
    server_arg_parser,
)

Ctx = ServerRequestContext[Any, Any]
ToolResult = types.CallToolResult | types.InputRequiredResult
Handler = Callable[[Ctx, types.CallToolRequestParams], Awaitable[ToolResult]]

NAME = "conformance-fixture"
LOGGER = "conformance-test-server"  # the reference server's logger name for its own log messages
RECORD_ENV = "MCP_GUARD_CONFORMANCE_RECORD"
STEP_SECONDS = 0.05  # the scenarios ask for "~50ms" between log and progress notifications
# A question nobody answers must end the call, not hang the suite (the reference catches the
# error and says so in its text; the scenario then reports what it did not see).
ASK_TIMEOUT_SECONDS = 20.0

# The reference server's media: a 1x1 red PNG and a minimal (empty) WAV.
RED_PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
MINIMAL_WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
LOG_LEVELS: list[types.LoggingLevel] = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]

# --------------------------------------------------------------------------- schemas, as the reference sends them

RESPONSE_SCHEMA: types.ElicitRequestedSchema = {
    "type": "object",
    "properties": {"response": {"type": "string", "description": "User's response"}},
    "required": ["response"],
}
# SEP-1034: a default for every primitive type, with exactly these values.
DEFAULTS_SCHEMA: types.ElicitRequestedSchema = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
    "required": [],
}
# SEP-1330: the five enum forms, each in the shape the scenario checks (and nothing of the others).
ENUMS_SCHEMA: types.ElicitRequestedSchema = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Select one option",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Select one option with titles",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Select one option (legacy)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Select multiple options",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Select multiple options with titles",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
    "required": [],
}
# SEP-1613: $schema, $defs and additionalProperties must survive tools/list untouched (what the
# scenario checks); the later reference adds the rest of the 2020-12 vocabulary of SEP-2106
# ($anchor, allOf/anyOf, if/then/else), which must survive a proxy just the same.
JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def _tool(name: str, description: str, properties: dict[str, Any] | None = None) -> types.Tool:
    props = properties or {}
    schema: dict[str, Any] = {"type": "object", "properties": props, "required": list(props)}
    # Read-only and non-destructive, so a proxy's confirmation gate has no reason to stop any of them.
    annotations = types.ToolAnnotations(read_only_hint=True, destructive_hint=False)
    return types.Tool(name=name, description=description, input_schema=schema, annotations=annotations)


TOOLS: list[types.Tool] = [
    _tool("test_simple_text", "Tests simple text content response"),
    _tool("test_image_content", "Tests image content response"),
    _tool("test_audio_content", "Tests audio content response"),
    _tool("test_embedded_resource", "Tests embedded resource content response"),
    _tool("test_multiple_content_types", "Tests response with multiple content types (text, image, resource)"),
    _tool("test_tool_with_logging", "Tests tool that emits log messages during execution"),
    _tool("test_tool_with_progress", "Tests tool that reports progress notifications"),
    _tool("test_error_handling", "Tests error response handling"),
    _tool("test_reconnection", "Tests SSE stream disconnection and client reconnection (SEP-1699)"),
    _tool(
        "test_sampling",
        "Tests server-initiated sampling (LLM completion request)",
        {"prompt": {"type": "string", "description": "The prompt to send to the LLM"}},
    ),
    _tool(
        "test_elicitation",
        "Tests server-initiated elicitation (user input request)",
        {"message": {"type": "string", "description": "The message to show the user"}},
    ),
    _tool("test_elicitation_sep1034_defaults", "Tests elicitation with default values per SEP-1034"),
    _tool("test_elicitation_sep1330_enums", "Tests elicitation with enum schema improvements per SEP-1330"),
    types.Tool(
        name="json_schema_2020_12_tool",
        description="Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)",
        input_schema=JSON_SCHEMA_2020_12,
        annotations=types.ToolAnnotations(read_only_hint=True, destructive_hint=False),
    ),
]
TOOLS_BY_NAME = {tool.name: tool for tool in TOOLS}


def _text(text: str, *, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=is_error)


def _modern(ctx: Ctx) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def _state_for(tool: str) -> str:
    """The request_state of a 2026-07-28 input round trip: which tool asked (nothing else to bind)."""
    return f"{NAME}:{tool}"


def _answer(params: types.CallToolRequestParams, key: str) -> types.InputResponse | None:
    if not params.input_responses or key not in params.input_responses:
        return None
    if params.request_state != _state_for(params.name):
        raise MCPError(code=INVALID_PARAMS, message="request_state does not match this call")
    return params.input_responses[key]


# --------------------------------------------------------------------------- server


class Fixture:
    """Per-process state: the record, and each handshake-era session's log level."""

    def __init__(self, recorder: CallRecorder) -> None:
        self.recorder = recorder
        self.levels: weakref.WeakKeyDictionary[ServerSession, types.LoggingLevel] = weakref.WeakKeyDictionary()

    async def log(
        self, ctx: Ctx, level: types.LoggingLevel, data: str, *, on_call: bool, logger: str | None = None
    ) -> None:
        """A log message on the call's stream (`on_call`) or the session's standalone stream."""
        # Handshake era: honour the session's logging/setLevel (default: everything). 2026-07-28:
        # the SDK applies the request's own opt-in level, and the call's stream is the only one.
        if not _modern(ctx):
            floor = self.levels.get(ctx.session, "debug")
            if LOG_LEVELS.index(level) < LOG_LEVELS.index(floor):
                return
        related = ctx.request_id if on_call else None
        # send_log_message is deprecated with the logging capability in 2026-07-28; it still
        # implements both eras' delivery rules, which is what this fixture needs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            await ctx.session.send_log_message(level, data, logger=logger, related_request_id=related)

    async def _ask(
        self,
        ctx: Ctx,
        params: types.CallToolRequestParams,
        key: str,
        request: types.ElicitRequest | types.CreateMessageRequest,
        result_type: type[types.ElicitResult] | type[types.CreateMessageResult],
    ) -> types.ElicitResult | types.CreateMessageResult | types.InputRequiredResult | str:
        """Put a question to the client: the answer, the round trip to return (2026-07-28), or why not."""
        if _modern(ctx):
            response = _answer(params, key)
            if response is None:
                return types.InputRequiredResult(input_requests={key: request}, request_state=_state_for(params.name))
            if not isinstance(response, result_type):
                raise MCPError(code=INVALID_PARAMS, message=f"input response {key!r} is not a {result_type.__name__}")
            return response
        try:
            # No related request id: like the reference, the question goes on the standalone stream.
            with anyio.fail_after(ASK_TIMEOUT_SECONDS):
                return await ctx.session.send_request(request, result_type)
        except Exception as exc:  # the reference turns any failure into text; so does this
            return f"{type(exc).__name__}: {exc}"

    # ----------------------------------------------------------------------- tools

    async def simple_text(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        return _text("This is a simple text response for testing.")

    async def image(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        return types.CallToolResult(content=[types.ImageContent(data=RED_PIXEL_PNG, mime_type="image/png")])

    async def audio(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        return types.CallToolResult(content=[types.AudioContent(data=MINIMAL_WAV, mime_type="audio/wav")])

    async def embedded(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        resource = types.TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
        )
        return types.CallToolResult(content=[types.EmbeddedResource(resource=resource)])

    async def mixed(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        resource = types.TextResourceContents(
            uri="test://mixed-content-resource",
            mime_type="application/json",
            text=json.dumps({"test": "data", "value": 123}, separators=(",", ":")),
        )
        return types.CallToolResult(
            content=[
                types.TextContent(text="Multiple content types test:"),
                types.ImageContent(data=RED_PIXEL_PNG, mime_type="image/png"),
                types.EmbeddedResource(resource=resource),
            ]
        )

    async def logging_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        for i, message in enumerate(("Tool execution started", "Tool processing data", "Tool execution completed")):
            if i:
                await anyio.sleep(STEP_SECONDS)
            await self.log(ctx, "info", message, on_call=True)
        return _text("Tool with logging executed successfully")

    async def progress(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        # report_progress sends nothing without a progress token, as the spec requires.
        for i, value in enumerate((0, 50, 100)):
            if i:
                await anyio.sleep(STEP_SECONDS)
            await ctx.session.report_progress(value, 100, f"Completed step {value} of 100")
        return _text("Tool with progress executed successfully")

    async def error(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        return _text("This tool intentionally returns an error for testing", is_error=True)

    async def reconnection(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        # The SDK hands out a close callback only with an event store and a 2025-11-25+ request
        # header; the scenario sends 2025-03-26, so the answer comes on the same stream (which the
        # scenario reports as warnings, not failures).
        if ctx.close_sse_stream is not None:
            await ctx.close_sse_stream()
            await anyio.sleep(0.1)
        return _text(
            "Reconnection test completed successfully. "
            "If you received this, the client properly reconnected after stream closure."
        )

    async def sampling(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        prompt = str((params.arguments or {}).get("prompt", ""))
        message = types.SamplingMessage(role="user", content=types.TextContent(text=prompt))
        request = types.CreateMessageRequest(
            params=types.CreateMessageRequestParams(messages=[message], max_tokens=100)
        )
        answer = await self._ask(ctx, params, "sample", request, types.CreateMessageResult)
        if isinstance(answer, types.InputRequiredResult):
            return answer
        if isinstance(answer, str):
            return _text(f"Sampling not supported or error: {answer}")
        assert isinstance(answer, types.CreateMessageResult)
        text = answer.content.text if isinstance(answer.content, types.TextContent) else "No response"
        self.recorder.request(ctx, "sampling/answer", tool=params.name, text=text)
        return _text(f"LLM response: {text}")

    def _elicit_tool(
        self, message: Callable[[types.CallToolRequestParams], str], schema: types.ElicitRequestedSchema, prefix: str
    ) -> Handler:
        async def run(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
            form = types.ElicitRequestFormParams(message=message(params), requested_schema=schema)
            answer = await self._ask(ctx, params, "form", types.ElicitRequest(params=form), types.ElicitResult)
            if isinstance(answer, types.InputRequiredResult):
                return answer
            if isinstance(answer, str):
                return _text(f"Elicitation not supported or error: {answer}")
            assert isinstance(answer, types.ElicitResult)
            self.recorder.request(
                ctx, "elicitation/answer", tool=params.name, action=answer.action, content=answer.content
            )
            content = json.dumps(answer.content or {}, separators=(",", ":"))
            return _text(f"{prefix}: action={answer.action}, content={content}")

        return run

    async def schema_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        arguments = json.dumps(params.arguments or {}, separators=(",", ":"))
        return _text(f"JSON Schema 2020-12 tool called with: {arguments}")

    def handlers(self) -> dict[str, Handler]:
        return {
            "test_simple_text": self.simple_text,
            "test_image_content": self.image,
            "test_audio_content": self.audio,
            "test_embedded_resource": self.embedded,
            "test_multiple_content_types": self.mixed,
            "test_tool_with_logging": self.logging_tool,
            "test_tool_with_progress": self.progress,
            "test_error_handling": self.error,
            "test_reconnection": self.reconnection,
            "test_sampling": self.sampling,
            "test_elicitation": self._elicit_tool(
                lambda p: str((p.arguments or {}).get("message", "")), RESPONSE_SCHEMA, "User response"
            ),
            "test_elicitation_sep1034_defaults": self._elicit_tool(
                lambda p: "Please review and update the form fields with defaults",
                DEFAULTS_SCHEMA,
                "Elicitation completed",
            ),
            "test_elicitation_sep1330_enums": self._elicit_tool(
                lambda p: "Please select options from the enum fields", ENUMS_SCHEMA, "Elicitation completed"
            ),
            "json_schema_2020_12_tool": self.schema_tool,
        }

    # ----------------------------------------------------------------------- the rest of the surface

    async def set_level(self, ctx: Ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
        self.levels[ctx.session] = params.level
        self.recorder.request(ctx, "logging/setLevel", level=params.level)
        await self.log(ctx, "info", f"Log level set to: {params.level}", on_call=False, logger=LOGGER)
        return types.EmptyResult()

    async def subscribe(self, ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
        self.recorder.request(ctx, "resources/subscribe", uri=params.uri)
        await self.log(ctx, "info", f"Subscribed to resource: {params.uri}", on_call=False, logger=LOGGER)
        return types.EmptyResult()

    async def unsubscribe(self, ctx: Ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        self.recorder.request(ctx, "resources/unsubscribe", uri=params.uri)
        await self.log(ctx, "info", f"Unsubscribed from resource: {params.uri}", on_call=False, logger=LOGGER)
        return types.EmptyResult()


RESOURCES = [
    types.Resource(
        uri="test://static-text",
        name="static-text",
        title="Static Text Resource",
        description="A static text resource for testing",
        mime_type="text/plain",
    ),
    types.Resource(
        uri="test://static-binary",
        name="static-binary",
        title="Static Binary Resource",
        description="A static binary resource (image) for testing",
        mime_type="image/png",
    ),
    types.Resource(
        uri="test://watched-resource",
        name="watched-resource",
        title="Watched Resource",
        description="A resource to subscribe to",
        mime_type="text/plain",
    ),
]
TEMPLATES = [
    types.ResourceTemplate(
        uri_template="test://template/{id}/data",
        name="template",
        title="Resource Template",
        description="A resource template with parameter substitution",
        mime_type="application/json",
    )
]
TEMPLATE_PREFIX, TEMPLATE_SUFFIX = "test://template/", "/data"


def _read(uri: str) -> types.TextResourceContents | types.BlobResourceContents:
    if uri == "test://static-text":
        return types.TextResourceContents(
            uri=uri, mime_type="text/plain", text="This is the content of the static text resource."
        )
    if uri == "test://static-binary":
        return types.BlobResourceContents(uri=uri, mime_type="image/png", blob=RED_PIXEL_PNG)
    if uri == "test://watched-resource":
        return types.TextResourceContents(uri=uri, mime_type="text/plain", text="Watched resource content")
    if uri.startswith(TEMPLATE_PREFIX) and uri.endswith(TEMPLATE_SUFFIX):
        ident = uri[len(TEMPLATE_PREFIX) : -len(TEMPLATE_SUFFIX)]
        if ident and "/" not in ident:
            body = {"id": ident, "templateTest": True, "data": f"Data for ID: {ident}"}
            text = json.dumps(body, separators=(",", ":"))
            return types.TextResourceContents(uri=uri, mime_type="application/json", text=text)
    raise MCPError(code=INVALID_PARAMS, message=f"Resource not found: {uri}")


PROMPTS = [
    types.Prompt(
        name="test_simple_prompt", title="Simple Test Prompt", description="A simple prompt without arguments"
    ),
    types.Prompt(
        name="test_prompt_with_arguments",
        title="Prompt With Arguments",
        description="A prompt with required arguments",
        arguments=[
            types.PromptArgument(name="arg1", description="First test argument", required=True),
            types.PromptArgument(name="arg2", description="Second test argument", required=True),
        ],
    ),
    types.Prompt(
        name="test_prompt_with_embedded_resource",
        title="Prompt With Embedded Resource",
        description="A prompt that includes an embedded resource",
        arguments=[types.PromptArgument(name="resourceUri", description="URI of the resource to embed", required=True)],
    ),
    types.Prompt(
        name="test_prompt_with_image", title="Prompt With Image", description="A prompt that includes image content"
    ),
]
# The reference completes nothing; offering values lets a proxy's relay of them be seen.
COMPLETIONS = {"arg1": ["paris", "park", "party", "test", "testValue1"], "arg2": ["world", "testValue2"]}


def _prompt(name: str, arguments: dict[str, str]) -> types.GetPromptResult:
    def user(content: types.ContentBlock) -> types.PromptMessage:
        return types.PromptMessage(role="user", content=content)

    if name == "test_simple_prompt":
        return types.GetPromptResult(messages=[user(types.TextContent(text="This is a simple prompt for testing."))])
    if name == "test_prompt_with_arguments":
        if "arg1" not in arguments or "arg2" not in arguments:
            raise MCPError(code=INVALID_PARAMS, message="arg1 and arg2 are required")
        text = f"Prompt with arguments: arg1='{arguments['arg1']}', arg2='{arguments['arg2']}'"
        return types.GetPromptResult(messages=[user(types.TextContent(text=text))])
    if name == "test_prompt_with_embedded_resource":
        if "resourceUri" not in arguments:
            raise MCPError(code=INVALID_PARAMS, message="resourceUri is required")
        resource = types.TextResourceContents(
            uri=arguments["resourceUri"], mime_type="text/plain", text="Embedded resource content for testing."
        )
        return types.GetPromptResult(
            messages=[
                user(types.EmbeddedResource(resource=resource)),
                user(types.TextContent(text="Please process the embedded resource above.")),
            ]
        )
    if name == "test_prompt_with_image":
        return types.GetPromptResult(
            messages=[
                user(types.ImageContent(data=RED_PIXEL_PNG, mime_type="image/png")),
                user(types.TextContent(text="Please analyze the image above.")),
            ]
        )
    raise MCPError(code=INVALID_PARAMS, message=f"Unknown prompt: {name}")


def build_fixture(record_path: str | os.PathLike[str] | None = None, *, legacy: bool = False) -> Server[Any]:
    fixture = Fixture(CallRecorder(record_path))
    handlers = fixture.handlers()

    async def on_list_tools(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=TOOLS)

    async def on_call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        fixture.recorder.tool_call(ctx, params)
        handler = handlers.get(params.name)
        if handler is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {params.name}")
        return await handler(ctx, params)

    async def on_list_resources(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=RESOURCES)

    async def on_list_templates(
        ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=TEMPLATES)

    async def on_read_resource(ctx: Ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        return types.ReadResourceResult(contents=[_read(params.uri)])

    async def on_list_prompts(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=PROMPTS)

    async def on_get_prompt(ctx: Ctx, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        return _prompt(params.name, params.arguments or {})

    async def on_completion(ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
        values: list[str] = []
        if isinstance(params.ref, types.PromptReference) and params.ref.name == "test_prompt_with_arguments":
            prefix = params.argument.value.casefold()
            values = [v for v in COMPLETIONS.get(params.argument.name, []) if v.casefold().startswith(prefix)]
        return types.CompleteResult(completion=types.Completion(values=values, total=len(values), has_more=False))

    def input_schema(name: str) -> dict[str, Any] | None:
        tool = TOOLS_BY_NAME.get(name)
        return tool.input_schema if tool else None

    listen = ListenHandler(InMemorySubscriptionBus())

    async def on_listen(ctx: Ctx, params: types.SubscriptionsListenRequestParams) -> types.SubscriptionsListenResult:
        # 2026-07-28 has no resources/subscribe: a listen stream whose filter names the URIs is how
        # that era subscribes. Recorded so a test can see what a proxy asked for upstream.
        uris = list(params.notifications.resource_subscriptions or [])
        fixture.recorder.request(ctx, "subscriptions/listen", uris=uris)
        return await listen(ctx, params)

    # Declaring a logging handler is deprecated as of 2026-07-28 (SEP-2577); the handshake era the
    # scenarios speak still has logging/setLevel, so keep it without the warning on stderr.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server: Server[Any] = Server(
            NAME,
            version="1.0.0",
            instructions="Serves the MCP conformance suite's server scenarios.",
            get_tool_input_schema=input_schema,
            on_list_tools=on_list_tools,
            on_call_tool=on_call_tool,
            on_list_resources=on_list_resources,
            on_list_resource_templates=on_list_templates,
            on_read_resource=on_read_resource,
            on_subscribe_resource=fixture.subscribe,
            on_unsubscribe_resource=fixture.unsubscribe,
            on_subscriptions_listen=on_listen,
            on_list_prompts=on_list_prompts,
            on_get_prompt=on_get_prompt,
            on_completion=on_completion,
            on_set_logging_level=fixture.set_level,
        )
    if legacy:

        async def discover_legacy(ctx: Ctx, params: types.RequestParams) -> types.DiscoverResult:
            # A discover answer naming no modern version is an explicit legacy advertisement: an
            # SDK client in mode="auto" then falls back to the initialize handshake.
            return types.DiscoverResult(
                supported_versions=[LATEST_HANDSHAKE_VERSION], capabilities=server.get_capabilities()
            )

        server.add_request_handler("server/discover", types.RequestParams, discover_legacy)
    return server


def main(argv: list[str] | None = None) -> int:
    parser = server_arg_parser("conformance_fixture.py", "The MCP conformance suite's server scenarios.")
    parser.add_argument("--legacy", action="store_true", help="advertise only handshake-era versions")
    args = parser.parse_args(argv)
    server = build_fixture(args.record or os.environ.get(RECORD_ENV) or None, legacy=args.legacy)

    async def serve() -> None:
        if args.stdio:
            await serve_stdio(server)
        else:
            await serve_http(server, args.host, args.port, NAME)

    return run_until_signalled(serve, NAME)


if __name__ == "__main__":
    raise SystemExit(main())
