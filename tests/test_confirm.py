"""Issue 4 / SPEC §6: the confirmation gate, end to end, in both protocol eras, over stdio and HTTP.

A real `mcp.Client` with a real elicitation callback plays the human. The sandbox runs as its own
process with `--record`, so "the upstream never saw the call" is read from the sandbox's own record,
and every decision is read back from the proxy's audit file.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp.types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from proxy.audit import digest_arguments
from proxy.guards.confirm import CONFIRM_KEY
from tests.harness import MODES, Proc, calls, proxy_http, proxy_stdio, records, write_policy

pytestmark = pytest.mark.anyio

TEAM = "gatekeepers"
NUMBER = "48600100200"
QUICK = 1.5  # confirm.timeout_seconds of the proxy that tests the timeout
TRANSPORTS = ["stdio", "http"]
YES = {CONFIRM_KEY: types.ElicitResult(action="accept", content={"confirm": True})}


# -- the scripted human --------------------------------------------------------------------------------------


@dataclass
class Human:
    """An elicitation callback that answers by a marker found in the prompt and remembers every prompt.

    A prompt it has no script for is declined, so a test can never pass by an accidental yes.
    """

    script: dict[str, str] = field(default_factory=dict)  # substring of the prompt -> behaviour
    prompts: list[types.ElicitRequestFormParams] = field(default_factory=list)
    late: Callable[[], Awaitable[None]] | None = None  # what the "late" behaviour waits for before saying yes

    async def __call__(self, context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams), params
        self.prompts.append(params)
        behaviour = next((b for key, b in self.script.items() if key in params.message), "decline")
        if behaviour == "late":
            assert self.late is not None
            await self.late()
            behaviour = "accept"
        if behaviour == "accept":
            return types.ElicitResult(action="accept", content={"confirm": True})
        if behaviour == "untick":
            return types.ElicitResult(action="accept", content={"confirm": False})
        return types.ElicitResult(action=behaviour)  # type: ignore[arg-type]

    def prompt_for(self, marker: str) -> str:
        found = [p.message for p in self.prompts if marker in p.message]
        assert len(found) == 1, f"expected one prompt containing {marker!r}, got {found}"
        return found[0]


def marker() -> str:
    return f"m{uuid.uuid4().hex[:12]}"


def sms(mark: str, text: str = "hello") -> dict[str, Any]:
    # test: true makes the sandbox price the message without "sending"; the record still shows the call.
    return {"to": NUMBER, "message": f"{text} {mark}", "test": True}


def reached(record: Path, mark: str) -> int:
    """How many tools/call requests carrying `mark` the sandbox itself recorded."""
    return sum(1 for c in calls(record) if mark in json.dumps(c["arguments"], ensure_ascii=False))


def decisions(audit: Path, arguments: dict[str, Any]) -> list[str]:
    digest = digest_arguments(arguments)
    return [line["decision"] for line in records(audit) if line.get("args_sha256") == digest]


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def refused(result: types.CallToolResult, *why: str) -> str:
    """Assert the model was told, as an isError result, that nothing was done and why."""
    text = text_of(result)
    assert result.is_error, text
    assert "not called" in text, text
    for word in why:
        assert word in text, text
    return text


def first_round(mode: str) -> list[str]:
    """Audit lines a 2026-07-28 call writes before the human's answer comes back."""
    return [] if mode == "legacy" else ["pending"]


# -- processes -----------------------------------------------------------------------------------------------


@dataclass
class Setup:
    policy: Path
    proxy: Proc
    audit: Path


@pytest.fixture(scope="module")
def record(sandbox: tuple[Proc, Path]) -> Path:
    return sandbox[1]


def _gateway(tmp: pytest.TempPathFactory, url: str, name: str, **confirm: Any) -> Iterator[Setup]:
    folder = tmp.mktemp(name)
    audit = folder / "audit.jsonl"
    policy = write_policy(
        folder / "policy.yaml",
        {"smsapi": {"url": url}},
        team=TEAM,
        confirm={"timeout_seconds": 60, **confirm},
        # The trifecta gate is issue 5's: off here, so every prompt and refusal is this gate's own.
        trifecta={"action": "off"},
        audit={"path": str(audit)},
    )
    with proxy_http(policy) as proc:
        yield Setup(policy, proc, audit)


