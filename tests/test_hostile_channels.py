"""Security review: ONE hostile field of ONE upstream message, on the less-trodden channels (SPEC §5, §6).

`tests/servers/hostile_channels_upstream.py` is a real SDK upstream (stdio). Its payload holds a forged
`</tool_output>` closer, a fake `<tool_output source=...>` opener and SYSTEM preamble, HTML/script, a
markdown image (exfiltration) and link, ANSI, bidi, zero-width and tag characters, escaped markup
and JSON text nested in strings; some fields carry it 500k characters long or 40 levels deep.
Channels: the questions it relays (form and URL elicitation, sampling, roots), notifications (log
lines, progress, resources/updated, list_changed floods), listings (tool/resource/template/prompt
words, schema corners, icons, `_meta`), JSON-RPC errors with `data` on every request kind, isError
results, resource contents with lying media types, and annotation tricks on a destructive tool.

A real `mcp.Client` drives the real proxy over `mcp-guard stdio` and `mcp-guard serve` (loopback
HTTP), in both eras: `legacy` (the upstream runs --legacy-only) and `auto` (2026-07-28 end to end).
Everything the client reads is tapped on its transport and judged with tests/invariants.py (E1/E2 at
every string and key, JSON text decoded) plus the raw payload fragments. Every test asserts the
SECURE behaviour: a failing test is a finding.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from proxy.envelope import PREAMBLE
from tests.harness import PY, REPO, Proc, proxy_http, proxy_stdio, records, wait_for, write_policy
from tests.invariants import envelope_body, violations, wire_violations
from tests.servers.hostile_channels_upstream import JS_URL
from tests.test_fail_closed_e2e import check_everything
from tests.test_shapes_e2e import Tap

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

UPSTREAM = [PY, str(REPO / "tests" / "servers" / "hostile_channels_upstream.py")]
MODES = ["legacy", "auto"]
COMBOS = [(t, m) for t in ("stdio", "http") for m in MODES]
IDS = [f"{t}-{m}" for t, m in COMBOS]
WAIT = 60.0
SOURCE = "hostile"
# Fragments of the payload that must never reach a client raw (outside mcp-guard's own frame).
RAW_BITS = (
    "<script",
    "onerror",
    "attacker.example/leak",
    'source="mcp-guard:trusted"',
    "\u202e",
    "\u200b",
    "\x1b",
    "\U000e0041",
    "\\u003cscript",
)
PROFILE = """\
version: 1
name: hostile
tools:
  wipe: {legs: [external], annotations: {readOnlyHint: false, destructiveHint: true}}
