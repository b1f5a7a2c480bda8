"""Issue 5: scope minimisation, allow/deny globs, unlisted tools, endpoint groups and the four team
policies, end to end: real `mcp.Client`s, the real proxy (Streamable HTTP and stdio), the sandbox
as upstream, both protocol eras. "Refused without reaching the upstream" is read from the
sandbox's own call record.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import mcp.types as types
import pytest
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from proxy.policy import load_policy, policies_dir
from tests.harness import MODES, Proc, all_tools, calls, proxy_http, proxy_stdio, write_policy

pytestmark = pytest.mark.anyio

TEAMS = policies_dir() / "teams"
GROUPS = ["sms", "contacts", "account", "subusers", "short-url", "hlr", "blacklist"]
FAKE_TOKEN = "fake-smsapi-token-5d1e0c4b9a"  # a stand-in secret: it must never show up in logs


# ---- helpers shared by the issue-5 test modules


@asynccontextmanager
async def bearer(url: str, token: str | None, mode: str, **kwargs: Any) -> AsyncIterator[Client]:
    """A client whose HTTP requests carry `Authorization: Bearer <token>`: one principal per token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, **kwargs) as client:
            yield client


class Human:
    """An elicitation callback that answers every confirmation the same way and keeps the messages."""

    def __init__(self, action: str = "accept", confirm: bool = True) -> None:
        self.action = action
        self.confirm = confirm
        self.messages: list[str] = []

    async def __call__(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.messages.append(params.message)
        content = {"confirm": self.confirm} if self.action == "accept" else None
        return types.ElicitResult(action=self.action, content=content)  # type: ignore[arg-type]


def text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def team_policy(name: str, directory: Path, **upstream: Any) -> Path:
    """A shipped team policy with only its upstream's url/command swapped for a local one."""
    source = TEAMS / f"{name}.yaml"
    doc = yaml.safe_load(source.read_text())
    (spec,) = doc["upstreams"].values()
    spec.pop("url", None)
    spec.pop("command", None)
    spec.update(upstream)
    path = directory / source.name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def names(client: Client) -> set[str]:
    return {t.name for t in await all_tools(client)}


# ---- fixtures


def trimmed_profile(directory: Path) -> Path:
    """The shipped smsapi profile without get_custom_fields: the sandbox's one unlisted tool."""
    doc = yaml.safe_load((policies_dir() / "profiles" / "smsapi.yaml").read_text())
    del doc["tools"]["get_custom_fields"]
    doc["groups"]["contacts"].remove("get_custom_fields")
    path = directory / "trimmed.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def scoped_policy(directory: Path, url: str, unlisted: str) -> Path:
    trimmed_profile(directory)
    return write_policy(
        directory / f"scoped-{unlisted}.yaml",
        {"smsapi": {"url": url, "profile": "./trimmed.yaml"}},
        scopes=["sms", "contacts"],
        tools={"allow": ["get_*", "send_*", "create_contact"], "deny": ["delete_*"], "unlisted": unlisted},
        confirm={"destructive": False},
        trifecta={"action": "off"},
    )


@pytest.fixture(scope="module")
def scoped(sandbox: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scoped_policy(tmp_path_factory.mktemp("scoped"), sandbox[0].url, "hide")


@pytest.fixture(scope="module")
def scoped_proxy(scoped: Path) -> Iterator[Proc]:
    with proxy_http(scoped) as proc:
        yield proc


# The effective view of `scoped`: what each endpoint lists, and why the rest is refused.
VISIBLE = {
    None: {
        "send_sms",
        "send_group_sms",
        "get_sms",
        "get_contacts",
        "create_contact",
        "get_groups",
        "get_contact_groups",
    },
    "sms": {"send_sms", "send_group_sms", "get_sms"},
    "contacts": {"get_contacts", "create_contact", "get_groups", "get_contact_groups"},
}
HIDDEN = {  # tool -> (its group endpoint, the reason the refusal names)
    "get_profile": ("account", "scope 'profile' not granted"),
    "check_hlr": ("hlr", "scope 'hlr' not granted"),
    "delete_contact": ("contacts", "denied by tools.deny 'delete_*'"),
    "update_contact": ("contacts", "not allowed by tools.allow"),
    "get_custom_fields": ("contacts", "not listed in profile 'smsapi' (tools.unlisted: hide)"),
}
SAFE_ARGS: dict[str, dict[str, Any]] = {
    "get_profile": {},
    "check_hlr": {"number": "48600100200"},
    "delete_contact": {"id": "nope"},
    "update_contact": {"id": "nope", "first_name": "X"},
    "get_custom_fields": {},
    "get_contacts": {},
    "get_sms": {},
}


def endpoint(proxy: Proc, group: str | None) -> str:
    return proxy.url + (group or "")


# ---- scope minimisation, globs, unlisted, groups


@pytest.mark.parametrize("mode", MODES)
async def test_every_endpoint_lists_only_what_the_policy_grants(mode: str, scoped_proxy: Proc) -> None:
    for group in [None, *GROUPS]:
        async with Client(endpoint(scoped_proxy, group), mode=mode) as client:
            listed = await names(client)
        assert listed == VISIBLE.get(group, set()), group
        assert not listed & set(HIDDEN), group


@pytest.mark.parametrize("mode", MODES)
async def test_stdio_lists_what_the_root_endpoint_lists(mode: str, scoped: Path) -> None:
    async with Client(proxy_stdio(scoped), mode=mode) as client:
        assert await names(client) == VISIBLE[None]
        result = await client.call_tool("get_profile", {})
    assert result.is_error and "scope 'profile' not granted" in text(result)


@pytest.mark.parametrize("mode", MODES)
async def test_hidden_tools_are_refused_by_name_on_every_endpoint(
    mode: str, sandbox: tuple[Proc, Path], scoped_proxy: Proc
) -> None:
    record = sandbox[1]
    for tool, (group, reason) in HIDDEN.items():
        before = len(calls(record, tool))
        for where in (None, group, "sms"):
            async with Client(endpoint(scoped_proxy, where), mode=mode) as client:
                result = await client.call_tool(tool, SAFE_ARGS[tool])
            assert result.is_error, (tool, where)
            assert "It was not called" in text(result)
            if where is None or where == group:
                assert reason in text(result), (tool, where, text(result))
        assert len(calls(record, tool)) == before, f"the upstream saw {tool}"


@pytest.mark.parametrize("mode", MODES)
async def test_groups_narrow_the_endpoint(mode: str, sandbox: tuple[Proc, Path], scoped_proxy: Proc) -> None:
    record = sandbox[1]
    contacts_before, sms_before = len(calls(record, "get_contacts")), len(calls(record, "get_sms"))
    async with Client(endpoint(scoped_proxy, "sms"), mode=mode) as client:
        refused = await client.call_tool("get_contacts", {})
    assert refused.is_error and "not served at the /sms endpoint" in text(refused)
    async with Client(endpoint(scoped_proxy, "contacts"), mode=mode) as client:
        refused = await client.call_tool("get_sms", {})
        assert refused.is_error and "not served at the /contacts endpoint" in text(refused)
        assert len(calls(record, "get_contacts")) == contacts_before
        assert len(calls(record, "get_sms")) == sms_before
        allowed = await client.call_tool("get_contacts", {})  # the same tool at its own endpoint
    assert not allowed.is_error
    assert len(calls(record, "get_contacts")) == contacts_before + 1


@pytest.mark.parametrize("mode", MODES)
async def test_unlisted_allow_exposes_the_unlisted_tool(mode: str, sandbox: tuple[Proc, Path], tmp_path: Path) -> None:
    policy = scoped_policy(tmp_path, sandbox[0].url, "allow")
    record = sandbox[1]
    before = len(calls(record, "get_custom_fields"))
    async with Client(proxy_stdio(policy), mode=mode) as client:
        assert await names(client) == VISIBLE[None] | {"get_custom_fields"}
        result = await client.call_tool("get_custom_fields", {})
        refused = await client.call_tool("delete_contact", {"id": "nope"})  # the globs still apply
    assert not result.is_error and "<tool_output" in text(result)
    assert len(calls(record, "get_custom_fields")) == before + 1
    assert refused.is_error and "denied by tools.deny" in text(refused)


# ---- the team policies, as shipped, in front of the sandbox


@pytest.mark.parametrize("name", ["support", "marketing", "analytics", "elks46-dryrun"])
def test_team_policies_load(name: str) -> None:
    env = {"SMSAPI_TOKEN": FAKE_TOKEN, "ELKS_API_USERNAME": "u", "ELKS_API_PASSWORD": "p", "ELKS_PHONE_NUMBER": "+4670"}
    loaded = load_policy(TEAMS / f"{name}.yaml", env=env)
    assert loaded.policy.team == name and loaded.policy.description


@pytest.fixture(scope="module")
def teams(sandbox: tuple[Proc, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Proc]]:
    directory = tmp_path_factory.mktemp("teams")
    procs: dict[str, Proc] = {}
    env = {"SMSAPI_TOKEN": FAKE_TOKEN}
    with proxy_http(team_policy("support", directory, url=sandbox[0].url), env=env) as procs["support"]:
        with proxy_http(team_policy("analytics", directory, url=sandbox[0].url), env=env) as procs["analytics"]:
            yield procs


@pytest.mark.parametrize("mode", MODES)
async def test_support_reads_sends_with_a_yes_and_never_deletes(
    mode: str, sandbox: tuple[Proc, Path], teams: dict[str, Proc]
) -> None:
    record, url = sandbox[1], teams["support"].url
    async with Client(url, mode=mode) as client:
        listed = await names(client)
        read = await client.call_tool("get_contacts", {})
        unconfirmed = await client.call_tool("send_sms", {"to": "48600100200", "message": "hi", "test": True})
    assert {"get_sms", "get_contacts", "send_sms"} <= listed
    assert not listed & {
        "send_group_sms",
        "create_group",
        "add_contact_to_group",
        "delete_contact",
        "delete_group",
        "remove_contact_from_group",
    }
    assert not read.is_error
    assert unconfirmed.is_error and "It was not called" in text(unconfirmed)  # no way to ask a human

    sends = len(calls(record, "send_sms"))
    human = Human()
    async with Client(url, mode=mode, elicitation_callback=human) as client:
        sent = await client.call_tool("send_sms", {"to": "48600100200", "message": "Dzień dobry", "test": True})
        two = await client.call_tool("send_sms", {"to": "48600100200,48600100201", "message": "x", "test": True})
        deleted = await client.call_tool("delete_contact", {"id": "nope"})
        group = await client.call_tool("send_group_sms", {"group": "Wszyscy", "message": "x", "test": True})
    assert not sent.is_error and len(human.messages) == 1 and "Tool: send_sms" in human.messages[0]
    assert two.is_error and "at most 1 at once" in text(two)
    assert deleted.is_error and "denied by tools.deny 'delete_*'" in text(deleted)
    assert group.is_error and "denied by tools.deny 'send_group_sms'" in text(group)
    assert len(calls(record, "send_sms")) == sends + 1
    assert not calls(record, "delete_contact") and not calls(record, "send_group_sms")
    # The policy's own credential (from ${SMSAPI_TOKEN}) is what reached the upstream.
    policy_auth = hashlib.sha256(f"Bearer {FAKE_TOKEN}".encode()).hexdigest()
    assert [c["auth_sha256"] for c in calls(record, "send_sms")[sends:]] == [policy_auth]


@pytest.mark.parametrize("mode", MODES)
async def test_analytics_is_read_only(mode: str, sandbox: tuple[Proc, Path], teams: dict[str, Proc]) -> None:
    record = sandbox[1]
    writes = {
        "send_sms": {"to": "48600100200", "message": "x"},
        "create_contact": {"phone_number": "48600100299"},
        "create_short_url": {"url": "https://example.com"},
        "delete_short_url": {"id": "1"},
    }
    before = {tool: len(calls(record, tool)) for tool in writes}
    human = Human()
    async with Client(teams["analytics"].url, mode=mode, elicitation_callback=human) as client:
        listed = await names(client)
        read = await client.call_tool("get_short_url_clicks", {})
        refused = {tool: await client.call_tool(tool, args) for tool, args in writes.items()}
    assert listed and all(name.startswith("get_") for name in listed)
    assert {"get_sms", "get_contacts", "get_profile", "get_short_urls"} <= listed
    assert not read.is_error and not human.messages  # reads are never gated
    for tool, result in refused.items():
        assert result.is_error and "It was not called" in text(result), tool
        assert len(calls(record, tool)) == before[tool], tool


@pytest.mark.parametrize("mode", MODES)
async def test_marketing_sends_to_groups_within_limits_and_never_deletes(
    mode: str, sandbox: tuple[Proc, Path], tmp_path: Path
) -> None:
    """Over stdio, so each run has its own process and so its own rate window (2 group sends a minute)."""
    record = sandbox[1]
    policy = team_policy("marketing", tmp_path, url=sandbox[0].url)
    human = Human()
    before = len(calls(record, "send_group_sms"))
    params = proxy_stdio(policy, env={"SMSAPI_TOKEN": FAKE_TOKEN})
    async with Client(params, mode=mode, elicitation_callback=human) as client:
        listed = await names(client)
        sent = [
            await client.call_tool("send_group_sms", {"group": "Klienci VIP", "message": "Promocja!", "test": True})
            for _ in range(3)
        ]
        crowd = ",".join(f"48600{n:06d}" for n in range(101))
        too_many = await client.call_tool("send_sms", {"to": crowd, "message": "x", "test": True})
        deleted = await client.call_tool("delete_group", {"id": "5f3e2d1c0b0a090807060501"})
    assert {"send_group_sms", "send_sms", "create_short_url", "get_contacts"} <= listed
    assert not any(name.startswith(("delete_", "remove_", "clear_")) for name in listed)
    assert not sent[0].is_error and not sent[1].is_error
    assert len(human.messages) == 2 and "recipient count unknown" in human.messages[0]
    assert sent[2].is_error and "2 calls per minute" in text(sent[2]) and "Try again in" in text(sent[2])
    assert len(calls(record, "send_group_sms")) == before + 2
    assert too_many.is_error and "names 101 recipients" in text(too_many)
    assert deleted.is_error and "denied by tools.deny 'delete_*'" in text(deleted)
    assert not calls(record, "delete_group")


def test_team_policy_copies_change_only_the_upstream(tmp_path: Path) -> None:
    """The e2e tests exercise the shipped files: everything but the url/command is kept."""
    for name in ("support", "marketing", "analytics"):
        original = yaml.safe_load((TEAMS / f"{name}.yaml").read_text())
        copy = yaml.safe_load(team_policy(name, tmp_path, url="http://127.0.0.1:1/mcp").read_text())
        original["upstreams"]["smsapi"]["url"] = "http://127.0.0.1:1/mcp"
        assert copy == original
