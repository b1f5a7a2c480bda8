"""Issue 5: argument pins and limits, end to end.

Pins: the shipped 46elks dry-run policy in front of the 46elks stand-in (a `command:` upstream
over stdio), and an SMSAPI `test: true` pin in front of the sandbox. Limits: a sliding rate
window shared by a team's callers, that resets after its window; recipient counts; group sends
of unknown size gated. Every refusal is checked against the upstream's own call record.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from mcp import Client

from tests.harness import ELKS, MODES, PY, Proc, calls, proxy_http, proxy_stdio, run, write_policy
from tests.test_policies_e2e import Human, bearer, names, team_policy, text

pytestmark = pytest.mark.anyio

ELKS_ENV = {"ELKS_API_USERNAME": "u-test", "ELKS_API_PASSWORD": "p-test", "ELKS_PHONE_NUMBER": "+46766861647"}
ELKS_TOOLS = {
    "send_sms",
    "get_sms_messages",
    "check_sms_status",
    "check_account_balance",
    "estimate_sms_cost",
    "get_delivery_statistics",
}


def sandbox_policy(directory: Path, url: str, **sections: Any) -> Path:
    """Nothing gated and no trifecta, so what a test sees is the pin or limit under test."""
    return write_policy(
        directory / f"p-{secrets.token_hex(3)}.yaml",
        {"smsapi": {"url": url, "profile": "smsapi"}},
        scopes=["sms", "contacts"],
        confirm={"destructive": False},
        trifecta={"action": "off"},
        **sections,
    )


def with_message(record: Path, tool: str, message: str) -> list[dict[str, Any]]:
    return [c["arguments"] for c in calls(record, tool) if c["arguments"].get("message") == message]


# ---- 46elks: dry_run pinned


def elks_policy(directory: Path, record: Path, scopes: list[str] | None = None) -> Path:
    path = team_policy("elks46-dryrun", directory, command=[PY, str(ELKS[1]), "--record", str(record)])
    if scopes is not None:
        doc = yaml.safe_load(path.read_text())
        doc["scopes"] = scopes
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("mode", MODES)
async def test_elks_dry_run_is_injected_and_cannot_be_overridden(mode: str, tmp_path: Path) -> None:
    record = tmp_path / "elks.jsonl"
    policy = elks_policy(tmp_path, record)
    human = Human()
    async with Client(proxy_stdio(policy, env=ELKS_ENV), mode=mode, elicitation_callback=human) as client:
        assert await names(client) == ELKS_TOOLS  # the shipped policy grants both of the profile's scopes
        sent = await client.call_tool("send_sms", {"to": "+46701112233", "message": "Hej"})
        overridden = await client.call_tool("send_sms", {"to": "+46701112233", "message": "Hej", "dry_run": False})
        as_text = await client.call_tool("send_sms", {"to": "+46701112233", "message": "Hej", "dry_run": "true"})
    assert not sent.is_error and "DRY RUN" in text(sent)
    (received,) = calls(record, "send_sms")  # exactly one send reached 46elks
    assert received["arguments"]["dry_run"] is True
    assert len(human.messages) == 1 and '  "dry_run": true' in human.messages[0]  # the human sees the pinned value
    for refused in (overridden, as_text):
        assert refused.is_error and "pinned to true" in text(refused) and "It was not called" in text(refused)


@pytest.mark.parametrize("mode", MODES)
async def test_elks_account_scope_not_granted_hides_the_balance(mode: str, tmp_path: Path) -> None:
    record = tmp_path / "elks.jsonl"
    policy = elks_policy(tmp_path, record, scopes=["sms"])
    async with Client(proxy_stdio(policy, env=ELKS_ENV), mode=mode) as client:
        listed = await names(client)
        refused = await client.call_tool("check_account_balance", {})
        read = await client.call_tool("estimate_sms_cost", {"to": "+46701112233", "message": "Hej"})
    assert listed == ELKS_TOOLS - {"check_account_balance"}
    assert refused.is_error and "scope 'account' not granted" in text(refused)
    assert not read.is_error
    assert [c["tool"] for c in calls(record)] == ["estimate_sms_cost"]


# ---- SMSAPI: test pinned, date forbidden


@pytest.fixture(scope="module")
def pinned_proxy(sandbox: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    pins = [{"tools": ["send_*"], "set": {"test": True}, "forbid": ["date"]}]
    policy = sandbox_policy(tmp_path_factory.mktemp("pins"), sandbox[0].url, pins=pins)
    with proxy_http(policy) as proc:
        yield proc


@pytest.mark.parametrize("mode", MODES)
async def test_smsapi_test_pin_and_forbidden_argument(
    mode: str, sandbox: tuple[Proc, Path], pinned_proxy: Proc
) -> None:
    record, tag = sandbox[1], secrets.token_hex(4)
    async with Client(pinned_proxy.url, mode=mode) as client:
        sent = await client.call_tool("send_sms", {"to": "48600100200", "message": f"{tag} plain"})
        group = await client.call_tool("send_group_sms", {"group": "Klienci VIP", "message": f"{tag} group"})
        override = await client.call_tool("send_sms", {"to": "48600100200", "message": f"{tag} live", "test": False})
        dated = await client.call_tool(
            "send_sms", {"to": "48600100200", "message": f"{tag} dated", "date": "2030-01-01T10:00:00+01:00"}
        )
    assert not sent.is_error and not group.is_error
    assert with_message(record, "send_sms", f"{tag} plain") == [
        {"to": "48600100200", "message": f"{tag} plain", "test": True}
    ]
    assert [a["test"] for a in with_message(record, "send_group_sms", f"{tag} group")] == [True]
    assert override.is_error and "pinned to true" in text(override) and "false" in text(override)
    assert dated.is_error and "'date' is not allowed" in text(dated)
    assert with_message(record, "send_sms", f"{tag} live") == []
    assert with_message(record, "send_sms", f"{tag} dated") == []


# ---- per_minute: a sliding window per pattern per team, that resets


@pytest.mark.parametrize("mode", MODES)
async def test_rate_limit_is_shared_by_the_team_and_resets_after_its_window(
    mode: str, sandbox: tuple[Proc, Path], tmp_path: Path
) -> None:
    record, tag = sandbox[1], secrets.token_hex(4)
    limits = [{"tools": ["send_sms"], "per_minute": 2, "window_seconds": 3}]
    policy = sandbox_policy(tmp_path, sandbox[0].url, limits=limits)

    def args(n: int) -> dict[str, Any]:
        return {"to": "48600100200", "message": f"{tag} {n}", "test": True}

    with proxy_http(policy) as proxy:
        async with bearer(proxy.url, f"ann-{tag}", mode) as ann, bearer(proxy.url, f"ben-{tag}", mode) as ben:
            assert not (await ann.call_tool("send_sms", args(1))).is_error
            assert not (await ben.call_tool("send_sms", args(2))).is_error
            refused = await ann.call_tool("send_sms", args(3))  # the team's window is full, whoever asks
            other_tool = await ann.call_tool("get_sms", {})  # a tool the pattern does not match
            assert refused.is_error and "2 calls per 3 s" in text(refused)
            wait = int(re.search(r"Try again in (\d+) s", text(refused)).group(1))  # type: ignore[union-attr]
            assert 1 <= wait <= 3
            assert not other_tool.is_error
            assert with_message(record, "send_sms", f"{tag} 3") == []
            # Waiting the advertised time is the behaviour under test, not synchronisation.
            await anyio.sleep(wait + 0.2)
            again = await ben.call_tool("send_sms", args(4))
    assert not again.is_error
    assert [
        c["arguments"]["message"] for c in calls(record, "send_sms") if c["arguments"]["message"].startswith(tag)
    ] == [f"{tag} 1", f"{tag} 2", f"{tag} 4"]


def test_check_prints_the_window(sandbox: tuple[Proc, Path], tmp_path: Path) -> None:
    limits = [
        {"tools": ["send_sms"], "per_minute": 2, "window_seconds": 3, "max_recipients": 5},
        {"tools": ["send_group_sms"], "per_minute": 4},
    ]
    policy = sandbox_policy(tmp_path, sandbox[0].url, limits=limits)
    done = run([PY, "-m", "proxy", "check", "--policy", str(policy)])
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("send_")}
    assert "2 per 3 s, max 5 recipients" in rows["send_sms"]
    assert "4/min" in rows["send_group_sms"]


# ---- max_recipients


@pytest.fixture(scope="module")
def recipients_proxy(sandbox: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    limits = [{"tools": ["send_*"], "max_recipients": 2}]
    policy = sandbox_policy(tmp_path_factory.mktemp("recipients"), sandbox[0].url, limits=limits)
    with proxy_http(policy) as proc:
        yield proc


@pytest.mark.parametrize("mode", MODES)
async def test_max_recipients_counts_lists_and_gates_group_sends(
    mode: str, sandbox: tuple[Proc, Path], recipients_proxy: Proc
) -> None:
    record, tag = sandbox[1], secrets.token_hex(4)

    def args(**extra: Any) -> dict[str, Any]:
        return {"message": f"{tag} {extra.get('to') or extra.get('group')}", "test": True, **extra}

    decline, accept = Human("decline"), Human()
    async with Client(recipients_proxy.url, mode=mode, elicitation_callback=decline) as client:
        three = await client.call_tool("send_sms", args(to="48600100200,48600100201, 48600100202"))
        two = await client.call_tool("send_sms", args(to="48600100200, 48600100201"))
        spaced = await client.call_tool("send_sms", args(to="+48 600 100 203"))
        declined = await client.call_tool("send_group_sms", args(group="Klienci VIP"))
    async with Client(recipients_proxy.url, mode=mode, elicitation_callback=accept) as client:
        accepted = await client.call_tool("send_group_sms", args(group="Dostawcy"))
    assert three.is_error and "names 3 recipients" in text(three) and "at most 2" in text(three)
    assert with_message(record, "send_sms", f"{tag} 48600100200,48600100201, 48600100202") == []
    assert not two.is_error and not spaced.is_error  # one number written with spaces is one recipient
    assert len(decline.messages) == 1 and "recipient count unknown" in decline.messages[0]
    assert declined.is_error and with_message(record, "send_group_sms", f"{tag} Klienci VIP") == []
    assert len(accept.messages) == 1 and "recipient count unknown" in accept.messages[0]
    assert not accepted.is_error and len(with_message(record, "send_group_sms", f"{tag} Dostawcy")) == 1