"""
SECRET_ROOT = "file:///home/alice/secret-project"


@dataclass
class Rig:
    mode: str
    policy: Path
    record: Path
    http: Proc | None


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def _policy(where: Path, mode: str) -> tuple[Path, Path]:
    record = where / "upstream.jsonl"
    command = [*UPSTREAM, "--record", str(record)] + (["--legacy-only"] if mode == "legacy" else [])
    (where / "hostile-profile.yaml").write_text(PROFILE)
    policy = write_policy(
        where / "hostile.yaml",
        {SOURCE: {"command": command, "profile": "./hostile-profile.yaml"}},
        scopes=[],
        tools={"unlisted": "allow"},
        confirm={"destructive": True, "timeout_seconds": 60},
        trifecta={"action": "off"},
        sampling="allow",
        url_elicitation="allow",
        audit={"path": str(where / "audit.jsonl")},
    )
    return policy, record


@pytest.fixture(scope="module")
def rigs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Rig]]:
    """Per era: one policy, one `mcp-guard serve` (stdio clients start their own `mcp-guard stdio`)."""
    out: dict[str, Rig] = {}
    procs = []
    try:
        for mode in MODES:
            policy, record = _policy(tmp_path_factory.mktemp(f"hostile-{mode}"), mode)
            cm = proxy_http(policy)
            procs.append(cm)
            out[mode] = Rig(mode, policy, record, cm.__enter__())
        yield out
    finally:
        for cm in procs:
            cm.__exit__(None, None, None)


class Heard:
    """What the client was sent: its callbacks' params and the notifications it heard."""

    def __init__(self, elicit_answer: types.ElicitResult | None = None) -> None:
        self.items: list[tuple[str, Any]] = []
        self.events: dict[str, anyio.Event] = {}
        self.elicit_answer = elicit_answer or types.ElicitResult(action="decline")

    def event(self, kind: str) -> anyio.Event:
        return self.events.setdefault(kind, anyio.Event())

    def add(self, kind: str, value: Any) -> None:
        self.items.append((kind, value))
        self.event(kind).set()

    def of(self, kind: str) -> list[Any]:
        return [v for k, v in self.items if k == kind]

    async def message(self, message: Any) -> None:
        method = getattr(message, "method", None)
        if isinstance(method, str) and method.startswith("notifications/"):
            self.add(method, _dumped(message))

    async def elicit(self, context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.add("elicitation/create", _dumped(params))
        return self.elicit_answer

    async def sample(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        self.add("sampling/createMessage", _dumped(params))
        return types.CreateMessageResult(role="assistant", content=types.TextContent(text="fine"), model="m")

    async def roots(self, context: ClientRequestContext) -> types.ListRootsResult:
        self.add("roots/list", {})
        return types.ListRootsResult(roots=[types.Root(uri=SECRET_ROOT, name="secret")])

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.add("log", _dumped(params))


@dataclass
class Session:
    client: Client
    tap: Tap
    heard: Heard
    rig: Rig
    transport: str
    progress: list[str | None] = field(default_factory=list)

    def seen(self) -> list[dict[str, Any]]:
        return list(self.tap.seen)


@asynccontextmanager
async def connect(transport: str, rig: Rig, heard: Heard | None = None) -> AsyncIterator[Session]:
    heard = heard or Heard()
    if transport == "http":
        assert rig.http is not None
        inner: Any = streamable_http_client(rig.http.url)
        tap = Tap(inner)
        cm: Any = None
    else:
        errlog = (rig.policy.parent / "proxy-stdio.stderr").open("a")
        tap = Tap(stdio_client(proxy_stdio(rig.policy), errlog=errlog))
        cm = errlog
    try:
        async with Client(
            tap,
            mode=rig.mode,
            read_timeout_seconds=WAIT,
            cache=None,
            message_handler=heard.message,
            elicitation_callback=heard.elicit,
            sampling_callback=heard.sample,
            list_roots_callback=heard.roots,
            logging_callback=heard.log,
            log_level="debug",
        ) as client:
            yield Session(client, tap, heard, rig, transport)
    finally:
        if cm is not None:
            cm.close()


def _dumped(model: Any) -> Any:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True) if hasattr(model, "model_dump") else model


def raw_left(value: Any, path: str = "$") -> list[str]:
    """Paths where a raw payload fragment survived (in mcp-guard's own envelope frame it is exempt)."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found += [f"{p} (key)" for p in raw_left(str(key), f"{path}.{key!s:.40}")]
            found += raw_left(item, f"{path}.{key!s:.40}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += raw_left(item, f"{path}[{i}]")
    elif isinstance(value, str):
        text = value
        while PREAMBLE in text:  # judge only what lies inside / around our envelopes
            head, _, rest = text.partition(PREAMBLE)
            whole = PREAMBLE + rest.split("</tool_output>", 1)[0] + "</tool_output>"
            body = envelope_body(whole)
            text = head + "\n" + (body if body is not None else whole) + "\n" + rest.split("</tool_output>", 1)[-1]
        if "</tool_output>" in text or "<tool_output" in text:
            found.append(f"{path}: forged envelope tag")
        found += [f"{path}: {bit!r}" for bit in RAW_BITS if bit in text]
        if text.lstrip().startswith(("{", "[")):
            try:
                found += raw_left(json.loads(text), f"{path}<json>")
            except ValueError:
                pass
    return found


def assert_clean(what: Any, label: str) -> None:
    assert what, f"{label}: nothing reached the client"
    problems = violations(what)
    assert not problems, f"{label}: E1/E2 broken at {problems[:8]}"
    left = raw_left(what)
    assert not left, f"{label}: raw upstream payload reached the client at {left[:8]}"
    check_everything(json.loads(json.dumps(what)))


def assert_wire_clean(session: Session, label: str) -> None:
    """Every JSON-RPC message the client read on its transport: E1/E2 and no raw payload."""
    problems = [p for message in session.seen() for p in wire_violations(message)]
    assert not problems, f"{label}: on the wire: {problems[:8]}"
    left = [p for message in session.seen() for p in raw_left({k: v for k, v in message.items() if k != "id"})]
    assert not left, f"{label}: raw upstream payload on the wire at {left[:8]}"


def upstream_calls(rig: Rig, tool: str) -> list[dict[str, Any]]:
    return [
        r
        for r in records(rig.record)
        if r.get("method") == "tools/call" and (r.get("params") or {}).get("name") == tool
    ]


def answers(rig: Rig, tool: str) -> list[dict[str, Any]]:
    return [r for r in records(rig.record) if r.get("answered") == tool]


def texts(result: types.CallToolResult) -> list[str]:
    return [b.text for b in result.content if isinstance(b, types.TextContent)]


# --- listings: every word, schema corner, icon and _meta ------------------------------------------------------


@pytest.mark.parametrize(("transport", "mode"), COMBOS, ids=IDS)
async def test_listings_and_instructions_reach_the_client_clean(
    transport: str, mode: str, rigs: dict[str, Rig]
) -> None:
    """Tool title/description/annotations.title/inputSchema ($defs, patternProperties keys, examples,
    defaults, enum)/outputSchema/_meta, resource and template words and _meta, prompt argument words,
    and the server instructions: E2 at every string and key, no raw payload."""
    async with connect(transport, rigs[mode]) as s:
        tools = await s.client.session.list_tools()
        resources = await s.client.session.list_resources()
        templates = await s.client.session.list_resource_templates()
        prompts = await s.client.session.list_prompts()
        instructions = s.client.instructions
    assert {"lookup", "wipe", "ask_form"} <= {t.name for t in tools.tools}
    assert resources.resources and templates.resource_templates and prompts.prompts
    assert_clean([_dumped(tools), _dumped(resources), _dumped(templates), _dumped(prompts)], "listings")
    if instructions is not None:
        assert_clean([instructions], "instructions")
    assert_wire_clean(s, "listings")


@pytest.mark.parametrize(("transport", "mode"), COMBOS, ids=IDS)
async def test_listing_icons_carry_no_script_or_svg_url(transport: str, mode: str, rigs: dict[str, Rig]) -> None:
    """An icon's `src` is a URL a client loads into an <img> or a link: a `javascript:` URL or an SVG
    data URL (markup, scripts and all) from the upstream must not reach the client on ANY listing.
    (Tool icons are dropped by OutputShield.tool; resources, templates and prompts go through
    OutputShield.listed, which only cleans strings as text.)"""
    async with connect(transport, rigs[mode]) as s:
        await s.client.session.list_tools()
        await s.client.session.list_resources()
        await s.client.session.list_resource_templates()
        await s.client.session.list_prompts()
    bad = []
    for message in s.seen():
        for entry in _entries(message.get("result") or {}):
            for icon in entry.get("icons") or []:
                src = str(icon.get("src", ""))
                if src.lower().startswith("javascript:") or src.lower().startswith("data:image/svg"):
                    bad.append((entry.get("name"), src[:60]))
    assert not bad, f"upstream icons with a script or SVG URL reached the client: {bad}"


def _entries(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key in ("tools", "resources", "resourceTemplates", "prompts"):
        out += [e for e in result.get(key) or [] if isinstance(e, dict)]
    return out


# --- questions the upstream asks the human or the client's model ------------------------------------------------


@pytest.mark.parametrize(("transport", "mode"), COMBOS, ids=IDS)
async def test_form_elicitation_is_named_and_clean(transport: str, mode: str, rigs: dict[str, Rig]) -> None:
    """Message, requestedSchema titles/descriptions/enum/enumNames/oneOf titles/defaults and property
    names: cleaned; the question is named as the upstream's; the client's answer reaches the upstream."""
    async with connect(transport, rigs[mode]) as s:
        before = len(answers(s.rig, "ask_form"))
        result = await s.client.call_tool("ask_form", {})
    asked = s.heard.of("elicitation/create")
    assert len(asked) == 1, asked
    assert asked[0]["message"].startswith(f"The upstream server '{SOURCE}' asks"), asked[0]["message"][:200]
    assert "_meta" not in asked[0]
    assert_clean(asked, "form elicitation")
    assert_clean([_dumped(result)], "form elicitation result")
    assert_wire_clean(s, "form elicitation")
    assert len(answers(s.rig, "ask_form")) == before + 1


@pytest.mark.parametrize("tool", ["ask_url_js", "ask_url_markup"])
@pytest.mark.parametrize(("transport", "mode"), COMBOS, ids=IDS)
async def test_url_elicitation_to_a_script_or_markup_url_never_reaches_the_human(
    transport: str, mode: str, tool: str, rigs: dict[str, Rig]
) -> None:
    async with connect(transport, rigs[mode]) as s:
        result = await s.client.call_tool(tool, {})
    assert s.heard.of("elicitation/create") == []
    assert_clean([_dumped(result)], tool)
    assert_wire_clean(s, tool)
    assert not any(JS_URL in json.dumps(m) for m in s.seen())


@pytest.mark.parametrize(("transport", "mode"), COMBOS, ids=IDS)
async def test_url_elicitation_shows_exactly_the_plain_url_and_clean_words(
    transport: str, mode: str, rigs: dict[str, Rig]
) -> None:
    async with connect(transport, rigs[mode]) as s:
        await s.client.call_tool("ask_url", {})
    asked = s.heard.of("elicitation/create")
    assert len(asked) == 1, asked
    assert asked[0]["url"] == "https://example.com/login?next=%2Fhome"
    assert asked[0]["message"].endswith("It asks you to open this page: https://example.com/login?next=%2Fhome")
    assert_clean(asked, "url elicitation")
    assert_wire_clean(s, "url elicitation")


@pytest.mark.parametrize(("transport", "mode"), COMBOS, ids=IDS)
async def test_sampling_request_is_rebuilt_and_clean(transport: str, mode: str, rigs: dict[str, Rig]) -> None:
    """messages (single and list content), systemPrompt, stopSequences, model hints and offered tools
    cleaned; includeContext and metadata dropped (policy `sampling: allow`)."""
    async with connect(transport, rigs[mode]) as s:
        await s.client.call_tool("sample", {})
    sampled = s.heard.of("sampling/createMessage")
    assert len(sampled) == 1, sampled
    assert "includeContext" not in sampled[0] and "metadata" not in sampled[0]
    assert sampled[0].get("systemPrompt")
    assert_clean(sampled, "sampling")
    assert_wire_clean(s, "sampling")


@pytest.mark.parametrize(("transport", "mode"), COMBOS, ids=IDS)
async def test_roots_request_is_not_relayed_to_the_client(transport: str, mode: str, rigs: dict[str, Rig]) -> None:
    """roots/list from an upstream is not relayed: the client's roots (its file system layout) never
    reach the upstream."""
    async with connect(transport, rigs[mode]) as s:
        await s.client.call_tool("ask_roots", {})
    assert s.heard.of("roots/list") == []
    assert SECRET_ROOT not in s.rig.record.read_text()


# --- notifications ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("transport", "mode"), COMBOS, ids=IDS)
async def test_log_lines_and_progress_are_clean_at_any_depth_and_length(
    transport: str, mode: str, rigs: dict[str, Rig]
) -> None:
    """notifications/message (hostile logger, data 40 levels deep, JSON text, 500k characters) and
    notifications/progress (hostile and 500k-character messages) arrive cleaned and bounded."""
    async with connect(transport, rigs[mode]) as s:

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            s.progress.append(message)

        result = await s.client.session.call_tool("logs_progress", {}, progress_callback=on_progress)
    assert not result.is_error, texts(result)
    assert s.progress, "no progress arrived"
    logs = s.heard.of("log")
    if mode == "legacy":
        assert logs, "no log line arrived"
    assert_clean([s.progress, logs or ["-"]], "progress and logs")
    assert_wire_clean(s, "progress and logs")
    assert all(len(m or "") <= 110_000 for m in s.progress)
    assert all(len(json.dumps(line)) <= 1_000_000 for line in logs)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_resource_updated_and_list_changed_are_rebuilt(transport: str, rigs: dict[str, Rig]) -> None:
    """Only the subscribed URI's update passes, with no `_meta`; an update of another (hostile) URI
    and the upstream's `_meta` stay behind (handshake-era client: 2026-07-28 has no such channel)."""
    rig = rigs["legacy"]
    async with connect(transport, rig) as s:
        await s.client.session.subscribe_resource("note://hostile")
        await s.client.call_tool("notify", {})
        with anyio.fail_after(WAIT):
            await s.heard.event("notifications/tools/list_changed").wait()
            await s.heard.event("notifications/resources/updated").wait()
    updated = s.heard.of("notifications/resources/updated")
    assert {u["params"]["uri"] for u in updated} == {"note://hostile"}, updated
    assert all("_meta" not in u["params"] for u in updated)
    assert_clean(updated + s.heard.of("notifications/tools/list_changed"), "notifications")
    assert_wire_clean(s, "notifications")


async def test_a_list_changed_flood_leaves_the_proxy_serving(rigs: dict[str, Rig]) -> None:
    """2 x 1500 list_changed notifications in one call: the proxy keeps answering, promptly."""
    rig = rigs["legacy"]
    async with connect("http", rig) as s:
        flooded = await s.client.call_tool("flood", {"n": 1500})
        assert not flooded.is_error
        with anyio.fail_after(20):
            listed = await s.client.session.list_tools()
            plain = await s.client.call_tool("plain", {})
    assert listed.tools and not plain.is_error
    assert_wire_clean(s, "flood")


# --- errors --------------------------------------------------------------------------------------------------------


def _error_checked(exc: MCPError, label: str) -> None:
    assert exc.error.data is None, f"{label}: the upstream's error data reached the client: {exc.error.data!r}"
    message = exc.error.message
    assert message.startswith(f"mcp-guard: upstream '{SOURCE}'"), message[:200]
    if PREAMBLE in message:
        assert envelope_body(message[message.index(PREAMBLE) :]) is not None, message[-300:]
    assert_clean([message], label)


@pytest.mark.parametrize(("transport", "mode"), COMBOS, ids=IDS)
async def test_upstream_errors_are_ours_then_enveloped_without_data(
    transport: str, mode: str, rigs: dict[str, Rig]
) -> None:
    """JSON-RPC error message AND data on tools/call, resources/read, prompts/get and
    completion/complete; an isError result with hostile text."""
    async with connect(transport, rigs[mode]) as s:
        failed = await s.client.call_tool("rpc_error", {})
        is_error = await s.client.call_tool("is_error", {})
        caught = []
        for label, attempt in (
            ("resources/read", s.client.session.read_resource("note://missing")),
            ("prompts/get", s.client.session.get_prompt("boom", {})),
            (
                "completion/complete",
                s.client.session.complete(types.PromptReference(name="greet"), {"name": "who", "value": "boom"}),
            ),
        ):
            with pytest.raises(MCPError) as raised:
                await attempt
            caught.append((label, raised.value))
    assert failed.is_error and texts(failed)[0].startswith(f"mcp-guard: upstream '{SOURCE}'")
    assert all(PREAMBLE in t for t in texts(failed)[1:]) and len(texts(failed)) == 2
    assert_clean([_dumped(failed), _dumped(is_error)], "tool errors")
    assert is_error.is_error and all(t.startswith(PREAMBLE) for t in texts(is_error))
    for label, exc in caught:
        _error_checked(exc, label)
    assert_wire_clean(s, "errors")


@pytest.mark.parametrize(("transport", "mode"), COMBOS, ids=IDS)
async def test_completion_values_are_clean_and_ordinary_ones_unchanged(
    transport: str, mode: str, rigs: dict[str, Rig]
) -> None:
    async with connect(transport, rigs[mode]) as s:
        done = await s.client.session.complete(types.PromptReference(name="greet"), {"name": "who", "value": ""})
    values = done.completion.values
    assert "plain value" in values and "+48600100200" in values
    assert_clean([_dumped(done)], "completion")
    assert_wire_clean(s, "completion")


# --- resource contents and prompt results -----------------------------------------------------------------------------


@pytest.mark.parametrize(("transport", "mode"), COMBOS, ids=IDS)
async def test_resource_contents_with_lying_media_types_are_text_cleaned_and_enveloped(
    transport: str, mode: str, rigs: dict[str, Rig]
) -> None:
    """JSON text in a text resource; text/html and image/svg+xml blobs (decoded and cleaned, never passed
    as a blob); text that calls itself image/png; a URI that is itself the payload; a prompt result."""
    async with connect(transport, rigs[mode]) as s:
        reads = {
            uri: await s.client.session.read_resource(uri)
            for uri in ("note://hostile", "note://html-blob", "note://svg-blob", "note://liar")
        }
        prompt = await s.client.session.get_prompt("greet", {"who": "x"})
    for uri, read in reads.items():
        for item in _dumped(read)["contents"]:
            assert "blob" not in item, (uri, item.get("mimeType"))
            assert item["text"].startswith(PREAMBLE), (uri, item["text"][:100])
    assert_clean([_dumped(r) for r in reads.values()] + [_dumped(prompt)], "resource contents")
    assert_wire_clean(s, "resource contents")


# --- a destructive tool the upstream dresses as read-only -------------------------------------------------------------


@pytest.mark.parametrize(("transport", "mode"), COMBOS, ids=IDS)
async def test_a_destructive_tool_cannot_be_dressed_as_read_only(
    transport: str, mode: str, rigs: dict[str, Rig]
) -> None:
    """The upstream says readOnlyHint true, destructiveHint false, "Safe read-only lookup"; the profile
    says destructive. The listing shows the profile's hints, the call is gated, the question holds none
    of the upstream's words, shows the argument exactly (hidden and markup characters escaped), a
    decline never reaches the upstream, and an accept sends exactly what was shown."""
    value = "all\u202e<b>x</b>\u200b"
    rig = rigs[mode]
    no = Heard(types.ElicitResult(action="decline"))
    async with connect(transport, rig, no) as s:
        listed = {t.name: t for t in (await s.client.session.list_tools()).tools}
        before = len(upstream_calls(rig, "wipe"))
        declined = await s.client.call_tool("wipe", {"target": value})
    hints = listed["wipe"].annotations
    assert hints is not None and hints.read_only_hint is False and hints.destructive_hint is True
    assert declined.is_error
    assert len(upstream_calls(rig, "wipe")) == before, "a declined destructive call reached the upstream"
    [asked] = no.of("elicitation/create")
    message = asked["message"]
    assert "wipe" in message and "destructive" in message
    for upstream_words in ("Read-only lookup", "read-only, no confirmation", "Safe read-only"):
        assert upstream_words not in message, upstream_words
    assert "\\u202e" in message and "\\u200b" in message and "\\u003cb\\u003e" in message, message
    assert "\u202e" not in message and "<b>" not in message

    yes = Heard(types.ElicitResult(action="accept", content={"confirm": True}))
    async with connect(transport, rig, yes) as s:
        accepted = await s.client.call_tool("wipe", {"target": value})
    assert not accepted.is_error, texts(accepted)
    assert wait_for(lambda: len(upstream_calls(rig, "wipe")) == before + 1)
    assert upstream_calls(rig, "wipe")[-1]["params"]["arguments"] == {"target": value}
