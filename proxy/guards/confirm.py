"""The confirmation gate: a gated call needs an explicit human yes, asked through elicitation.

Handshake era: the proxy asks with `elicitation/create` on the call's own back-channel and
waits. 2026-07-28 era: a server cannot ask mid-call, so the first call answers
`InputRequiredResult` and the client retries with the human's answer and the sealed
`request_state`; the SDK's `RequestStateBoundary` has already verified that the state is
ours and bound to this tool, these arguments and this caller before we see it. Each state
is single-use here, so a replayed confirmation is refused.

Only `accept` with `confirm: true` lets the call through; everything else, including any
error inside the gate, refuses it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import mcp.types as types
from mcp.shared.exceptions import MCPError

from proxy.catalog import ToolRule
from proxy.guards import Admitted, Ask, Decision, Refusal
from proxy.guards.onetime import OneTimeStates, parse
from proxy.guards.prompt import Prompt
from proxy.sanitize import sanitize_text
from proxy.state import SharedState

CONFIRM_KEY = "mcp_guard_confirm"
STATE_VERSION = 1

CONFIRM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "confirm": {
            "type": "boolean",
            "title": "Run this action?",
            "description": "Tick to let mcp-guard forward this call. Anything else cancels it.",
        }
    },
    "required": ["confirm"],
}

_WHY = {
    "destructive": "destructive: the tool may delete or change data, spend money or act in the real world",
    "policy": "this team's policy requires a human yes for this tool",
}


class Prompter(Protocol):
    """What the gate needs from the downstream request; the server layer provides it."""

    modern: bool
    can_elicit: bool
    can_elicit_url: bool
    request_state: str | None
    input_responses: dict[str, Any] | None

    async def elicit(self, message: str, schema: dict[str, Any]) -> types.ElicitResult: ...


@dataclass(frozen=True)
class Accepted:
    """The call may go on; `decision` is what the audit line says about why."""

    decision: Decision = "confirmed"
    reason: str = "the human confirmed"


def render_message(
    team: str,
    rule: ToolRule,
    reasons: list[str],
    arguments: dict[str, Any],
    facts: Sequence[tuple[str, str]] = (),
) -> str:
    """The prompt a person judges in two seconds; what it shows of the arguments is exactly what is sent.

    `facts` are extra "Label: text" lines for the header (e.g. the parts and cost of an SMS).
    """
    why = "; ".join(_WHY.get(r, r) for r in reasons)
    return Prompt(
        intro=f"mcp-guard asks you to confirm an action for team '{team}'.",
        facts=[("Server", rule.server), ("Tool", rule.name), ("Why", why), *facts],
        arguments=arguments,
    ).render()


def _one_line(text: str) -> str:
    clean = sanitize_text(text)
    # json.dumps makes newlines and quotes visible, so a client's error text cannot start a fake audit line.
    return json.dumps(clean, ensure_ascii=False)[1:-1]


class ConfirmGate:
    def __init__(
        self,
        team: str,
        *,
        timeout_seconds: float,
        without_elicitation: str,
        state: SharedState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.team = team
        self.timeout = timeout_seconds
        self.without_elicitation = without_elicitation
        self._states = OneTimeStates(timeout_seconds, state, clock)

    async def confirm(
        self, prompter: Prompter, rule: ToolRule, ask: Ask, session: str
    ) -> Admitted | Refusal | types.InputRequiredResult:
        """The human's answer to `ask`: the call admitted, refused, or (2026-07-28) the question to
        return to the client, whose retry carries the answer."""
        answer = await self._ask(prompter, rule, list(ask.reasons), ask.arguments, session, ask.facts)
        if isinstance(answer, Accepted):
            return Admitted(ask.arguments, answer.decision, f"forwarded: {answer.reason}")
        return answer

    async def _ask(
        self,
        prompter: Prompter,
        rule: ToolRule,
        reasons: list[str],
        arguments: dict[str, Any],
        session: str,
        facts: Sequence[tuple[str, str]] = (),
    ) -> Accepted | Refusal | types.InputRequiredResult:
        if not prompter.can_elicit:
            if self.without_elicitation == "allow":
                return Accepted("allowed", "client cannot elicit; policy allows without confirmation")
            return Refusal(
                "denied",
                "client cannot ask the human (no elicitation capability)",
                f"'{rule.exposed}' needs a human confirmation ({'; '.join(reasons)}), but this client cannot show "
                "confirmation prompts (it does not support MCP elicitation). It was not called. Use a client "
                "with elicitation support, or ask the policy owner.",
            )
        message = render_message(self.team, rule, reasons, arguments, facts)
        if prompter.modern:
            return await self._modern(prompter, rule, session, message)
        return await self._handshake(prompter, rule, message)

    async def _handshake(self, prompter: Prompter, rule: ToolRule, message: str) -> Accepted | Refusal:
        try:
            with anyio.fail_after(self.timeout):
                answer = await prompter.elicit(message, CONFIRM_SCHEMA)
        except TimeoutError:
            return self._timed_out(rule)
        except MCPError as exc:
            # The client answered the prompt with an error (or the back-channel failed): no yes, no call.
            return Refusal(
                "error",
                f"confirmation prompt failed: {_one_line(exc.message)[:200]}",
                f"The confirmation prompt for '{rule.exposed}' failed in the client, so it was not called.",
            )
        return self._judge(rule, answer)

    async def _modern(
        self, prompter: Prompter, rule: ToolRule, session: str, message: str
    ) -> Accepted | Refusal | types.InputRequiredResult:
        if prompter.request_state is None or not prompter.input_responses:
            return types.InputRequiredResult(
                input_requests={
                    CONFIRM_KEY: types.ElicitRequest(
                        params=types.ElicitRequestFormParams(message=message, requested_schema=CONFIRM_SCHEMA)
                    )
                },
                request_state=self._states.mint(session, v=STATE_VERSION),
            )
        state = parse(prompter.request_state)
        problem = await self._states.redeem(state, session) if state is not None else "malformed"
        if problem == "malformed":
            return Refusal("error", "malformed confirmation state", "The confirmation could not be read. Not called.")
        if problem == "other session":
            return Refusal(
                "denied",
                "confirmation from another session",
                "That confirmation belongs to another session. It was not called.",
            )
        if problem == "replayed":
            return Refusal("denied", "confirmation replayed", "That confirmation was already used. It was not called.")
        if problem == "expired":
            return self._timed_out(rule)
        raw = prompter.input_responses.get(CONFIRM_KEY)
        try:
            answer = types.ElicitResult.model_validate(raw) if not isinstance(raw, types.ElicitResult) else raw
        except ValueError:
            return Refusal(
                "error",
                "malformed confirmation answer",
                "The confirmation answer could not be read. It was not called.",
            )
        return self._judge(rule, answer)

    def _judge(self, rule: ToolRule, answer: types.ElicitResult) -> Accepted | Refusal:
        if answer.action == "accept" and (answer.content or {}).get("confirm") is True:
            return Accepted()
        if answer.action == "accept":
            return Refusal(
                "declined",
                "human did not tick confirm",
                f"The human did not confirm '{rule.exposed}'. It was not called.",
            )
        if answer.action == "decline":
            return Refusal("declined", "human declined", f"The human declined '{rule.exposed}'. It was not called.")
        return Refusal("declined", "human cancelled", f"The human cancelled '{rule.exposed}'. It was not called.")

    def _timed_out(self, rule: ToolRule) -> Refusal:
        return Refusal(
            "declined",
            f"no answer within {self.timeout:g} s",
            f"No confirmation for '{rule.exposed}' within {self.timeout:g} seconds. It was not called.",
        )