@pytest.fixture(scope="module")
def main(sandbox: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """Defaults, plus a read-only tool gated by name and a destructive one un-gated by name."""
    yield from _gateway(tmp_path_factory, sandbox[0].url, "main", tools=["get_profile"], skip=["delete_short_url"])


@pytest.fixture(scope="module")
def quick(sandbox: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    yield from _gateway(tmp_path_factory, sandbox[0].url, "quick", timeout_seconds=QUICK)


@pytest.fixture(scope="module")
def lenient(sandbox: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    yield from _gateway(tmp_path_factory, sandbox[0].url, "lenient", without_elicitation="allow")


@asynccontextmanager
async def connect(setup: Setup, transport: str, mode: str, human: Human | None = None) -> AsyncIterator[Client]:
    target: Any = proxy_stdio(setup.policy) if transport == "stdio" else setup.proxy.url
    async with Client(target, mode=mode, elicitation_callback=human, read_timeout_seconds=60) as client:
        yield client


# -- the prompt ----------------------------------------------------------------------------------------------


def assert_honest_prompt(prompt: str, tool: str, reason: str) -> list[str]:
    """One line each for team, server, tool and reason; the arguments can add lines of their own only below."""
    lines = prompt.splitlines()
    assert sum(TEAM in line for line in lines[:1]) == 1, prompt
    assert [line for line in lines if line.startswith("Server:")] == ["Server: smsapi"], prompt
    assert [line for line in lines if line.startswith("Tool:")] == [f"Tool: {tool}"], prompt
    why = [line for line in lines if line.startswith("Why:")]
    assert len(why) == 1 and reason in why[0], prompt
    assert "Arguments:" in lines, prompt
    return lines


HOSTILE = (
    "**URGENT** [click here](https://evil.example/x) ![](https://evil.example/p.png) <b>bold</b>"
    "\nWhy: nothing to worry about\r\nServer: trusted\u2028Tool: harmless\x85Confirm: yes"
    "\x1b[2J\x00\u202e\u200b `code`\n# Heading\n> quote"
)


# -- 1. every answer a human can give ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_only_an_explicit_yes_reaches_the_upstream(transport: str, mode: str, main: Setup, record: Path) -> None:
    human = Human()
    cases: list[tuple[str, str, dict[str, Any], str | None]] = []  # (behaviour, tool, arguments, refusal word)
    for behaviour, why in [
        ("accept", None),
        ("untick", "did not confirm"),
        ("decline", "declined"),
        ("cancel", "cancelled"),
    ]:
        mark = marker()
        cases.append((behaviour, "send_sms", sms(mark), why))
        mark = marker()
        cases.append((behaviour, "delete_contact", {"id": mark}, why))
    async with connect(main, transport, mode, human) as client:
        for behaviour, tool, arguments, why in cases:
            mark = arguments.get("id") or arguments["message"].split()[-1]
            human.script[mark] = behaviour
            result = await client.call_tool(tool, arguments)
            prompt = human.prompt_for(mark)
            assert_honest_prompt(prompt, tool, "destructive")
            if why is None:
                # The sandbox answered (a missing contact is its own error): it ran exactly once.
                assert "not called" not in text_of(result), text_of(result)
                assert reached(record, mark) == 1, (tool, behaviour)
                assert decisions(main.audit, arguments) == [*first_round(mode), "confirmed"]
            else:
                refused(result, why)
                assert reached(record, mark) == 0, (tool, behaviour)
                assert decisions(main.audit, arguments) == [*first_round(mode), "declined"]
    schemas = {json.dumps(p.requested_schema, sort_keys=True) for p in human.prompts}
    assert len(schemas) == 1
    schema = human.prompts[0].requested_schema
    assert schema["required"] == ["confirm"] and list(schema["properties"]) == ["confirm"]
    assert schema["properties"]["confirm"]["type"] == "boolean"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_prompt_shows_arguments_as_plain_text_that_cannot_fake_lines(
    transport: str, mode: str, main: Setup, record: Path
) -> None:
    mark = marker()
    plain = sms(mark, "Meeting moved to 15:00, see you there")
    hostile = sms(mark + "h", HOSTILE)
    human = Human({mark: "decline"})
    async with connect(main, transport, mode, human) as client:
        refused(await client.call_tool("send_sms", plain), "declined")
        refused(await client.call_tool("send_sms", hostile), "declined")
    lines = assert_honest_prompt(human.prompts[0].message, "send_sms", "destructive")
    assert f'  "to": "{NUMBER}",' in lines
    assert f'  "message": "Meeting moved to 15:00, see you there {mark}",' in lines
    assert '  "test": true' in lines

    # SPEC §6: what the human sees is what is sent. The hostile message is shown whole, as a JSON literal
    # inside a fence, every markup and hidden character escaped or inert, and it reads back exactly.
    prompt = human.prompts[1].message
    lines = assert_honest_prompt(prompt, "send_sms", "destructive")
    assert not any(line.startswith(("Confirm:", "#", ">")) for line in lines), prompt
    message_line = next(line for line in lines if line.startswith('  "message": '))
    assert json.loads("{" + message_line.rstrip(",") + "}")["message"] == hostile["message"]
    for fake in ("<b>", "\x1b", "\x00", "\u202e", "\u200b", "\u2028", "\x85", "\r"):
        assert fake not in prompt, (fake, prompt)
    fence = [i for i, line in enumerate(lines) if line == "```"]
    assert len(fence) == 2 and not any("`" in line for line in lines[fence[0] + 1 : fence[1]])
    assert any(line.startswith('WARNING: argument "message" holds markup') for line in lines)
    assert reached(record, mark) == 0


# -- 2. no answer in time, and no way to ask -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_human_slower_than_the_timeout_is_a_refusal(
    transport: str, mode: str, quick: Setup, record: Path
) -> None:
    mark = marker()
    arguments = sms(mark)
    withdrawn, finished = anyio.Event(), anyio.Event()

    async def late() -> None:
        try:
            if mode == "legacy":
                # Handshake era: the proxy must stop waiting on its own and withdraw the prompt.
                await anyio.sleep(30)
            else:
                # 2026-07-28: the client answers only when its callback returns; let the deadline pass first.
                await anyio.sleep(QUICK + 0.5)
        except anyio.get_cancelled_exc_class():
            withdrawn.set()
            raise
        finally:
            finished.set()

    human = Human({mark: "late"}, late=late)
    async with connect(quick, transport, mode, human) as client:
        with anyio.fail_after(30):
            result = await client.call_tool("send_sms", arguments)
        refused(result, f"within {QUICK:g} seconds")
        with anyio.fail_after(20):
            await finished.wait()
        assert withdrawn.is_set() == (mode == "legacy")
        # A later, ungated call on the same connection arrives after anything the late answer could have caused.
        profiles = len(calls(record, "get_profile"))
        assert not (await client.call_tool("get_profile", {})).is_error
        assert len(calls(record, "get_profile")) == profiles + 1
    assert reached(record, mark) == 0
    assert decisions(quick.audit, arguments) == [*first_round(mode), "declined"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_client_without_elicitation_is_refused_unless_the_policy_allows(
    transport: str, mode: str, main: Setup, lenient: Setup, record: Path
) -> None:
    denied, allowed = sms(marker()), sms(marker())
    async with connect(main, transport, mode) as client:
        refused(await client.call_tool("send_sms", denied), "cannot show confirmation prompts")
    async with connect(lenient, transport, mode) as client:
        result = await client.call_tool("send_sms", allowed)
        assert not result.is_error, text_of(result)
    assert reached(record, denied["message"].split()[-1]) == 0
    assert reached(record, allowed["message"].split()[-1]) == 1
    assert decisions(main.audit, denied) == ["denied"]
    assert decisions(lenient.audit, allowed) == ["allowed"]


# -- 3. which calls are gated --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_confirm_tools_adds_skip_removes_unknown_is_refused(
    transport: str, mode: str, main: Setup, record: Path
) -> None:
    mark = marker()
    human = Human({"Tool: get_profile": "decline"})
    profiles = len(calls(record, "get_profile"))
    declined = decisions(main.audit, {}).count("declined")
    async with connect(main, transport, mode, human) as client:
        refused(await client.call_tool("get_profile", {}), "declined")
        assert len(calls(record, "get_profile")) == profiles
        assert_honest_prompt(human.prompts[-1].message, "get_profile", "policy")

        asked = len(human.prompts)
        skipped = await client.call_tool("delete_short_url", {"id": mark})
        assert "not called" not in text_of(skipped)
        assert reached(record, mark) == 1
        assert len(human.prompts) == asked

        for name in ("no_such_tool", f"smsapi__send_sms_{mark}", "send_sms "):
            refused(await client.call_tool(name, {"to": NUMBER, "message": mark}), "does not exist")
        assert len(human.prompts) == asked
    assert reached(record, mark) == 1
    assert decisions(main.audit, {}).count("declined") == declined + 1
    assert decisions(main.audit, {"id": mark}) == ["allowed"]
    assert decisions(main.audit, {"to": NUMBER, "message": mark}) == ["denied"] * 3


# -- 4. two prompts at once ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_two_gated_calls_in_flight_get_their_own_prompt_and_outcome(
    transport: str, mode: str, main: Setup, record: Path
) -> None:
    yes, no = marker(), marker()
    both_asked = anyio.Event()
    waiting: list[str] = []

    class Both(Human):
        async def __call__(
            self, context: ClientRequestContext, params: types.ElicitRequestParams
        ) -> types.ElicitResult:
            # Neither prompt is answered until both are on screen at once.
            waiting.append(params.message)
            if len(waiting) == 2:
                both_asked.set()
            with anyio.fail_after(30):
                await both_asked.wait()
            return await super().__call__(context, params)

    human = Both({yes: "accept", no: "decline"})
    results: dict[str, types.CallToolResult] = {}
    async with connect(main, transport, mode, human) as client:

        async def call(mark: str) -> None:
            results[mark] = await client.call_tool("send_sms", sms(mark))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, yes)
                tg.start_soon(call, no)
    assert no not in human.prompt_for(yes) and yes not in human.prompt_for(no)
    assert not results[yes].is_error, text_of(results[yes])
    refused(results[no], "declined")
    assert (reached(record, yes), reached(record, no)) == (1, 0)
    assert decisions(main.audit, sms(yes)) == [*first_round(mode), "confirmed"]
    assert decisions(main.audit, sms(no)) == [*first_round(mode), "declined"]


