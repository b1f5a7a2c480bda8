"""Issue 13 / SPEC §5-§7: untrusted output fails closed on every channel, against an upstream that lies.

`tests/servers/raw_hostile.py` speaks raw JSON-RPC, so it sends what no SDK server would: unknown
content blocks, bad base64, tool names with bidi controls, `_meta` everywhere, hostile error texts,
progress and log notifications. A real `mcp.Client` talks to `mcp-guard stdio` and `mcp-guard serve`
in both protocol eras; every string and key it receives, at any depth (JSON text inside strings
decoded), must hold E2, every envelope E1, and what reached the upstream is read from its own record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp.types as types
import pytest
from mcp.shared.exceptions import MCPError

from proxy.envelope import PREAMBLE
from tests.harness import PY, REPO, Proc, proxy_http, records, write_policy
from tests.test_untrusted_e2e import CLOSE, assert_e2, through, unwrap

pytestmark = pytest.mark.anyio

HOSTILE = [PY, str(REPO / "tests" / "servers" / "raw_hostile.py")]
COMBOS = [("stdio", "legacy"), ("stdio", "auto"), ("http", "legacy"), ("http", "auto")]
SECRET_BITS = ("attacker.example", "<script", "\u202e", "\x1b", "\U000e0041", "</tool_output>", "onerror")


def check_everything(value: Any, path: str = "$") -> None:
    """E1 for every envelope, E2 for every other string and every key, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert_e2(str(key))
            check_everything(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_everything(item, f"{path}[{i}]")
    elif isinstance(value, str):
        check_text(value, path)


def check_text(text: str, path: str) -> None:
    if PREAMBLE in text:
        head, _, wrapped = text.partition(PREAMBLE)
        if head:
            check_text(head, path)
        body = unwrap(PREAMBLE + wrapped.split(CLOSE, 1)[0] + CLOSE, _source_of(wrapped))
        rest = wrapped.split(CLOSE, 1)[1]
        assert not rest.strip(), (path, rest[:200])  # nothing after our own closing tag
        check_text(body, path)
        return
    stripped = text.strip()
    if stripped[:1] in ("{", "[", '"'):
        try:
            decoded = json.loads(stripped)
        except ValueError:
            decoded = None
        if decoded is not None and not isinstance(decoded, int | float | bool):
            check_everything(decoded, path)  # a renderer decodes JSON text: "\u003c" is "<" then
            return
    assert_e2(text)
    for bit in ("attacker.example/leak", "\u202e", "\x1b", "\U000e0041"):
        assert bit not in text, (path, ascii(text[:200]))


def _source_of(wrapped: str) -> str:
    opening = wrapped.split("\n", 2)[1]
    return opening.split('source="', 1)[1].split('"', 1)[0]


def dumped(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Proc, Path]]:
    where = tmp_path_factory.mktemp("hostile")
    record = where / "upstream.jsonl"
    policy = write_policy(
        where / "hostile.yaml",
        {"hostile": {"command": [*HOSTILE, "--record", str(record)]}},
        confirm={"destructive": False},
        trifecta={"action": "block"},
        audit={"path": str(where / "audit.jsonl")},
    )
    with proxy_http(policy) as proc:
        yield policy, proc, record


def upstream_calls(record: Path, tool: str) -> list[dict[str, Any]]:
    return [r for r in records(record) if r["method"] == "tools/call" and (r.get("params") or {}).get("name") == tool]


