"""The guard pipeline of one team: every request kind has one method (listings and reads in
listings.py, subscriptions in subscriptions.py, whose classes this one extends; the pins' watch in
pin_watch.py).

The path of a `tools/call` is `Pipeline.call_tool`: visibility → pins → limits → trifecta →
confirm → forward → sanitise/envelope → audit. Anything that goes wrong inside a guard
refuses the call (fail closed); the upstream only ever sees calls that passed every guard.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import anyio
import mcp.types as types
from mcp.shared.exceptions import MCPError

from proxy.audit import AuditLog, digest_arguments, digest_session
from proxy.caller import Caller
from proxy.catalog import Catalog, ToolRule
from proxy.guards import Admitted, Ask, Refusal, Verdict
from proxy.guards.arguments import check_arguments
from proxy.guards.confirm import ConfirmGate, Prompter
from proxy.guards.limits import Limiter, count_recipients
from proxy.guards.pins import apply_pins
from proxy.guards.sms import audit_fields, check_sms, cost_facts
from proxy.guards.trifecta import UNTRUSTED, Trifecta
from proxy.guards.visibility import check_visible
from proxy.listings import BoundedSet
from proxy.pin_watch import PinWatch
from proxy.policy import LoadedPolicy
from proxy.questions import relayed_inputs
from proxy.relay import (
    PARKED,
    Outcome,
    ParkedCalls,
    Pending,
    RelayRefused,
    call_with_input,
    counted_progress,
    within,
)
from proxy.resume import Resume, ResumeStates
from proxy.state import MemoryState, SharedState, StateUnavailable
from proxy.subscriptions import Subscriptions
from proxy.untrusted import OutputShield, plain_name
from proxy.upstream import UpstreamConnection
from proxy.upstream_changes import Relay
from proxy.upstream_errors import UpstreamUnavailable
from proxy.upstream_pool import UpstreamPool

logger = logging.getLogger(__name__)

T = TypeVar("T")
ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]


@dataclass
class ToolCall:
    caller: Caller
    name: str
    arguments: dict[str, Any]
    prompter: Prompter
    relay: Relay
    progress: ProgressFn | None = None
    started: float = field(default_factory=time.monotonic)


class Pipeline(Subscriptions):
    def __init__(
        self, loaded: LoadedPolicy, pool: UpstreamPool, audit: AuditLog, state: SharedState | None = None
    ) -> None:
        policy = loaded.policy
        self.state = state = state if state is not None else MemoryState()
        self.team = policy.team
        self.loaded = loaded
        self.catalog = Catalog(loaded)
        self.pool = pool
        self.audit = audit
        self.shield = OutputShield(policy.output)
        self.limiter = Limiter(state, policy.team)
        self.trifecta = Trifecta(policy.trifecta.action, policy.trifecta.idle_seconds, state)
        self.resumes = ResumeStates(policy.confirm.timeout_seconds, state)
        self.parked = ParkedCalls(pool.spawn, policy.confirm.timeout_seconds)
        # URIs of resources hidden for their names, from the listings: reading them is refused too.
        self._hidden_resources: BoundedSet = BoundedSet(4096)
        self._resources_walked: weakref.WeakKeyDictionary[UpstreamConnection, float] = weakref.WeakKeyDictionary()
        self._odd_names: BoundedSet = BoundedSet(1024)  # tool names already warned about
        self.pins = PinWatch(loaded, audit)
        self.pin_check = self.pins.check
        pool.listed = self.pins.listed
        self.gate = ConfirmGate(
            policy.team,
            timeout_seconds=policy.confirm.timeout_seconds,
            without_elicitation=policy.confirm.without_elicitation,
            state=state,
        )

    def opened_by_logins_only(self, server: str) -> bool:
        """Whether `server` can be reached only with a client's own login: auth.mode oauth federates
        it and mcp-guard holds no grant of its own for it (its listings are checked as logins use it)."""
        policy = self.loaded.policy
        return policy.auth.mode == "oauth" and server == policy.federated_upstream and not self.pool.has_auth(server)

    # -- tools/call ----------------------------------------------------------------------------

    async def call_tool(self, call: ToolCall) -> types.CallToolResult | types.InputRequiredResult:
        rule: ToolRule | None = None
        resume: Resume | Refusal | None = None
        if isinstance(unfit := check_arguments(call.name, call.arguments), Refusal):
            return self._finish(call, rule, unfit.decision, unfit.reason, _error(unfit.message))
        try:
            rule = await self.find_rule(call.caller, call.name)
            resume = await self._resume(call)
            verdict = await self.decide(call, rule, resume)
        except StateUnavailable as exc:
            verdict = _state_refusal(exc)
        except UpstreamUnavailable as exc:
            failed = await self._failure(call, rule, exc, f"mcp-guard: {exc}. The tool was not called.")
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
        # From here on the call is what goes upstream (pins may have set values): its audit lines say so.
        call = replace(call, arguments=verdict.arguments)
        # A call that acts in the world is on record before it is made; one that cannot be recorded is not made.
        ahead = consequential(rule, verdict)
        recorded = not ahead or self._audit(call, rule, verdict.decision, verdict.reason)
        if not recorded and self.loaded.policy.audit.required:
            return _error(
                f"mcp-guard: '{call.name}' was not called: its audit line could not be written "
                f"({self.audit.failing}), and this team's policy records every gated or external call before it "
                "is made. Tell the operator; calls resume once the audit log is writable."
            )
        try:
            result = await self.forward(call, rule, verdict.arguments, resume if isinstance(resume, Resume) else None)
        except UpstreamUnavailable as exc:
            failed = await self._failure(
                call,
                rule,
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
        try:
            await self.trifecta.record(call.caller.session, rule, expires=call.caller.sessionless)
        except StateUnavailable as exc:
            # What this session read could not be remembered, so the model must not read it either.
            return self._finish(call, rule, "error", f"result withheld: {exc}", _error(_state_refusal(exc).message))
        if ahead:
            return result
        return self._finish(call, rule, verdict.decision, verdict.reason, result)

    async def decide(
        self, call: ToolCall, rule: ToolRule | None, resume: Resume | Refusal | None = None
    ) -> Admitted | Refusal | types.InputRequiredResult:
        """Whether the call goes upstream, and with which arguments; asking the human if a guard says so."""
        if isinstance(resume, Refusal):
            return resume
        verdict = await self.admit(call, rule, resumed=resume is not None)
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
            verdict = await self.limiter.take(rule, verdict)
        return verdict

    async def admit(self, call: ToolCall, rule: ToolRule | None, *, resumed: bool = False) -> Verdict:
        """visibility → pins → limits → trifecta, without side effects; the reasons to ask a human add up.

        A resumed call is checked for visibility and pins only: the policy may have changed its mind
        about the tool since, while its limits and the human's yes were settled when it was asked."""
        verdict = check_visible(
            self.catalog, rule, call.name, call.caller.group, Admitted(call.arguments), call.caller.scopes
        )
        if rule is None or not isinstance(verdict, Admitted):
            return verdict
        admitted = apply_pins(rule, verdict)
        if resumed or not isinstance(admitted, Admitted):
            return admitted
        sms_policy = self.loaded.policy.sms
        checked = check_sms(rule, sms_policy, admitted)
        if isinstance(checked, Refusal):
            return checked
        reasons = list(rule.gate_reasons)
        if isinstance(checked, Ask):
            reasons.extend(checked.reasons)
        for verdict in (
            await self.limiter.check(rule, admitted),
            await self.trifecta.check(call.caller.session, rule, admitted, expires=call.caller.sessionless),
        ):
            if isinstance(verdict, Refusal):
                return verdict
            if isinstance(verdict, Ask):
                reasons.extend(verdict.reasons)
        if not reasons:
            return admitted
        return Ask(admitted.arguments, tuple(reasons), tuple(cost_facts(rule, sms_policy, admitted.arguments)))

    async def _resume(self, call: ToolCall) -> Resume | Refusal | None:
        if not call.prompter.modern:
            return None
        return await self.resumes.redeem(call.prompter.request_state, call.caller.session)

    def _ask_client(
        self, call: ToolCall, rule: ToolRule, asked: types.InputRequiredResult, decision: str, why: str
    ) -> types.CallToolResult | types.InputRequiredResult:
        """The upstream's questions, named and sanitised, as our own InputRequiredResult (2026-07-28 client)."""
        policy = self.loaded.policy
        requests = relayed_inputs(
            asked.input_requests, rule.server, can_elicit=call.prompter.can_elicit,
            can_elicit_url=call.prompter.can_elicit_url, url_allowed=policy.url_elicitation == "allow",
            sampling_allowed=policy.sampling == "allow",
        )  # fmt: skip
        if isinstance(requests, str):
            if (asked.request_state or "").startswith(PARKED):
                self.parked.cancel(asked.request_state.removeprefix(PARKED))  # type: ignore[union-attr]
            return self._refuse_relay(call, rule, requests)
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

    async def _failure(
        self, call: ToolCall, rule: ToolRule | None, exc: UpstreamUnavailable, ours: str
    ) -> types.CallToolResult:
        """An upstream failure as a result: our words in one block, the upstream's apart and enveloped.

        The upstream's words reach the model as a result would, so they touch the session's legs as the
        tool's result would (untrusted at least); words that cannot be remembered are withheld."""
        if not exc.upstream_text:
            return types.CallToolResult(content=[types.TextContent(text=ours)], is_error=True)
        legs = rule.legs | UNTRUSTED if rule is not None else UNTRUSTED
        tainted = rule.exposed if rule is not None else call.name
        return await self._with_words(call, tainted, legs, ours, f"{exc.server}:error", exc.upstream_text)

    async def _with_words(
        self, call: ToolCall, tainted: str, legs: frozenset[str], ours: str, source: str, words: str
    ) -> types.CallToolResult:
        """An error result: our words, then the upstream's, enveloped. Its words reach the model as a
        result would, so `legs` are recorded against `tainted` first; when that cannot be recorded,
        the words are withheld."""
        blocks = [types.TextContent(text=ours)]
        try:
            await self.trifecta.record_legs(call.caller.session, tainted, legs, call.caller.sessionless)
        except StateUnavailable:
            return types.CallToolResult(content=blocks, is_error=True)
        blocks.append(types.TextContent(text=self.shield.upstream_words(source, words)))
        return types.CallToolResult(content=blocks, is_error=True)

    async def find_rule(self, caller: Caller, exposed: str) -> ToolRule | None:
        target = self.catalog.resolve(exposed)
        if target is None:
            return None
        server, name = target
        if not plain_name(name):
            return None  # an upstream tool whose name is no plain identifier is never listed or called
        tool = await self.pool.get(server, caller).tool(name)
        if tool is None:
            return None
        rule = self.catalog.rule(server, name, tool.annotations)
        if self.pin_check is not None and (why := self.pin_check.hides(server, tool)):
            return replace(rule, visible=False, hidden_reason=why)  # refused as hidden: never forwarded
        return rule

    async def forward(
        self, call: ToolCall, rule: ToolRule, arguments: dict[str, Any], resume: Resume | None = None
    ) -> types.CallToolResult | types.InputRequiredResult:
        """Send the admitted call upstream and clean what comes back; a failure raises UpstreamUnavailable."""
        conn = self.pool.get(rule.server, call.caller)
        source = f"{rule.server}:{rule.name}"
        pending = Pending()
        relay = self._cleaning(call.relay, pending)
        progress = counted_progress(call.progress, self.shield.progress_message, pending) if call.progress else None
        state = resume.upstream_state if resume is not None else None
        responses = call.prompter.input_responses if resume is not None else None

        async def run(via: Relay) -> Outcome:
            return await within(
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
            ours = f"mcp-guard: upstream '{rule.server}' refused the call."
            # Its words reach the model whatever the tool's legs: untrusted at least.
            return await self._with_words(call, rule.exposed, UNTRUSTED, ours, source, exc.message)
        if isinstance(raw, types.InputRequiredResult):
            return raw
        if not isinstance(raw.get("content", []), list):
            # Read as "no content" it would pass for a success that says nothing: the answer is unknown.
            raise UpstreamUnavailable(rule.server, "it sent a tool result that is not valid MCP")
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

    def _audit(self, call: ToolCall, rule: ToolRule | None, decision: str, reason: str) -> bool:
        fields: dict[str, Any] = {}
        if rule is not None and rule.recipients is not None:
            fields["recipients"] = count_recipients(rule, call.arguments)[0]
        if rule is not None:
            fields.update(audit_fields(rule, self.loaded.policy.sms, call.arguments))
            server: str | None = rule.server
        else:  # an unknown tool: name the upstream it would have gone to, when the name says
            server = target[0] if (target := self.catalog.resolve(call.name)) else None
        return self.audit.write(
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


def _state_refusal(exc: StateUnavailable) -> Refusal:
    return Refusal(
        "error",
        f"shared state unavailable: {exc}",
        "mcp-guard's shared state cannot be reached, so this call could not be checked against the team's "
        "limits, confirmations and session history. It was not made (or its result was withheld). Try again "
        "shortly; tell the operator if it persists.",
    )


def consequential(rule: ToolRule, verdict: Admitted) -> bool:
    """A call whose audit line is written before it is forwarded: gated, confirmed, or acting outside."""
    return rule.gated or verdict.decision == "confirmed" or "external" in rule.legs


_GUARD_ERROR = Refusal(
    "error",
    "internal guard error",
    "mcp-guard could not check this call, so it was not made. The error is in the proxy's log.",
)


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