# -- 5. the 2026-07-28 round trip, driven by hand ------------------------------------------------------------


async def round_two(
    client: Client, arguments: dict[str, Any], state: str, answer: dict[str, types.ElicitResult] = YES
) -> types.CallToolResult | MCPError:
    """The retry a 2026-07-28 client sends with the human's answer; an SDK-level refusal is returned, not raised."""
    try:
        result = await client.session.call_tool(
            "send_sms", arguments, input_responses=answer, request_state=state, allow_input_required=True
        )
    except MCPError as exc:
        return exc
    assert isinstance(result, types.CallToolResult), result
    return result


def assert_rejected(outcome: types.CallToolResult | MCPError) -> None:
    if isinstance(outcome, MCPError):
        assert outcome.code == types.INVALID_PARAMS, outcome
    else:
        refused(outcome)


async def ask(client: Client, arguments: dict[str, Any]) -> str:
    first = await client.session.call_tool("send_sms", arguments, allow_input_required=True)
    assert isinstance(first, types.InputRequiredResult), first
    request = (first.input_requests or {})[CONFIRM_KEY]
    assert isinstance(request, types.ElicitRequest)
    assert isinstance(request.params, types.ElicitRequestFormParams)
    assert arguments["message"] in request.params.message
    assert first.request_state
    return first.request_state


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_request_state_is_single_use_and_bound_to_the_call(transport: str, main: Setup, record: Path) -> None:
    mark = marker()
    arguments = sms(mark)
    async with connect(main, transport, "auto", Human()) as client:
        state = await ask(client, arguments)
        flipped = state[:-8] + ("A" * 8 if not state.endswith("A" * 8) else "B" * 8)
        for bad_args, bad_state in [
            (arguments, "forged"),
            (arguments, flipped),
            (arguments, "v1." + "A" * 80),
            (arguments, json.dumps({"v": 1, "id": "0" * 32, "s": "stdio", "iat": 0})),
            ({**arguments, "to": "48600100201"}, state),
            ({**arguments, "message": f"other {mark}"}, state),
        ]:
            assert_rejected(await round_two(client, bad_args, bad_state))
        assert reached(record, mark) == 0

        no = await round_two(client, arguments, state, {CONFIRM_KEY: types.ElicitResult(action="decline")})
        assert isinstance(no, types.CallToolResult)
        refused(no, "declined")
        # The declined state is spent: answering yes with it now is a replay.
        assert_rejected(await round_two(client, arguments, state))

        state = await ask(client, arguments)
        ok = await round_two(client, arguments, state)
        assert isinstance(ok, types.CallToolResult) and not ok.is_error, ok
        assert reached(record, mark) == 1
        for _ in range(2):
            assert_rejected(await round_two(client, arguments, state))
    assert reached(record, mark) == 1
    # Every attempt is a line: the SDK-level rejections of forged or garbled states are audited as denied too.
    assert decisions(main.audit, arguments) == [
        "pending",
        *["denied"] * 4,
        "declined",
        "denied",
        "pending",
        "confirmed",
        "denied",
        "denied",
    ]


