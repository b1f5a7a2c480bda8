"""What an upstream may ask while a call runs, and how its question reaches a client of either era.

- A 2026-07-28 upstream asks with its own `InputRequiredResult`: a handshake-era client is asked
  mid-call through the relay (`call_with_input`), a 2026-07-28 client gets mcp-guard's own
  `InputRequiredResult` and resumes the upstream call on its retry (the pipeline's resume states).
- A handshake-era upstream asks mid-call (`elicitation/create`): a handshake-era client is asked
  at once; a 2026-07-28 client cannot be asked mid-call, so the upstream call is *parked*
  (`ParkedCalls`): it goes on in the background, the question goes back to the client as an
  `InputRequiredResult`, and the client's retry hands the answer to the waiting upstream.

Progress and log lines of a call are relayed before its result (`Pending`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import mcp.types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client.session import ClientSession
from mcp_types import INVALID_PARAMS

from proxy.upstream import UpstreamConnection
from proxy.upstream_changes import Relay, current_relay
from proxy.upstream_requests import raw_request

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]
Outcome = dict[str, Any] | types.InputRequiredResult

T = TypeVar("T")

PARKED = "parked:"  # the upstream state of a resume that continues a parked call
QUESTION_KEY = "upstream_question"
_PARKED_KEPT = 1024


def can_elicit_form(caps: types.ClientCapabilities | None) -> bool:
    if caps is None or caps.elicitation is None:
        return False
    el = caps.elicitation
    # An empty elicitation object means form mode (the spec's default before modes existed).
    return el.form is not None or el.url is None


def can_elicit_url(caps: types.ClientCapabilities | None) -> bool:
    return caps is not None and caps.elicitation is not None and caps.elicitation.url is not None


def relay_refusal(why: str) -> types.ErrorData:
    return types.ErrorData(code=INVALID_PARAMS, message=f"mcp-guard: {why}; the request was refused.")


def mid_call_refusal(server: str, asked: str) -> types.ErrorData:
    # 2026-07-28 has no back-channel mid-call. Relaying would mean answering this call with our own
    # InputRequiredResult and resuming the upstream call on the client's retry; the pipeline does that
    # only for questions that come as the upstream's own InputRequiredResult or from a parked call.
    return relay_refusal(
        f"upstream '{server}' {asked} during the call, but this client uses MCP 2026-07-28, "
        "where mcp-guard cannot relay that mid-call"
    )


def refuse_question(
    server: str, params: types.ElicitRequestParams, *, allow_url: bool, modern: bool
) -> types.ErrorData | None:
    """Why an upstream's mid-call question cannot reach the client at all, in the order the checks
    are made (policy first, then era); None when it may be asked."""
    if isinstance(params, types.ElicitRequestURLParams):
        # A URL from an upstream sends the human to a page of its choosing: only where the policy allows it.
        if not allow_url:
            return relay_refusal(
                f"upstream '{server}' asked to send the user to a URL, which this team's policy refuses"
            )
        return mid_call_refusal(server, "asked to send the user to a URL") if modern else None
    if not isinstance(params, types.ElicitRequestFormParams):
        return relay_refusal(f"upstream '{server}' asked for a kind of elicitation mcp-guard does not relay")
    return mid_call_refusal(server, "asked the user a question") if modern else None


def refuse_sampling(server: str, *, allow_sampling: bool, modern: bool) -> types.ErrorData | None:
    if not allow_sampling:
        return relay_refusal(f"upstream '{server}' asked for sampling, which this team's policy refuses")
    return mid_call_refusal(server, "asked for sampling") if modern else None


class RelayRefused(Exception):
    """The proxy (not the upstream) refused to relay an upstream's question; the message is ours, trusted."""


async def call_with_input(
    session: ClientSession,
    name: str,
    arguments: dict[str, Any],
    *,
    modern_client: bool,
    relay: Relay,
    server: str,
    responses: dict[str, Any] | None,
    state: str | None,
    progress: ProgressFn | None,
) -> Outcome:
    """Call upstream; if a 2026-era upstream needs input, ask a handshake-era client and retry.

    A 2026-07-28 client cannot be asked mid-call: the upstream's request goes back to the pipeline,
    which asks the client with its own InputRequiredResult; the client's retry resumes here with
    `responses` and `state`.
    """
    for _ in range(4):
        request = types.CallToolRequest(
            params=types.CallToolRequestParams(
                name=name, arguments=arguments, input_responses=responses, request_state=state
            )
        )
        raw = await raw_request(session, request, progress=progress, logs=relay.log is not None)
        if raw.get("resultType") != "input_required":
            return raw
        asked = types.InputRequiredResult.model_validate(raw)
        if modern_client:
            return asked
        responses = await answer_inputs(asked, relay, server)
        state = asked.request_state
    raise RelayRefused("mcp-guard: the upstream kept asking for more input; the call was abandoned.")


async def answer_inputs(result: types.InputRequiredResult, relay: Relay, server: str) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for key, request in (result.input_requests or {}).items():
        if isinstance(request, types.ElicitRequest):
            answer = await relay.elicit(server, request.params)
        elif isinstance(request, types.CreateMessageRequest):
            answer = await relay.sample(server, request.params)
        else:
            answer = types.ErrorData(code=INVALID_PARAMS, message="mcp-guard does not relay this request")
        if isinstance(answer, types.ErrorData):
            raise RelayRefused(answer.message)
        answers[key] = answer
    return answers


# -- progress and log lines before the result ----------------------------------------------------------


