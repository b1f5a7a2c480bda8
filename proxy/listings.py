"""Listings and reads of one team's pipeline: tools, resources, prompts and completions.

What an upstream lists is cleaned entry by entry (`OutputShield`); an entry whose name is no plain
identifier is hidden and refused, and an entry that is no valid MCP once cleaned is left out. A
read's content is cleaned and enveloped, and its legs are recorded for the trifecta.
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import mcp.types as types
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS
from pydantic import BaseModel

from proxy.caller import Caller
from proxy.catalog import Catalog, ToolRule
from proxy.guards.trifecta import UNTRUSTED, Trifecta
from proxy.guards.visibility import granted
from proxy.pinning import Kind, PinCheck, uri_matches
from proxy.state import StateUnavailable
from proxy.untrusted import OutputShield, plain_name, plain_resource_name
from proxy.upstream import TOOLS_TTL, UpstreamConnection
from proxy.upstream_errors import UpstreamUnavailable
from proxy.upstream_pool import UpstreamPool
from proxy.upstream_requests import list_page, pages, raw_request

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Listings:
    """The listing and read requests of a `Pipeline` (a mixin: the pipeline owns the state)."""

    pool: UpstreamPool
    catalog: Catalog
    shield: OutputShield
    trifecta: Trifecta
    pin_check: PinCheck | None
    _hidden_resources: BoundedSet
    # When each upstream connection's whole resource listing was last read (each credential may see its own).
    _resources_walked: weakref.WeakKeyDictionary[UpstreamConnection, float]
    _odd_names: BoundedSet

    async def list_tools(self, caller: Caller, cursor: str | None) -> types.ListToolsResult:
        servers = self.pool.servers
        if len(servers) == 1:
            conn = self.pool.get(servers[0], caller)
            page = await self._ask(
                servers[0],
                conn,
                lambda s: list_page(s, "tools", cursor),
                retry=True,
            )
            if cursor is None:
                # A first page starts the cache over: a tool the upstream no longer lists must not stay
                # callable (a later page's tools are added; a tool not cached yet is listed on demand).
                conn.tools = {t.name: t for t in page.tools}
            else:
                conn.tools.update((t.name, t) for t in page.tools)
            return types.ListToolsResult(
                tools=self._present(servers[0], page.tools, caller), next_cursor=_cursor(page.next_cursor)
            )
        tools: list[types.Tool] = []
        for server in servers:
            try:
                listed = await self.pool.get(server, caller).list_all_tools()
            except UpstreamUnavailable as exc:
                logger.warning("%s; its tools are left out of this listing", exc)
                continue
            tools.extend(self._present(server, list(listed.values()), caller))
        return types.ListToolsResult(tools=tools)

    def _present(self, server: str, tools: list[types.Tool], caller: Caller) -> list[types.Tool]:
        shown = []
        for tool in tools:
            if not plain_name(tool.name):
                if tool.name not in self._odd_names:
                    self._odd_names.update([tool.name])
                    logger.warning(
                        "upstream '%s' lists a tool whose name is not a plain identifier (%s): hidden and refused",
                        server,
                        tool.name[:200].encode("unicode_escape").decode("ascii"),
                    )
                continue
            if self.pin_check is not None and self.pin_check.hides(server, tool):
                continue  # drifted or unpinned: absent from the listing, refused if called
            rule = self.catalog.rule(server, tool.name, tool.annotations)
            if rule.visible and granted(rule, caller.scopes) and self.catalog.visible_in_group(rule, caller.group):
                wire = _wire(tool)
                annotations = self.shield.annotations(wire.get("annotations"), _overrides(tool.annotations, rule))
                shown.extend(_valid(types.Tool, [self.shield.tool(wire, rule.exposed, annotations)], server))
        return shown

    def tool_schema(self, exposed: str) -> dict[str, Any] | None:
        """The tool's input schema as tools/list showed it, cleaned: the client names its `Mcp-Param-*`
        headers after that one, and the SDK's refusal of a header quotes the schema's property names."""
        target = self.catalog.resolve(exposed)
        if target is None:
            return None
        schema = self.pool.any_tool_schema(*target)
        return self.shield.schema(schema) if schema is not None else None

    async def list_resources(self, caller: Caller, cursor: str | None) -> types.ListResourcesResult:
        server, conn = self._single(caller, "resources")
        if conn is None:
            return types.ListResourcesResult(resources=[])
        page = await self._ask(server, conn, lambda s: list_page(s, "resources", cursor), retry=True)
        shown = [r for r in page.resources if plain_resource_name(r.name)]
        self._hidden_resources.update(str(r.uri) for r in page.resources if not plain_resource_name(r.name))
        return types.ListResourcesResult(
            resources=_valid(types.Resource, [self.shield.listed(_wire(r)) for r in shown], server),
            next_cursor=_cursor(page.next_cursor),
        )

    async def list_resource_templates(self, caller: Caller, cursor: str | None) -> types.ListResourceTemplatesResult:
        server, conn = self._single(caller, "resources")
        if conn is None:
            return types.ListResourceTemplatesResult(resource_templates=[])
        page = await self._ask(
            server,
            conn,
            lambda s: list_page(s, "resource_templates", cursor),
            retry=True,
        )
        shown = [t for t in page.resource_templates if plain_resource_name(t.name) and not self._unpinned(server, t)]
        return types.ListResourceTemplatesResult(
            resource_templates=_valid(types.ResourceTemplate, [self.shield.listed(_wire(t)) for t in shown], server),
            next_cursor=_cursor(page.next_cursor),
        )

    async def read_resource(self, caller: Caller, uri: str) -> types.ReadResourceResult:
        server, conn = self._single(caller, "resources")
        if conn is None:
            raise MCPError(code=INVALID_PARAMS, message="mcp-guard: unknown resource")
        source = f"{server}:{_source_name(uri)}"
        legs = self.catalog.resource_legs(server)
        taint = _Taint(caller, source, legs)
        await self.refuse_hidden_resources(server, conn, [uri], taint)
        if self.pin_check is not None:
            await self._refuse_drifted_template(server, conn, uri, taint)
        request = types.ReadResourceRequest(params=types.ReadResourceRequestParams(uri=uri))
        raw = await self._ask(server, conn, lambda s: _raw(s, request), retry=True, taint=taint)
        result = types.ReadResourceResult(contents=self.shield.resource_contents(source, raw.get("contents")))
        await self._remember(caller, source, legs)
        return result

    async def refuse_hidden_resources(
        self, server: str, conn: UpstreamConnection, uris: list[str], taint: _Taint | None = None
    ) -> None:
        """Refuse any of `uris` that the upstream lists under a name that is no plain identifier.

        What a client's own listing showed is not enough to go by: a client that never listed
        resources, or listed only their first page, would otherwise read a hidden one. So the whole
        listing is read here when it was not within the last TOOLS_TTL seconds."""
        if not uris:
            return
        if time.monotonic() - self._resources_walked.get(conn, -TOOLS_TTL - 1) > TOOLS_TTL:
            hidden: list[str] = []

            async def walk(session: ClientSession) -> None:
                caps = session.server_capabilities
                if caps is not None and caps.resources is None:
                    return  # it lists no resources, so it hides none (a completion's upstream may offer none)
                # Not `walk`: it keys entries by name, and two resources of one name are two URIs.
                async for page in pages(session, "resources"):
                    hidden.extend(str(r.uri) for r in page.resources if not plain_resource_name(r.name))

            await self._ask(server, conn, walk, retry=True, taint=taint)
            self._hidden_resources.update(hidden)
            self._resources_walked[conn] = time.monotonic()
        if any(uri in self._hidden_resources for uri in uris):
            raise MCPError(code=INVALID_PARAMS, message="mcp-guard: unknown resource")

    async def list_prompts(self, caller: Caller, cursor: str | None) -> types.ListPromptsResult:
        server, conn = self._single(caller, "prompts")
        if conn is None:
            return types.ListPromptsResult(prompts=[])
        page = await self._ask(server, conn, lambda s: list_page(s, "prompts", cursor), retry=True)
        shown = [p for p in page.prompts if plain_name(p.name) and not self._unpinned(server, p, "prompts")]
        return types.ListPromptsResult(
            prompts=_valid(types.Prompt, [self.shield.listed(_wire(p)) for p in shown], server),
            next_cursor=_cursor(page.next_cursor),
        )

    async def get_prompt(self, caller: Caller, name: str, arguments: dict[str, str] | None) -> types.GetPromptResult:
        server, conn = self._single(caller, "prompts")
        if conn is None or not plain_name(name):
            raise MCPError(code=INVALID_PARAMS, message="mcp-guard: unknown prompt")
        source = f"{server}:{name}"
        legs = self.catalog.prompt_legs(server)
        taint = _Taint(caller, source, legs)
        if self.pin_check is not None:
            await self._refuse_unpinned_prompt(server, conn, name, taint)
        request = types.GetPromptRequest(params=types.GetPromptRequestParams(name=name, arguments=arguments))
        raw = await self._ask(server, conn, lambda s: _raw(s, request), retry=True, taint=taint)
        result = types.GetPromptResult.model_validate(self.shield.prompt_result(source, raw))
        await self._remember(caller, source, legs)
        return result

    # -- pins on prompts and resource templates ---------------------------------------------------

    def _unpinned(self, server: str, entry: Any, kind: Kind = "resource_templates") -> str | None:
        return self.pin_check.hides(server, entry, kind) if self.pin_check is not None else None

    async def _refuse_unpinned_prompt(
        self, server: str, conn: UpstreamConnection, name: str, taint: _Taint | None
    ) -> None:
        """A prompt is fetched only when its listed definition is what was pinned (the upstream's
        listing, not the client's word, says what the prompt is)."""
        try:
            prompt = (await conn.listed_now("prompts")).get(name)
        except (MCPError, UpstreamUnavailable) as exc:
            raise await self._failed(server, exc, taint) from None
        if prompt is None:
            raise MCPError(code=INVALID_PARAMS, message="mcp-guard: unknown prompt (the upstream does not list it)")
        if why := self._unpinned(server, prompt, "prompts"):
            raise MCPError(code=INVALID_PARAMS, message=f"mcp-guard: prompt '{name}' was refused: {why}")

    async def _refuse_drifted_template(self, server: str, conn: UpstreamConnection, uri: str, taint: _Taint) -> None:
        """A URI that only a hidden resource template describes is not read: the model can know it only
        from a definition nobody approved."""
        try:
            templates = await conn.listed_now("resource_templates")
        except (MCPError, UpstreamUnavailable) as exc:
            raise await self._failed(server, exc, taint) from None
        hidden = None
        for template in templates.values():
            if not uri_matches(template.uri_template, uri):
                continue
            why = self._unpinned(server, template)
            if why is None:
                return
            hidden = hidden or why
        if hidden is not None:
            raise MCPError(
                code=INVALID_PARAMS, message=f"mcp-guard: resource refused: its resource template is hidden: {hidden}"
            )

    async def _remember(self, caller: Caller, source: str, legs: frozenset[str]) -> None:
        try:
            await self.trifecta.record_legs(caller.session, source, legs, caller.sessionless)
        except StateUnavailable:
            # What the session read could not be remembered, so it is not read at all.
            raise MCPError(
                code=INTERNAL_ERROR, message="mcp-guard: shared state unavailable; the content was withheld"
            ) from None

    async def complete(self, caller: Caller, params: types.CompleteRequestParams) -> types.CompleteResult:
        server, conn = self._single(caller, "completions")
        if conn is None:
            return types.CompleteResult(completion=types.Completion(values=[]))
        await self._refuse_hidden_reference(server, conn, params.ref)
        request = types.CompleteRequest(params=params.model_copy(update={"meta": None}))
        raw = await self._ask(server, conn, lambda s: _raw(s, request), retry=True)
        return types.CompleteResult.model_validate(self.shield.completion(raw))

    async def _refuse_hidden_reference(
        self, server: str, conn: UpstreamConnection, ref: types.PromptReference | types.ResourceTemplateReference
    ) -> None:
        """A completion is asked only for what the client could get: the upstream's completion handler
        for a hidden prompt or resource template is as refused as the prompt or template itself."""
        if isinstance(ref, types.PromptReference):
            if not plain_name(ref.name):
                raise MCPError(code=INVALID_PARAMS, message="mcp-guard: unknown prompt")
            if self.pin_check is not None:
                await self._refuse_unpinned_prompt(server, conn, ref.name, None)
            return
        await self.refuse_hidden_resources(server, conn, [ref.uri])
        try:
            templates = await conn.listed_now("resource_templates")
        except (MCPError, UpstreamUnavailable) as exc:
            raise await self._failed(server, exc, None) from None
        for template in templates.values():
            if template.uri_template == ref.uri and (
                not plain_resource_name(template.name) or self._unpinned(server, template)
            ):
                raise MCPError(code=INVALID_PARAMS, message="mcp-guard: unknown resource template")

    async def _ask(
        self,
        server: str,
        conn: UpstreamConnection,
        fn: Callable[[ClientSession], Awaitable[T]],
        *,
        retry: bool = False,
        taint: _Taint | None = None,
    ) -> T:
        """A listing or read: an upstream's error text is untrusted, so it is passed on apart and enveloped.

        For a read on a session's behalf (`taint`), that text reaches the model as the content would, so
        it touches the session's legs as the content would, and untrusted at least."""
        try:
            return await conn.request(fn, retry=retry)
        except (MCPError, UpstreamUnavailable) as exc:
            raise await self._failed(server, exc, taint) from None

    async def _failed(self, server: str, exc: MCPError | UpstreamUnavailable, taint: _Taint | None) -> Exception:
        """The error to raise for an upstream's failure; its words, if it sent any, taint `taint`'s session."""
        words = exc.message if isinstance(exc, MCPError) else exc.upstream_text
        if taint is not None and words:
            await self._remember(taint.caller, taint.source, taint.legs | UNTRUSTED)
        return self._answered(server, exc) if isinstance(exc, MCPError) else exc

    def _answered(self, server: str, exc: MCPError) -> MCPError:
        code = exc.code if isinstance(exc.code, int) and -32768 <= exc.code <= -32000 else INTERNAL_ERROR
        message = self.shield.error_message(
            f"mcp-guard: upstream '{server}' answered with an error.", server, exc.message
        )
        return MCPError(code=code, message=message)

    def upstream_error(self, exc: UpstreamUnavailable) -> MCPError:
        """An unavailable upstream as a JSON-RPC error: our words, then its own apart and enveloped."""
        return MCPError(
            code=INTERNAL_ERROR, message=self.shield.error_message(f"mcp-guard: {exc}", exc.server, exc.upstream_text)
        )

    def _single(self, caller: Caller, capability: str) -> tuple[str, UpstreamConnection | None]:
        """The upstream that serves resources/prompts/completions: the first that offers them.

        Several upstreams with resources are not merged (their URIs could collide); the
        first one that offers the capability serves them, which the README states.
        """
        for server in self.pool.servers:
            conn = self.pool.get(server, caller)
            caps = conn.capabilities()
            if caps is None or getattr(caps, capability, None) is not None:
                return server, conn
        return "", None

    async def instructions(self) -> str | None:
        parts = []
        for server in self.pool.servers:
            text = self.pool.get(server).instructions()
            if text:
                # Every line is named: a line break in one upstream's words must not start a line that
                # names another upstream, whose instructions the model would then take them for.
                parts.extend(f"[{server}] {line}" for line in (self.shield.instructions(text) or "").splitlines())
        return "\n".join(parts) or None


M = TypeVar("M", bound=BaseModel)


def _valid(model: type[M], items: list[dict[str, Any]], server: str) -> list[M]:
    """The cleaned entries that are still valid MCP; one that is not is left out (and logged), so it
    neither breaks the listing nor reaches a client unchecked."""
    out = []
    for item in items:
        try:
            out.append(model.model_validate(item))
        except ValueError:
            logger.warning(
                "upstream '%s' listed a %s that is not valid MCP once cleaned; left out", server, model.__name__
            )
    return out


def _wire(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dumped


def _cursor(cursor: str | None) -> str | None:
    # A cursor is opaque, but it travels back to the model's client: it must be no carrier of text.
    return cursor if cursor is None or _CURSOR.fullmatch(cursor) else None


_CURSOR = re.compile(r"[A-Za-z0-9+/=_.:-]{1,512}")


def _source_name(uri: str) -> str:
    # It names the read in envelopes and in the trifecta's refusal (mcp-guard's own words): a URI the
    # model chose goes there only when it is plain.
    return uri if _PLAIN_URI.fullmatch(uri) else "resource"


_PLAIN_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9:/.~%?=+-]{0,120}")


async def _raw(session: ClientSession, request: Any) -> dict[str, Any]:
    raw = await raw_request(session, request)
    if raw.get("resultType") == "input_required":
        raise MCPError(
            code=INVALID_PARAMS, message="the upstream asked for input, which mcp-guard relays only on tools/call"
        )
    return raw


def _overrides(upstream: types.ToolAnnotations | None, rule: ToolRule) -> dict[str, bool]:
    """The hints the profile changes: both safety hints, set as the proxy classifies the tool."""
    read_only = bool(upstream and upstream.read_only_hint is True)
    destructive = not read_only and not (upstream and upstream.destructive_hint is False)
    if (read_only, destructive) == (rule.read_only, rule.destructive):
        return {}
    return {"readOnlyHint": rule.read_only, "destructiveHint": rule.destructive}


@dataclass(frozen=True)
class _Taint:
    """Whose session an upstream's words would reach, as what, and with which legs."""

    caller: Caller
    source: str
    legs: frozenset[str]


class BoundedSet:
    """A set that forgets its oldest members past `size`: an upstream cannot grow it without bound."""

    def __init__(self, size: int) -> None:
        self._items: dict[str, None] = {}
        self._size = size

    def update(self, items: Any) -> None:
        for item in items:
            self._items.pop(item, None)
            self._items[item] = None
            if len(self._items) > self._size:
                del self._items[next(iter(self._items))]

    def __contains__(self, item: object) -> bool:
        return item in self._items