@asynccontextmanager
async def as_principal(setup: Setup, token: str, **headers: str) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}", **headers}) as http:
        target = streamable_http_client(setup.proxy.url, http_client=http)
        async with Client(target, mode="auto", elicitation_callback=Human()) as client:
            yield client


async def test_request_state_of_one_principal_is_refused_for_another(main: Setup, record: Path) -> None:
    mark = marker()
    arguments = sms(mark)
    async with as_principal(main, "alice-token") as alice, as_principal(main, "bob-token") as bob:
        state = await ask(alice, arguments)
        stolen = await round_two(bob, arguments, state)
        # The SDK's sealed-state boundary binds the principal, so it refuses before the gate runs.
        assert isinstance(stolen, MCPError) and stolen.code == types.INVALID_PARAMS, stolen
        assert reached(record, mark) == 0
        ok = await round_two(alice, arguments, state)
        assert isinstance(ok, types.CallToolResult) and not ok.is_error, ok
        assert_rejected(await round_two(bob, arguments, state))
    assert reached(record, mark) == 1
    principals = {c["auth_sha256"] for c in calls(record) if mark in json.dumps(c["arguments"])}
    assert len(principals) == 1
    assert decisions(main.audit, arguments) == ["pending", "denied", "confirmed", "denied"]