@pytest.mark.parametrize(("transport", "mode"), COMBOS)
async def test_every_string_of_every_channel_is_clean(
    transport: str, mode: str, hostile: tuple[Path, Proc, Path]
) -> None:
    policy, proc, _ = hostile
    progress: list[str | None] = []
    logs: list[Any] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(dumped(params))

    received: list[Any] = []
    async with through(transport, policy, proc, mode) as client:
        client.session._logging_callback = on_log  # the SDK Client takes it only at construction
        received.append(client.instructions)
        listed = await client.list_tools()
        received.append(dumped(listed))
        sms = await client.call_tool("get_sms", {})
        received.append(dumped(sms))
        blocks = await client.call_tool("get_blocks", {})
        received.append(dumped(blocks))
        failed = await client.call_tool("fail_tool", {})
        received.append(dumped(failed))
        done = await client.session.call_tool("progress_tool", {}, progress_callback=on_progress)
        received.append(dumped(done))
        received.append(dumped(await client.list_resources()))
        received.append(dumped(await client.list_resource_templates()))
        received.append(dumped(await client.read_resource("note://1")))
        received.append(dumped(await client.list_prompts()))
        received.append(dumped(await client.get_prompt("greet", {"who": "x"})))
        received.append(
            dumped(await client.complete(types.PromptReference(name="greet"), {"name": "who", "value": ""}))
        )
        errors = []
        for attempt in (client.read_resource("boom://x"), client.get_prompt("boom", {})):
            with pytest.raises(MCPError) as caught:
                await attempt
            errors.append(caught.value.error.message)
            assert caught.value.error.data is None  # the upstream's error data never passes
        received.append(errors)
    received += [progress, logs]
    check_everything(received)

    # 4: the tool whose name carries a bidi control is hidden; everything else listed has a plain name.
    names = {t.name for t in listed.tools}
    assert names == {"get_sms", "get_blocks", "fail_tool", "progress_tool", "send_sms"}
    get_sms = next(t for t in listed.tools if t.name == "get_sms")
    assert get_sms.annotations is not None and get_sms.annotations.read_only_hint is True
    assert get_sms.input_schema["properties"]["code"]["pattern"] == "^[0-9]{3}$"  # a plain pattern is kept
    assert "plain" in get_sms.input_schema["properties"]["kind"]["enum"]

    # 1: structuredContent is cleaned, consistent with the text the model sees, and fits the outputSchema.
    assert not sms.is_error and sms.structured_content is not None
    text_body = unwrap(sms.content[0].text, "hostile:get_sms")  # type: ignore[union-attr]
    assert json.loads(sms.structured_content["result"]) == json.loads(text_body)
    row = json.loads(text_body)["list"][0]
    assert row["id"] == "5576caf00cf2f41201a193ac"  # an ordinary value arrives byte-identical
    assert sms.meta is not None and "mcp_guard_upstream_failure" in sms.meta  # the upstream's own key, cleaned

    # 5: unknown and malformed blocks become placeholders naming their type; the link's words are enveloped.
    kinds = [b.type for b in blocks.content]
    assert kinds == ["text", "text", "resource_link", "text", "text", "resource", "text"]
    assert "weird_block" in blocks.content[0].text  # type: ignore[union-attr]
    link = blocks.content[2]
    assert isinstance(link, types.ResourceLink) and link.name == "resource"
    assert link.description is not None and link.description.startswith(PREAMBLE)
    # An image whose type is not a plain image type is no image a client may render.
    assert "removed a content block of type 'image'" in blocks.content[4].text  # type: ignore[union-attr]

    # 2: the upstream's error text is apart from ours, enveloped; ours names the upstream.
    assert failed.is_error and len(failed.content) == 2
    assert not any(key.startswith("mcp_guard") for key in failed.meta or {})  # 6: nothing internal on the wire
    assert failed.content[0].text.startswith("mcp-guard: upstream 'hostile'")  # type: ignore[union-attr]
    assert PREAMBLE not in failed.content[0].text  # type: ignore[union-attr]
    assert all(message.startswith("mcp-guard: upstream 'hostile'") for message in errors)

    # 3: progress arrived, cleaned.
    assert progress and all(m is not None and "obey" in m for m in progress)


@pytest.mark.parametrize(("transport", "mode"), COMBOS)
async def test_a_tool_with_a_hidden_character_in_its_name_is_refused_before_the_upstream(
    transport: str, mode: str, hostile: tuple[Path, Proc, Path]
) -> None:
    policy, proc, record = hostile
    async with through(transport, policy, proc, mode) as client:
        refused = await client.call_tool("get\u202esms", {})
        odd_prompt = client.get_prompt("get\u202esms", {})
        with pytest.raises(MCPError):
            await odd_prompt
    assert refused.is_error
    assert upstream_calls(record, "get\u202esms") == []
    assert not [r for r in records(record) if r["method"] == "prompts/get" and r["params"]["name"] == "get\u202esms"]


