"""Issue 5 / SPEC §7: the lethal trifecta, per session, end to end against the sandbox.

Sessions: stdio is the process; a handshake-era HTTP session is its Mcp-Session-Id; the
sessionless 2026-07-28 era over HTTP is the principal, until `trifecta.idle_seconds` pass
without a call. That last choice fails closed: a new client of the same principal inherits
the taint, a different principal does not.

The policies here gate nothing else (confirm.destructive off), so any gate or refusal seen
is the trifecta's. get_sms supplies the untrusted and sensitive legs; send_sms is external.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp import Client

from tests.harness import MODES, Proc, calls, proxy_http, proxy_stdio, write_policy
from tests.test_policies_e2e import Human, bearer, text

pytestmark = pytest.mark.anyio

IDLE_SECONDS = 4


def send_args(tag: str) -> dict[str, object]:
    # A unique message per send, so the record shows exactly which send reached the upstream.
    return {"to": "48600100200", "message": f"trifecta {tag}", "test": True}


def sent(record: Path, tag: str) -> int:
    return sum(1 for c in calls(record, "send_sms") if c["arguments"].get("message") == f"trifecta {tag}")


def policy(directory: Path, url: str, action: str) -> Path:
    return write_policy(
        directory / f"{action}.yaml",
        {"smsapi": {"url": url, "profile": "smsapi"}},
        team=f"trifecta-{action}",
        scopes=["sms", "contacts"],
        confirm={"destructive": False},
        trifecta={"action": action, "idle_seconds": IDLE_SECONDS},
    )


@pytest.fixture(scope="module")
def policies(sandbox: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("policies")
    return {action: policy(directory, sandbox[0].url, action) for action in ("block", "confirm", "off")}


@pytest.fixture(scope="module")
def block_proxy(policies: dict[str, Path]) -> Iterator[Proc]:
    with proxy_http(policies["block"]) as proc:
        yield proc


@pytest.fixture(scope="module")
def confirm_proxy(policies: dict[str, Path]) -> Iterator[Proc]:
    with proxy_http(policies["confirm"]) as proc:
        yield proc


def tag() -> str:
    return secrets.token_hex(4)


# ---- block


async def test_block_names_the_tainting_tools_and_spares_other_handshake_sessions(
    sandbox: tuple[Proc, Path], block_proxy: Proc
) -> None:
    record, t = sandbox[1], tag()
    async with Client(block_proxy.url, mode="legacy") as tainted, Client(block_proxy.url, mode="legacy") as fresh:
        assert not (await tainted.call_tool("send_sms", send_args(f"{t}-before"))).is_error  # one leg: fine
        assert not (await tainted.call_tool("get_groups", {})).is_error  # untrusted: two legs
        assert not (await tainted.call_tool("send_sms", send_args(f"{t}-two"))).is_error
        assert not (await tainted.call_tool("get_sms", {})).is_error  # now untrusted + sensitive
        blocked = await tainted.call_tool("send_sms", send_args(f"{t}-blocked"))
        # The other session was open all along, on the same principal: its own record is clean.
        other = await fresh.call_tool("send_sms", send_args(f"{t}-fresh"))
        again = await tainted.call_tool("send_sms", send_args(f"{t}-blocked"))
    assert blocked.is_error and again.is_error
    assert "Blocked" in text(blocked) and "tainted by: get_groups, get_sms" in text(blocked)
    assert sent(record, f"{t}-blocked") == 0
    assert not other.is_error and sent(record, f"{t}-fresh") == 1
    assert sent(record, f"{t}-before") == 1 and sent(record, f"{t}-two") == 1


@pytest.mark.parametrize("mode", MODES)
async def test_block_over_stdio_is_per_process(
    mode: str, sandbox: tuple[Proc, Path], policies: dict[str, Path]
) -> None:
    record, t = sandbox[1], tag()
    async with Client(proxy_stdio(policies["block"]), mode=mode) as client:
        assert not (await client.call_tool("get_sms", {})).is_error
        blocked = await client.call_tool("send_sms", send_args(f"{t}-blocked"))
    async with Client(proxy_stdio(policies["block"]), mode=mode) as client:
        fresh = await client.call_tool("send_sms", send_args(f"{t}-fresh"))
    assert blocked.is_error and "tainted by: get_sms" in text(blocked)
    assert sent(record, f"{t}-blocked") == 0
    assert not fresh.is_error and sent(record, f"{t}-fresh") == 1


async def test_sessionless_era_is_per_principal_with_an_idle_window(
    sandbox: tuple[Proc, Path], block_proxy: Proc
) -> None:
    record, t = sandbox[1], tag()
    alice, bob = f"alice-{t}", f"bob-{t}"
    async with bearer(block_proxy.url, alice, "auto") as client:
        assert not (await client.call_tool("get_sms", {})).is_error
        assert (await client.call_tool("send_sms", send_args(f"{t}-a1"))).is_error
    # A new 2026-07-28 client of the same principal: no session to tell them apart, so still tainted.
    async with bearer(block_proxy.url, alice, "auto") as client:
        inherited = await client.call_tool("send_sms", send_args(f"{t}-a2"))
    # Another principal is another record.
    async with bearer(block_proxy.url, bob, "auto") as client:
        other = await client.call_tool("send_sms", send_args(f"{t}-b"))
    # The handshake era of the same principal has its own session.
    async with bearer(block_proxy.url, alice, "legacy") as client:
        handshake = await client.call_tool("send_sms", send_args(f"{t}-legacy"))
    assert inherited.is_error and "tainted by: get_sms" in text(inherited)
    assert not other.is_error and not handshake.is_error
    assert sent(record, f"{t}-a1") == sent(record, f"{t}-a2") == 0
    assert sent(record, f"{t}-b") == sent(record, f"{t}-legacy") == 1

    # The window is the behaviour under test: wait it out with no call from alice. A handshake
    # session tainted meanwhile has a real lifetime, so the idle window does not clean it.
    async with bearer(block_proxy.url, alice, "legacy") as session:
        assert not (await session.call_tool("get_sms", {})).is_error
        await anyio.sleep(IDLE_SECONDS + 0.5)
        async with bearer(block_proxy.url, alice, "auto") as client:
            reset = await client.call_tool("send_sms", send_args(f"{t}-a3"))
        kept = await session.call_tool("send_sms", send_args(f"{t}-kept"))
    assert not reset.is_error and sent(record, f"{t}-a3") == 1
    assert kept.is_error and "tainted by: get_sms" in text(kept) and sent(record, f"{t}-kept") == 0


# ---- confirm and off


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("answer", ["accept", "decline"])
async def test_confirm_gates_the_completing_call_with_the_trifecta_reason(
    mode: str, answer: str, sandbox: tuple[Proc, Path], confirm_proxy: Proc
) -> None:
    record, t = sandbox[1], tag()
    human = Human(answer)
    async with bearer(confirm_proxy.url, f"carol-{t}", mode, elicitation_callback=human) as client:
        assert not (await client.call_tool("send_sms", send_args(f"{t}-clean"))).is_error
        assert human.messages == []  # nothing else gates a send under this policy
        assert not (await client.call_tool("get_contacts", {})).is_error
        result = await client.call_tool("send_sms", send_args(f"{t}-gated"))
    assert len(human.messages) == 1
    assert "lethal trifecta" in human.messages[0] and "get_contacts" in human.messages[0]
    if answer == "accept":
        assert not result.is_error and sent(record, f"{t}-gated") == 1
    else:
        assert result.is_error and "declined" in text(result) and sent(record, f"{t}-gated") == 0


@pytest.mark.parametrize("mode", MODES)
async def test_off_lets_the_completing_call_through(
    mode: str, sandbox: tuple[Proc, Path], policies: dict[str, Path]
) -> None:
    record, t = sandbox[1], tag()
    async with Client(proxy_stdio(policies["off"]), mode=mode) as client:
        assert not (await client.call_tool("get_sms", {})).is_error
        result = await client.call_tool("send_sms", send_args(t))
    assert not result.is_error and sent(record, t) == 1