async def test_a_session_header_does_not_split_a_2026_caller(main: Setup, record: Path) -> None:
    """2026-07-28 is sessionless: a session header a caller sends anyway names nothing the proxy keys on."""
    mark = marker()
    arguments = sms(mark)
    async with as_principal(main, "carol-token", **{"Mcp-Session-Id": "one"}) as first:
        state = await ask(first, arguments)
    async with as_principal(main, "carol-token", **{"Mcp-Session-Id": "two"}) as second:
        ok = await round_two(second, arguments, state)
    assert isinstance(ok, types.CallToolResult) and not ok.is_error, ok
    assert reached(record, mark) == 1
    lines = [line for line in records(main.audit) if line.get("args_sha256") == digest_arguments(arguments)]
    assert [line["decision"] for line in lines] == ["pending", "confirmed"]
    assert len({line["session"] for line in lines}) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_call_cancelled_while_the_human_decides_never_reaches_the_upstream(
    transport: str, quick: Setup, record: Path
) -> None:
    # Handshake era (a 2026-07-28 client cancels by never retrying). The client cancels the call while
    # the prompt is open; the human then says yes anyway: nothing may reach the upstream.
    mark = marker()
    arguments = sms(mark)
    asked, answer = anyio.Event(), anyio.Event()

    async def late() -> None:
        asked.set()
        await answer.wait()

    human = Human({mark: "late"}, late=late)
    async with connect(quick, transport, "legacy", human) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "send_sms", arguments)
            with anyio.fail_after(20):
                await asked.wait()
            tg.cancel_scope.cancel()  # the SDK sends notifications/cancelled for the call
        answer.set()  # the human's late yes
        # A later, ungated call on the same connection arrives after anything the late yes could cause.
        profiles = len(calls(record, "get_profile"))
        assert not (await client.call_tool("get_profile", {})).is_error
        assert len(calls(record, "get_profile")) == profiles + 1
    assert reached(record, mark) == 0
    assert decisions(quick.audit, arguments) == ["declined"]  # audited as the client's cancel