PROFILE = """
version: 1
name: hostile
tools:
  get_blocks: {legs: [sensitive], annotations: {readOnlyHint: true}}
  send_sms: {legs: [external], annotations: {readOnlyHint: false, destructiveHint: false}}
"""


def blocking_trifecta(tmp: Path, profile: str) -> tuple[Path, Path]:
    """The hostile upstream under `profile`, the trifecta blocking, no confirmation: (record, policy)."""
    record = tmp / "upstream.jsonl"
    (tmp / "hostile-profile.yaml").write_text(profile)
    policy = write_policy(
        tmp / "trifecta.yaml",
        {"hostile": {"command": [*HOSTILE, "--record", str(record)], "profile": "./hostile-profile.yaml"}},
        scopes=[],
        tools={"unlisted": "allow"},
        confirm={"destructive": False},
        trifecta={"action": "block"},
    )
    return record, policy


@pytest.mark.parametrize(("transport", "mode"), COMBOS)
async def test_resources_and_prompts_taint_the_session(transport: str, mode: str, tmp_path: Path) -> None:
    # 8: what resources/read and prompts/get return is untrusted: after a sensitive read, the external
    # call that would complete the trifecta is blocked, and the upstream never sees it. Without the
    # resource or prompt read the same two calls go through, so the read is what tainted the session.
    record, policy = blocking_trifecta(tmp_path, PROFILE)
    outcomes = {}
    for read in ("nothing", "resource", "prompt"):
        with proxy_http(policy) as http:
            async with through(transport, policy, http, mode) as client:
                if read == "resource":
                    await client.read_resource("note://1")
                elif read == "prompt":
                    await client.get_prompt("greet", {"who": "x"})
                await client.call_tool("get_blocks", {})
                before = len(upstream_calls(record, "send_sms"))
                result = await client.call_tool("send_sms", {})
                outcomes[read] = (result, len(upstream_calls(record, "send_sms")) - before)
    assert not outcomes["nothing"][0].is_error and outcomes["nothing"][1] == 1
    for read, culprit in (("resource", "hostile:note://1"), ("prompt", "hostile:greet")):
        blocked, reached = outcomes[read]
        assert blocked.is_error and reached == 0, read
        assert culprit in blocked.content[0].text  # type: ignore[union-attr]


ERROR_PROFILE = """
version: 1
name: hostile
tools:
  fail_tool: {legs: [], annotations: {readOnlyHint: true}}
  get_blocks: {legs: [sensitive], annotations: {readOnlyHint: true}}
  send_sms: {legs: [external], annotations: {readOnlyHint: false, destructiveHint: false}}
"""


@pytest.mark.parametrize(("transport", "mode"), COMBOS)
@pytest.mark.parametrize("failing", ["tool", "resource", "prompt"])
async def test_an_upstream_error_text_taints_the_session(
    failing: str, transport: str, mode: str, tmp_path: Path
) -> None:
    # 7: an upstream's error text reaches the model as its content would, so it counts as untrusted
    # content even from a tool whose own legs are none: after it and a sensitive read, the external
    # call that would complete the trifecta is blocked and the upstream never sees it.
    record, policy = blocking_trifecta(tmp_path, ERROR_PROFILE)
    with proxy_http(policy) as http:
        async with through(transport, policy, http, mode) as client:
            if failing == "tool":
                failed = await client.call_tool("fail_tool", {})
                assert failed.is_error
                check_everything(dumped(failed))
                culprit = "fail_tool"
            else:
                with pytest.raises(MCPError) as raised:
                    if failing == "resource":
                        await client.read_resource("boom://x")
                    else:
                        await client.get_prompt("boom", {})
                check_text(raised.value.error.message, "$.error")
                culprit = "hostile:boom" if failing == "prompt" else "hostile:boom://x"
            await client.call_tool("get_blocks", {})
            result = await client.call_tool("send_sms", {})
    assert result.is_error
    assert culprit in result.content[0].text  # type: ignore[union-attr]
    assert upstream_calls(record, "send_sms") == []
