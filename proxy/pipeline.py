"""The guard pipeline of one team: every request kind has one method here.

The path of a `tools/call` is `Pipeline.call_tool`: visibility → pins → limits → trifecta →
confirm → forward → sanitise/envelope → audit. Anything that goes wrong inside a guard
refuses the call (fail closed); the upstream only ever sees calls that passed every guard.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import anyio
import mcp.types as types
from mcp.client.session import ClientSession
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS
from pydantic import BaseModel

from proxy.audit import AuditLog, digest_arguments, digest_session
from proxy.catalog import Catalog, ToolRule
from proxy.guards import Admitted, Ask, Refusal, Verdict
from proxy.guards.confirm import ConfirmGate, Prompter
from proxy.guards.limits import Limiter, count_recipients
from proxy.guards.pins import apply_pins
from proxy.guards.trifecta import Trifecta
from proxy.guards.visibility import check_visible
from proxy.policy import LoadedPolicy
from proxy.relay import PARKED, Outcome, ParkedCalls, Pending, RelayRefused, call_with_input, counted_progress
from proxy.resume import Resume, ResumeStates
from proxy.untrusted import (
    OutputShield,
    clean_form_schema,
    clean_url,
    plain_name,
    plain_resource_name,
    relayed_question,
    sampling_request,
    url_question,
)
from proxy.upstream import (
    Listener,
    Relay,
    UpstreamConnection,
    UpstreamPool,
    UpstreamUnavailable,
    current_relay,
    raw_request,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]


@dataclass(frozen=True)
class Caller:
    """Who is asking, as the transport established it. Never holds a secret except `authorization`,
    which is only forwarded upstream in passthrough mode and never logged."""

    team: str
    principal: str
    session: str
    authorization: str | None = None
    group: str | None = None
    # True for the sessionless 2026-07-28 era over HTTP, whose trifecta record ends after an idle
    # window; every other session (stdio, handshake-era HTTP) never expires, which fails closed.
    sessionless: bool = False


@dataclass
class ToolCall:
    caller: Caller
    name: str
    arguments: dict[str, Any]
    prompter: Prompter
    relay: Relay
    progress: ProgressFn | None = None
    started: float = field(default_factory=time.monotonic)


class Pipeline:
    def __init__(self, loaded: LoadedPolicy, pool: UpstreamPool, audit: AuditLog) -> None:
        policy = loaded.policy
        self.team = policy.team
        self.loaded = loaded
        self.catalog = Catalog(loaded)
        self.pool = pool
        self.audit = audit
        self.shield = OutputShield(policy.output)
        self.limiter = Limiter()
        self.trifecta = Trifecta(policy.trifecta.action, policy.trifecta.idle_seconds)
        self.resumes = ResumeStates(policy.confirm.timeout_seconds)
        self.parked = ParkedCalls(pool.spawn, policy.confirm.timeout_seconds)
        # URIs of resources hidden for their names, from the listings: reading them is refused too.
        self._hidden_resources: BoundedSet = BoundedSet(4096)
        self._odd_names: BoundedSet = BoundedSet(1024)  # tool names already warned about
        self.gate = ConfirmGate(
            policy.team,
            timeout_seconds=policy.confirm.timeout_seconds,
            without_elicitation=policy.confirm.without_elicitation,
        )

    # -- tools/call ----------------------------------------------------------------------------

    async def call_tool(self, call: ToolCall) -> types.CallToolResult | types.InputRequiredResult:
        rule: ToolRule | None = None
        resume: Resume | Refusal | None = None
        try:
            rule = await self.find_rule(call.caller, call.name)
            resume = self._resume(call)
            verdict = await self.decide(call, rule, resume)
        except UpstreamUnavailable as exc:
            failed = self._failure(exc, f"mcp-guard: {exc}. The tool was not called.")
            return self._finish(call, rule, "error", str(exc), failed)
        except anyio.get_cancelled_exc_class():
            # The client gave up (notifications/cancelled) before the call was admitted: never forwarded.
            self._audit(call, rule, "declined", "cancelled by the client before it was forwarded")
            raise
        except Exception:
            logger.exception("guard failed on %s; refusing (fail closed)", call.name)
            verdict = _GUARD_ERROR
        match verdict:
            case Refusal(decision=decision, reason=reason, message=message):
                return self._finish(call, rule, decision, reason, _error(message))
            case types.InputRequiredResult():
                self._audit(call, rule, "pending", "asked the human to confirm")
                return verdict
        assert rule is not None and isinstance(verdict, Admitted)
        try:
            result = await self.forward(call, rule, verdict.arguments, resume if isinstance(resume, Resume) else None)
        except UpstreamUnavailable as exc:
            failed = self._failure(
                exc,
                f"mcp-guard: upstream '{rule.server}' is unavailable or failed ({exc.detail}); the call may or may "
                "not have reached it, check before retrying.",
            )
            return self._finish(call, rule, "error", "upstream unavailable", failed)
        except BaseException as exc:
            # Cancelled or broken mid-forward: the upstream may have acted, so it is still audited.
            self._audit(call, rule, "error", f"forward ended: {type(exc).__name__}")
            raise
        if isinstance(result, types.InputRequiredResult):
            return self._ask_client(call, rule, result, verdict.decision, verdict.reason)
        self.trifecta.record(call.caller.session, rule, expires=call.caller.sessionless)
        return self._finish(call, rule, verdict.decision, verdict.reason, result)

    async def decide(
        self, call: ToolCall, rule: ToolRule | None, resume: Resume | Refusal | None = None
    ) -> Admitted | Refusal | types.InputRequiredResult:
        """Whether the call goes upstream, and with which arguments; asking the human if a guard says so."""
        if isinstance(resume, Refusal):
            return resume
        verdict = self.admit(call, rule, resumed=resume is not None)
        if resume is not None:
            # The gate and the limits admitted this very call when its state was minted.
            if isinstance(verdict, Refusal):
                return verdict
            return Admitted(verdict.arguments, resume.decision, resume.reason)  # type: ignore[arg-type]
        assert rule is not None or isinstance(verdict, Refusal)
        if isinstance(verdict, Ask):
            verdict = await self.gate.confirm(call.prompter, rule, verdict, call.caller.session)
        if isinstance(verdict, Admitted):
            # Counted in the same step that admits it: calls that waited on a human cannot all take the
            # one slot that was free when they were checked.
            verdict = self.limiter.take(rule, verdict)
        return verdict

    def admit(self, call: ToolCall, rule: ToolRule | None, *, resumed: bool = False) -> Verdict:
        """visibility → pins → limits → trifecta, without side effects; the reasons to ask a human add up.

        A resumed call is checked for visibility and pins only: the policy may have changed its mind
        about the tool since, while its limits and the human's yes were settled when it was asked."""
        verdict = check_visible(self.catalog, rule, call.name, call.caller.group, Admitted(call.arguments))
        if rule is None or not isinstance(verdict, Admitted):
            return verdict
        admitted = apply_pins(rule, verdict)
        if resumed or not isinstance(admitted, Admitted):
            return admitted
        reasons = list(rule.gate_reasons)
        for verdict in (
            self.limiter.check(rule, admitted),
            self.trifecta.check(call.caller.session, rule, admitted, expires=call.caller.sessionless),
        ):
            if isinstance(verdict, Refusal):
                return verdict
            if isinstance(verdict, Ask):
                reasons.extend(verdict.reasons)
        return Ask(admitted.arguments, tuple(reasons)) if reasons else admitted

    def _resume(self, call: ToolCall) -> Resume | Refusal | None:
        if not call.prompter.modern:
            return None
        return self.resumes.redeem(call.prompter.request_state, call.caller.session)

    def _ask_client(
        self, call: ToolCall, rule: ToolRule, asked: types.InputRequiredResult, decision: str, why: str
    ) -> types.CallToolResult | types.InputRequiredResult:
        """The upstream's questions, named and sanitised, as our own InputRequiredResult (2026-07-28 client)."""
        requests: dict[str, Any] = {}

        def refuse(what: str) -> types.CallToolResult:
            if (asked.request_state or "").startswith(PARKED):
                self.parked.cancel(asked.request_state.removeprefix(PARKED))  # type: ignore[union-attr]
            return self._refuse_relay(call, rule, what)

        for key, request in (asked.input_requests or {}).items():
            if isinstance(request, types.ElicitRequest) and isinstance(request.params, types.ElicitRequestFormParams):
                if not call.prompter.can_elicit:
                    return refuse("asked the user a question, but this client cannot elicit")
                params = request.params.model_copy(
                    update={
                        "message": relayed_question(rule.server, request.params.message),
                        "requested_schema": clean_form_schema(request.params.requested_schema),
                    }
                )
                requests[key] = types.ElicitRequest(params=params)
            elif isinstance(request, types.ElicitRequest) and isinstance(request.params, types.ElicitRequestURLParams):
                if self.loaded.policy.url_elicitation != "allow":
                    return refuse("asked to send the user to a URL, which this policy refuses")
                url = clean_url(request.params.url)
                if url is None:
                    return refuse("asked to send the user to a URL that is no plain https URL")
                if not call.prompter.can_elicit_url:
                    return refuse("asked to send the user to a URL, but this client cannot")
                message = url_question(rule.server, request.params.message, url)
                params = request.params.model_copy(update={"message": message, "url": url})
                requests[key] = types.ElicitRequest(params=params)
            elif isinstance(request, types.CreateMessageRequest) and self.loaded.policy.sampling == "allow":
                requests[key] = types.CreateMessageRequest(params=sampling_request(request.params))
            else:
                kind = (
                    "sampling, which this team's policy refuses"
                    if isinstance(request, types.CreateMessageRequest)
                    else "a request mcp-guard does not relay"
                )
                return refuse(f"asked for {kind}")
        state = self.resumes.mint(call.caller.session, asked.request_state, decision, why)
        self._audit(call, rule, "pending", f"upstream '{rule.server}' asked the human")
        return types.InputRequiredResult(input_requests=requests, request_state=state)

    def _refuse_relay(self, call: ToolCall, rule: ToolRule, what: str) -> types.CallToolResult:
        message = (
            f"mcp-guard: upstream '{rule.server}' {what}; the request was refused. '{rule.exposed}' did not "
            "complete; the upstream saw the call but got no answer."
        )
        return self._finish(call, rule, "error", f"relay refused: {what}", _error(message))

    def _cleaning(self, relay: Relay, pending: Pending) -> Relay:
        """The relay with the upstream's log lines cleaned before the transport sends them on."""
        send = relay.log
        if send is None:
            return relay

        async def log(server: str, params: types.LoggingMessageNotificationParams) -> None:
            logger_name = self.shield.clean(params.logger)[:128] if params.logger else None
            cleaned = params.model_copy(update={"data": self.shield.log_data(params.data), "logger": logger_name})
            with pending:
                await send(server, cleaned)

        return replace(relay, log=log)

    def _failure(self, exc: UpstreamUnavailable, ours: str) -> types.CallToolResult:
        """An upstream failure as a result: our words in one block, the upstream's apart and enveloped."""
        blocks = [types.TextContent(text=ours)]
        if exc.upstream_text:
            blocks.append(types.TextContent(text=self.shield.upstream_words(f"{exc.server}:error", exc.upstream_text)))
        return types.CallToolResult(content=blocks, is_error=True)

    async def find_rule(self, caller: Caller, exposed: str) -> ToolRule | None:
        target = self.catalog.resolve(exposed)
        if target is None:
            return None
        server, name = target
        if not plain_name(name):
            return None  # an upstream tool whose name is no plain identifier is never listed or called
        tool = await self.pool.get(server, caller.authorization).tool(name)
        if tool is None:
            return None
        return self.catalog.rule(server, name, tool.annotations)

    async def forward(
        self, call: ToolCall, rule: ToolRule, arguments: dict[str, Any], resume: Resume | None = None
    ) -> types.CallToolResult | types.InputRequiredResult:
        """Send the admitted call upstream and clean what comes back; a failure raises UpstreamUnavailable."""
        conn = self.pool.get(rule.server, call.caller.authorization)
        source = f"{rule.server}:{rule.name}"
        pending = Pending()
        relay = self._cleaning(call.relay, pending)
        progress = counted_progress(call.progress, self.shield.progress_message, pending) if call.progress else None
        state = resume.upstream_state if resume is not None else None
        responses = call.prompter.input_responses if resume is not None else None

        async def run(via: Relay) -> Outcome:
            return await _within(
                conn, via, pending,
                lambda: conn.request(
                    lambda s: call_with_input(
                        s, rule.name, arguments, modern_client=call.prompter.modern, relay=via,
                        server=rule.server, responses=responses, state=state, progress=progress,
                    )
                ),
            )  # fmt: skip

        try:
            if state is not None and state.startswith(PARKED):
                raw = await self.parked.resume(state.removeprefix(PARKED), call.prompter.input_responses)
                if raw is None:
                    return _error(f"mcp-guard: '{rule.exposed}' was no longer waiting for that answer; not resumed.")
            elif call.prompter.modern and not await conn.modern():
                # A handshake-era upstream asks mid-call, which a 2026-07-28 client cannot answer then.
                raw = await self.parked.start(run, relay)
            else:
                raw = await run(relay)
        except RelayRefused as exc:
            return _error(f"{exc} '{rule.exposed}' did not complete; the upstream saw the call but got no answer.")
        except MCPError as exc:
            return types.CallToolResult(
                content=[
                    types.TextContent(text=f"mcp-guard: upstream '{rule.server}' refused the call."),
                    types.TextContent(text=self.shield.upstream_words(source, exc.message)),
                ],
                is_error=True,
            )
        if isinstance(raw, types.InputRequiredResult):
            return raw
        tool = conn.tools.get(rule.name)
        schema = tool.output_schema if tool is not None else None
        cleaned = self.shield.tool_result(source, raw, schema, rule.verbatim)
        try:
            return types.CallToolResult.model_validate(cleaned)
        except ValueError:
            # Nothing of a result mcp-guard cannot vouch for is passed on, not even in the error.
            raise UpstreamUnavailable(rule.server, "it sent a tool result that is not valid MCP") from None

    def _finish(
        self, call: ToolCall, rule: ToolRule | None, decision: str, reason: str, result: types.CallToolResult
    ) -> types.CallToolResult:
        self._audit(call, rule, decision, reason)
        return result

    def _audit(self, call: ToolCall, rule: ToolRule | None, decision: str, reason: str) -> None:
        fields: dict[str, Any] = {}
        if rule is not None and rule.recipients is not None:
            fields["recipients"] = count_recipients(rule, call.arguments)[0]
        if rule is not None:
            server: str | None = rule.server
        else:  # an unknown tool: name the upstream it would have gone to, when the name says
            server = target[0] if (target := self.catalog.resolve(call.name)) else None
        self.audit.write(
            team=self.team,
            principal=call.caller.principal,
            session=digest_session(call.caller.session),
            server=server,
            tool=call.name,
            decision=decision,
            reason=reason,
            args_sha256=digest_arguments(call.arguments),
            duration_ms=round((time.monotonic() - call.started) * 1000, 1),
            **fields,
        )

    # -- listings ------------------------------------------------------------------------------

    async def list_tools(self, caller: Caller, cursor: str | None) -> types.ListToolsResult:
        servers = self.pool.servers
        if len(servers) == 1:
            conn = self.pool.get(servers[0], caller.authorization)
            page = await self._ask(
                servers[0],
                conn,
                lambda s: s.list_tools(params=types.PaginatedRequestParams(cursor=cursor)),
                retry=True,
            )
            conn.tools.update((t.name, t) for t in page.tools)
            return types.ListToolsResult(
                tools=self._present(servers[0], page.tools, caller), next_cursor=_cursor(page.next_cursor)
            )
        tools: list[types.Tool] = []
        for server in servers:
            try:
                listed = await self.pool.get(server, caller.authorization).list_all_tools()
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
            rule = self.catalog.rule(server, tool.name, tool.annotations)
            if rule.visible and self.catalog.visible_in_group(rule, caller.group):
                wire = _wire(tool)
                annotations = self.shield.annotations(wire.get("annotations"), _overrides(tool.annotations, rule))
                shown.extend(_valid(types.Tool, [self.shield.tool(wire, rule.exposed, annotations)], server))
        return shown

    def tool_schema(self, exposed: str) -> dict[str, Any] | None:
        target = self.catalog.resolve(exposed)
        if target is None:
            return None
        schema = self.pool.any_tool_schema(*target)
        return dict(schema) if schema is not None else None

    async def list_resources(self, caller: Caller, cursor: str | None) -> types.ListResourcesResult:
        server, conn = self._single(caller, "resources")
        if conn is None:
            return types.ListResourcesResult(resources=[])
        page = await self._ask(
            server, conn, lambda s: s.list_resources(params=types.PaginatedRequestParams(cursor=cursor)), retry=True
        )
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
            lambda s: s.list_resource_templates(params=types.PaginatedRequestParams(cursor=cursor)),
            retry=True,
        )
        return types.ListResourceTemplatesResult(
            resource_templates=_valid(
                types.ResourceTemplate,
                [self.shield.listed(_wire(t)) for t in page.resource_templates if plain_resource_name(t.name)],
                server,
            ),
            next_cursor=_cursor(page.next_cursor),
        )

    async def read_resource(self, caller: Caller, uri: str) -> types.ReadResourceResult:
        server, conn = self._single(caller, "resources")
        if conn is None or uri in self._hidden_resources:
            raise MCPError(code=INVALID_PARAMS, message="mcp-guard: unknown resource")
        raw = await self._ask(
            server,
            conn,
            lambda s: _raw(s, types.ReadResourceRequest(params=types.ReadResourceRequestParams(uri=uri))),
            retry=True,
        )
        source = f"{server}:{_source_name(uri)}"
        result = types.ReadResourceResult(contents=self.shield.resource_contents(source, raw.get("contents")))
        self.trifecta.record_legs(caller.session, source, self.catalog.resource_legs(server), caller.sessionless)
        return result

    async def list_prompts(self, caller: Caller, cursor: str | None) -> types.ListPromptsResult:
        server, conn = self._single(caller, "prompts")
        if conn is None:
            return types.ListPromptsResult(prompts=[])
        page = await self._ask(
            server, conn, lambda s: s.list_prompts(params=types.PaginatedRequestParams(cursor=cursor)), retry=True
        )
        return types.ListPromptsResult(
            prompts=_valid(
                types.Prompt, [self.shield.listed(_wire(p)) for p in page.prompts if plain_name(p.name)], server
            ),
            next_cursor=_cursor(page.next_cursor),
        )

    async def get_prompt(self, caller: Caller, name: str, arguments: dict[str, str] | None) -> types.GetPromptResult:
        server, conn = self._single(caller, "prompts")
        if conn is None or not plain_name(name):
            raise MCPError(code=INVALID_PARAMS, message="mcp-guard: unknown prompt")
        request = types.GetPromptRequest(params=types.GetPromptRequestParams(name=name, arguments=arguments))
        raw = await self._ask(server, conn, lambda s: _raw(s, request), retry=True)
        source = f"{server}:{name}"
        result = types.GetPromptResult.model_validate(self.shield.prompt_result(source, raw))
        self.trifecta.record_legs(caller.session, source, self.catalog.prompt_legs(server), caller.sessionless)
        return result

    async def complete(self, caller: Caller, params: types.CompleteRequestParams) -> types.CompleteResult:
        server, conn = self._single(caller, "completions")
        if conn is None:
            return types.CompleteResult(completion=types.Completion(values=[]))
        request = types.CompleteRequest(params=params.model_copy(update={"meta": None}))
        raw = await self._ask(server, conn, lambda s: _raw(s, request), retry=True)
        return types.CompleteResult.model_validate(self.shield.completion(raw))

    async def _ask(
        self, server: str, conn: UpstreamConnection, fn: Callable[[ClientSession], Awaitable[T]], *, retry: bool = False
    ) -> T:
        """A listing or read: an upstream's error text is untrusted, so it is passed on apart and enveloped."""
        try:
            return await conn.request(fn, retry=retry)
        except MCPError as exc:
            raise self._answered(server, exc) from None

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

    # -- subscriptions, log level, listeners --------------------------------------------------------

    def listen(self, caller: Caller, listener: Listener) -> None:
        """`listener` (a downstream session) hears list_changed and resource updates from its upstreams."""
        for server in self.pool.servers:
            self.pool.get(server, caller.authorization).listeners.add(listener)

    async def subscribe(self, caller: Caller, uri: str, relay: Relay | None = None) -> None:
        server, conn = self._single(caller, "resources")
        if conn is None or uri in self._hidden_resources:
            raise MCPError(code=INVALID_PARAMS, message="mcp-guard: unknown resource")
        try:
            await self._relaying(conn, relay, lambda: conn.subscribe(uri))
        except MCPError as exc:
            raise self._answered(server, exc) from None

    async def unsubscribe(self, caller: Caller, uri: str, relay: Relay | None = None) -> None:
        server, conn = self._single(caller, "resources")
        if conn is not None:
            try:
                await self._relaying(conn, relay, lambda: conn.unsubscribe(uri))
            except MCPError as exc:
                raise self._answered(server, exc) from None

    async def _relaying(self, conn: UpstreamConnection, relay: Relay | None, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` with the upstream's log lines meanwhile relayed, cleaned, to the request's client."""
        if relay is None:
            return await fn()
        pending = Pending()
        return await _within(conn, self._cleaning(relay, pending), pending, fn)

    @asynccontextmanager
    async def listening(self, caller: Caller, uris: list[str]) -> AsyncIterator[InMemorySubscriptionBus]:
        """A 2026-07-28 client's change stream: the upstream subscribed to `uris` while it lasts, and
        the bus its connection publishes announcements on (one per credential: nobody hears another's)."""
        server, conn = self._single(caller, "resources")
        if conn is None:
            conn = self.pool.get(self.pool.servers[0], caller.authorization)
        if any(uri in self._hidden_resources for uri in uris):
            raise MCPError(code=INVALID_PARAMS, message="mcp-guard: unknown resource")
        done: list[str] = []
        try:
            for uri in uris:
                try:
                    await conn.subscribe(uri)
                except MCPError as exc:
                    raise self._answered(server, exc) from None
                done.append(uri)
            yield conn.bus
        finally:
            with anyio.CancelScope(shield=True):
                for uri in done:
                    try:
                        await conn.unsubscribe(uri)
                    except (MCPError, UpstreamUnavailable):
                        logger.debug("upstream '%s' did not take back a subscription", server)

    async def set_logging_level(self, caller: Caller, level: types.LoggingLevel) -> None:
        """Every upstream that logs is told the level; one that refuses is named in the proxy's log."""
        for server in self.pool.servers:
            conn = self.pool.get(server, caller.authorization)
            caps = conn.capabilities()
            if caps is not None and caps.logging is None:
                continue
            try:
                await conn.request(lambda s: s.set_logging_level(level), retry=True)
            except (MCPError, UpstreamUnavailable) as exc:
                logger.warning("upstream '%s' did not take the log level: %s", server, type(exc).__name__)

    def _single(self, caller: Caller, capability: str) -> tuple[str, UpstreamConnection | None]:
        """The upstream that serves resources/prompts/completions: the first that offers them.

        Several upstreams with resources are not merged (their URIs could collide); the
        first one that offers the capability serves them, which the README states.
        """
        for server in self.pool.servers:
            conn = self.pool.get(server, caller.authorization)
            caps = conn.capabilities()
            if caps is None or getattr(caps, capability, None) is not None:
                return server, conn
        return "", None

    async def instructions(self) -> str | None:
        parts = []
        for server in self.pool.servers:
            text = self.pool.get(server).instructions()
            if text:
                parts.append(f"[{server}] {self.shield.instructions(text)}")
        return "\n".join(parts) or None


async def _within(conn: UpstreamConnection, relay: Relay, pending: Pending, fn: Callable[[], Awaitable[T]]) -> T:
    """Run `fn` as a call of `relay`'s request: the upstream's questions and log lines go to it.

    The SDK hands each notification to a task of its own, which may still be on its way when the
    result is: the upstream's progress and log lines go out before the result does.
    """
    token = current_relay.set(relay)
    try:
        with conn.calling(relay):
            result = await fn()
            await pending.drained()
            return result
    finally:
        current_relay.reset(token)


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


_GUARD_ERROR = Refusal(
    "error",
    "internal guard error",
    "mcp-guard could not check this call, so it was not made. The error is in the proxy's log.",
)


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