class Pending:
    """Notifications of one call still being relayed downstream."""

    _ROUNDS = 4  # scheduler rounds in which a notification task already started gets to run
    _WAIT = 2.0  # at most this long for one that is sending

    def __init__(self) -> None:
        self.count = 0
        self._idle = anyio.Event()

    def __enter__(self) -> None:
        self.count += 1

    def __exit__(self, *exc: object) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()
            self._idle = anyio.Event()

    async def drained(self, *, in_tasks: bool = True) -> None:
        """Wait for the notifications still being relayed. `in_tasks`: they were handed to tasks of
        their own (the SDK's dispatcher), which get a few scheduler rounds to begin first."""
        for _ in range(self._ROUNDS if in_tasks else 0):
            await anyio.lowlevel.checkpoint()
        if not self.count:
            return
        with anyio.move_on_after(self._WAIT):
            while self.count:
                await self._idle.wait()


def counted_progress(progress: ProgressFn, clean: Callable[[str | None], str | None], pending: Pending) -> ProgressFn:
    async def relay(value: float, total: float | None, message: str | None) -> None:
        with pending:
            await progress(value, total, clean(message))

    return relay


# -- parked calls: a handshake-era upstream asks a 2026-07-28 client -----------------------------------


@dataclass
class _Parked:
    timeout: float
    started: float = field(default_factory=time.monotonic)
    # What the background call reports: ("ask", params) when the upstream asks, ("done", outcome) or
    # ("error", exception) when it ends.  A few places: it never blocks on a client that went away.
    events: tuple[MemoryObjectSendStream[tuple[str, Any]], MemoryObjectReceiveStream[tuple[str, Any]]] = field(
        default_factory=lambda: anyio.create_memory_object_stream[tuple[str, Any]](4)
    )
    answer: MemoryObjectSendStream[types.ElicitResult] | None = None

    async def ask(self, server: str, params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
        # Form or URL: the pipeline decides what reaches the client (`Pipeline._ask_client`).
        send, receive = anyio.create_memory_object_stream[types.ElicitResult](1)
        self.answer = send
        self.events[0].send_nowait(("ask", params))
        with anyio.move_on_after(self.timeout):
            return await receive.receive()
        return types.ElicitResult(action="cancel")  # the client never came back with an answer

    async def refuse_sampling(
        self, server: str, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.ErrorData:
        return types.ErrorData(
            code=INVALID_PARAMS,
            message=f"mcp-guard: upstream '{server}' asked for sampling mid-call; a 2026-07-28 client cannot answer it",
        )

    async def run(self, call: Callable[[Relay], Awaitable[Outcome]], relay: Relay) -> None:
        try:
            outcome = await call(relay)
        except Exception as exc:
            report: tuple[str, Any] = ("error", exc)
        else:
            report = ("done", outcome)
        try:
            self.events[0].send_nowait(report)
        except anyio.WouldBlock:
            pass  # nobody is waiting any more


class ParkedCalls:
    """Upstream calls waiting on a 2026-07-28 client's answer, each known by a random id."""

    def __init__(self, spawn: Callable[[Callable[[], Awaitable[None]]], None], timeout: float) -> None:
        self._spawn = spawn
        self._timeout = timeout
        self._calls: dict[str, _Parked] = {}

    async def start(self, call: Callable[[Relay], Awaitable[Outcome]], log: Relay | None = None) -> Outcome:
        """Run `call` in the background; its outcome, or its upstream's first question."""
        parked = _Parked(self._timeout)
        relay = Relay(elicit=parked.ask, sample=parked.refuse_sampling, log=log.log if log is not None else None)
        self._spawn(lambda: parked.run(call, relay))
        return await self._next(secrets.token_hex(16), parked)

    async def resume(self, parked_id: str, responses: dict[str, Any] | None) -> Outcome | None:
        """Hand the client's answer to the parked call and wait again; None if there is no such call."""
        parked = self._calls.pop(parked_id, None)
        if parked is None or parked.answer is None:
            return None
        raw = (responses or {}).get(QUESTION_KEY)
        try:
            answer = raw if isinstance(raw, types.ElicitResult) else types.ElicitResult.model_validate(raw)
        except ValueError:
            answer = types.ElicitResult(action="cancel")  # an unreadable answer is no yes
        parked.answer.send_nowait(answer)
        return await self._next(parked_id, parked)

    def cancel(self, parked_id: str) -> None:
        """The client will not be asked: the waiting upstream hears `cancel` at once."""
        parked = self._calls.pop(parked_id, None)
        if parked is not None and parked.answer is not None:
            parked.answer.send_nowait(types.ElicitResult(action="cancel"))

    async def _next(self, parked_id: str, parked: _Parked) -> Outcome:
        kind, value = await parked.events[1].receive()
        if kind == "error":
            raise value
        if kind == "done":
            return value  # type: ignore[no-any-return]
        self._forget_stale()
        self._calls[parked_id] = parked
        return types.InputRequiredResult(
            input_requests={QUESTION_KEY: types.ElicitRequest(params=value)},
            request_state=PARKED + parked_id,
        )

    def _forget_stale(self) -> None:
        now = time.monotonic()
        for key in [k for k, p in self._calls.items() if now - p.started > p.timeout + 60]:
            del self._calls[key]
        while len(self._calls) >= _PARKED_KEPT:
            del self._calls[next(iter(self._calls))]


async def within(conn: UpstreamConnection, relay: Relay, pending: Pending, fn: Callable[[], Awaitable[T]]) -> T:
    """Run `fn` as a call of `relay`'s request: the upstream's questions and log lines go to it.

    The SDK hands each notification to a task of its own, which may still be on its way when the
    result is: the upstream's progress and log lines go out before the result does.
    """
    token = current_relay.set(relay)
    try:
        with conn.calling(relay):
            result = await fn()
            await pending.drained(in_tasks=not conn.answers_inline())
            return result
    finally:
        current_relay.reset(token)
