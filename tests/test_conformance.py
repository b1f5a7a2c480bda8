"""Issue 14: mcp-guard is transparent to every MCP feature, measured by the official conformance suite.

`@modelcontextprotocol/conformance` (pinned in tests/npm, installed by .ci/run) runs its server
scenarios against a URL as a real TypeScript-SDK client. Its own reference server is not on the npm
registry, so tests/servers/conformance_fixture.py serves what the scenarios call. The suite runs:

- directly against the fixture: every scenario must pass (the fixture is a faithful stand-in);
- through `mcp-guard serve` in front of the fixture on the handshake era (`--legacy`, the era the
  TypeScript reference server speaks, with its habit of asking the client on the session's
  standalone stream) and on 2026-07-28 (the era mcp-guard's upstream connection negotiates with a
  current Python SDK server): every scenario that passes directly must pass through mcp-guard —
  no check fails (the suite's verdict), and no check that succeeds directly goes missing (one that
  comes back a warning is a SHOULD of mcp-guard's own transport, which the suite does not fail).
  Where a scenario depends on something reaching the upstream (the call, the human's answer, the
  model's answer, the subscription), the fixture's record must show it arrived — the client's view
  alone could be mcp-guard answering for it.

The policy gates nothing (no profile, read-only tools, `confirm.destructive: false`, trifecta off)
and allows sampling, so any difference is mcp-guard's forwarding, not its guarding.

Then `@modelcontextprotocol/server-everything` (pinned) runs as a stdio upstream behind mcp-guard,
driven by `mcp.Client` in both eras: listing, calls, structured content, progress, logging,
subscriptions and its elicitation relayed and answered (accept and decline), each asserted from the
client's side and, through what the upstream echoes back, from the upstream's side.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import mcp.types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.shared.subscriptions import ResourceUpdated

from tests.harness import MODES, PY, REPO, Proc, all_tools, proxy_http, records, spawn, write_policy
from tests.servers.conformance_fixture import JSON_SCHEMA_2020_12

pytestmark = [
    pytest.mark.anyio,
    # logging/setLevel and resources/subscribe are deprecated in 2026-07-28; the handshake era tested
    # here still has them, and exercising them is the point.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

NPM = REPO / "tests" / "npm"
CONFORMANCE = "@modelcontextprotocol/conformance"
EVERYTHING = "@modelcontextprotocol/server-everything"
FIXTURE = [PY, str(REPO / "tests" / "servers" / "conformance_fixture.py")]

# `conformance list --server` of the pinned 0.1.16, in the order the suite runs them ("all" suite:
# the 30 active scenarios plus the pending json-schema-2020-12 and server-sse-polling).
# test_the_pinned_suite_has_exactly_these_server_scenarios keeps this list honest on a version bump.
SCENARIOS = [
    "server-initialize",
    "logging-set-level",
    "ping",
    "completion-complete",
    "tools-list",
    "tools-call-simple-text",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-with-logging",
    "tools-call-error",
    "tools-call-with-progress",
    "tools-call-sampling",
    "tools-call-elicitation",
    "json-schema-2020-12",
    "elicitation-sep1034-defaults",
    "server-sse-polling",
    "server-sse-multiple-streams",
    "elicitation-sep1330-enums",
    "resources-list",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "resources-subscribe",
    "resources-unsubscribe",
    "prompts-list",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
    "dns-rebinding-protection",
]
# The whole suite takes a few seconds. A scenario whose request is never answered would wait for the
# TypeScript SDK's 60 s request timeout, so a run is bounded, the stuck scenario named, and the
# rest run one by one within a budget — all well inside the 120 s pytest-timeout of the test that
# first needs the run (which may also start the direct run).
SUITE_TIMEOUT = 45.0
SCENARIO_TIMEOUT = 10.0
RERUN_BUDGET = 40.0

# conformance 0.1.16 imports `globSync` from node:fs, which Node.js has from 22 on; only its
# tier-check command calls it. On Node.js 20 the import fails at link time, before any scenario
# runs, so the suite starts with a resolve hook that hands the package an `fs` re-exporting
# everything plus a `globSync` (the real one where Node has it, else a stub that throws). Written as
# data: URLs so no file has to be generated.
_FS_SHIM = (
    'import fs from "node:fs"; export * from "node:fs"; export default fs;'
    'export const globSync = fs.globSync ?? (() => { throw new Error("fs.globSync needs Node.js 22"); });'
)


def _data_url(source: str) -> str:
    return "data:text/javascript," + urllib.parse.quote(source)


def _fs_shim_hooks() -> str:
    shim = json.dumps(_data_url(_FS_SHIM))
    return (
        f"const SHIM = {shim};"
        "export async function resolve(specifier, context, next) {"
        '  if ((specifier === "fs" || specifier === "node:fs")'
        '      && context.parentURL?.includes("/@modelcontextprotocol/conformance/")) {'
        "    return { url: SHIM, shortCircuit: true };"
        "  }"
        "  return next(specifier, context);"
        "}"
    )


NODE_FS_SHIM = _data_url(
    f'import {{ register }} from "node:module"; register({json.dumps(_data_url(_fs_shim_hooks()))});'
)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the conformance tests need Node.js (the machine image has it)")
    return node


def _bin(package: str, command: str) -> Path:
    """The installed, pinned package's entry point; a clear failure (never a skip) when .ci/run did not install it."""
    manifest = NPM / "node_modules" / package / "package.json"
    if not manifest.is_file():
        pytest.fail(
            f"{package} is not installed under tests/npm/node_modules. Install the pinned packages with\n"
            "    npm ci --prefix tests/npm --no-audit --no-fund --ignore-scripts\n"
            "(.ci/run does this before running the tests)."
        )
    meta = json.loads(manifest.read_text())
    pinned = json.loads((NPM / "package.json").read_text())["dependencies"][package]
    assert meta["version"] == pinned, (
        f"tests/npm/node_modules holds {package} {meta['version']}, pinned {pinned}: rerun npm ci"
    )
    bins = meta["bin"] if isinstance(meta["bin"], dict) else {command: meta["bin"]}
    return manifest.parent / bins[command]


def _conformance(*args: str) -> list[str]:
    return [_node(), "--import", NODE_FS_SHIM, str(_bin(CONFORMANCE, "conformance")), *args]


# --------------------------------------------------------------------------- running the suite


@dataclass
class Outcome:
    """One scenario's checks as the suite wrote them (checks.json), or why there are none."""

    scenario: str
    checks: list[dict[str, Any]]
    note: str = ""

    def ids(self, status: str) -> set[str]:
        return {c["id"] for c in self.checks if c.get("status") == status}

    @property
    def passed(self) -> bool:
        """The suite's own verdict: a scenario passes when none of its checks failed."""
        return bool(self.checks) and not self.ids("FAILURE")

    def describe(self, only: set[str] | None = None) -> str:
        """The failing and warning checks (or those in `only`), with the suite's error and details."""
        if not self.checks:
            return f"{self.scenario}: no result ({self.note})"
        lines = [f"{self.scenario}:"]
        for check in self.checks:
            wanted = check["id"] in only if only is not None else check.get("status") in ("FAILURE", "WARNING")
            if wanted:
                details = json.dumps(check.get("details", {}))
                lines.append(
                    f"  {check['id']} {check.get('status')}: {check.get('errorMessage') or check.get('description')}"
                    f"\n    details: {details[:1200]}"
                )
        return "\n".join(lines)


@dataclass
class SuiteRun:
    """The whole server suite against one URL, plus what the upstream recorded meanwhile."""

    label: str
    outcomes: dict[str, Outcome]
    seconds: float
    upstream: list[dict[str, Any]]
    handshake_upstream: bool


_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


def _collect(out: Path) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for checks in sorted(out.glob("server-*/checks.json")):  # sorted: a rerun's later timestamp wins
        if m := _RESULT_DIR.match(checks.parent.name):
            found[m.group("scenario")] = json.loads(checks.read_text())
    return found


def _run(args: list[str], out: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _conformance(*args), capture_output=True, text=True, timeout=timeout, cwd=out, stdin=subprocess.DEVNULL
    )


def run_suite(label: str, url: str, out: Path, record: Path, *, handshake_upstream: bool) -> SuiteRun:
    """Run every server scenario against `url`; a scenario the run never finished is named, not lost."""
    seen = len(records(record))
    start = time.monotonic()
    notes: dict[str, str] = {}
    exited, hung = "", False
    try:
        done = _run(["server", "--url", url, "--suite", "all", "-o", str(out)], out, SUITE_TIMEOUT)
        exited = f"the suite exited {done.returncode} without a result for it: {(done.stdout + done.stderr)[-1500:]}"
    except subprocess.TimeoutExpired:
        hung = True
    found = _collect(out)
    missing = [s for s in SCENARIOS if s not in found]
    if missing and hung:
        # Scenarios run in order: the first without a result is the one that hung. The rest get a
        # run of their own each, so one stuck scenario does not hide the others' results.
        stuck, *rest = missing
        notes[stuck] = f"the suite run hung in this scenario and was stopped after {SUITE_TIMEOUT:.0f} s"
        deadline = time.monotonic() + RERUN_BUDGET
        for scenario in rest:
            if time.monotonic() > deadline:
                notes[scenario] = f"not run: the {RERUN_BUDGET:.0f} s for rerunning scenarios after a hang ran out"
                continue
            try:
                _run(["server", "--url", url, "--scenario", scenario, "-o", str(out)], out, SCENARIO_TIMEOUT)
            except subprocess.TimeoutExpired:
                notes[scenario] = f"its own run hung too and was stopped after {SCENARIO_TIMEOUT:.0f} s"
        found = _collect(out)
        found.pop(stuck, None)
    else:
        notes = {s: exited for s in missing}
    outcomes = {s: Outcome(s, found.get(s, []), notes.get(s, "no checks.json written")) for s in SCENARIOS}
    return SuiteRun(label, outcomes, time.monotonic() - start, records(record)[seen:], handshake_upstream)


# What must have reached the upstream for a scenario's client-side success to mean a relay: a
# record line containing all of these fields. The answers are the ones the suite's client gives.
_CALLS = {
    "tools-call-simple-text": "test_simple_text",
    "tools-call-image": "test_image_content",
    "tools-call-audio": "test_audio_content",
    "tools-call-embedded-resource": "test_embedded_resource",
    "tools-call-mixed-content": "test_multiple_content_types",
    "tools-call-with-logging": "test_tool_with_logging",
    "tools-call-error": "test_error_handling",
    "tools-call-with-progress": "test_tool_with_progress",
    "tools-call-sampling": "test_sampling",
    "tools-call-elicitation": "test_elicitation",
    "elicitation-sep1034-defaults": "test_elicitation_sep1034_defaults",
    "elicitation-sep1330-enums": "test_elicitation_sep1330_enums",
    "server-sse-polling": "test_reconnection",
}
_ANSWERS: dict[str, dict[str, Any]] = {
    "tools-call-sampling": {
        "method": "sampling/answer",
        "tool": "test_sampling",
        "text": "This is a test response from the client",
    },
    "tools-call-elicitation": {
        "method": "elicitation/answer",
        "tool": "test_elicitation",
        "action": "accept",
        "content": {"username": "testuser", "email": "test@example.com"},
    },
    "elicitation-sep1034-defaults": {
        "method": "elicitation/answer",
        "tool": "test_elicitation_sep1034_defaults",
        "action": "accept",
        "content": {"name": "Jane Smith", "age": 25, "score": 88, "status": "inactive", "verified": False},
    },
    "elicitation-sep1330-enums": {
        "method": "elicitation/answer",
        "tool": "test_elicitation_sep1330_enums",
        "action": "accept",
        "content": {
            "untitledSingle": "option1",
            "titledSingle": "value1",
            "legacyEnum": "opt1",
            "untitledMulti": ["option1", "option2"],
            "titledMulti": ["value1", "value2"],
        },
    },
}
WATCHED = "test://watched-resource"


def upstream_evidence(scenario: str, run: SuiteRun) -> list[str]:
    """What the upstream should have received for `scenario` during `run` and did not."""
    wanted: list[dict[str, Any]] = []
    if scenario in _CALLS:
        wanted.append({"method": "tools/call", "tool": _CALLS[scenario]})
    if scenario in _ANSWERS:
        wanted.append(_ANSWERS[scenario])
    if scenario == "tools-call-sampling":
        wanted.append({"method": "tools/call", "arguments": {"prompt": "Test prompt for sampling"}})
    if scenario == "tools-call-elicitation":
        wanted.append({"method": "tools/call", "arguments": {"message": "Please provide your information"}})
    missing = [f"{w}" for w in wanted if not any(all(r.get(k) == v for k, v in w.items()) for r in run.upstream)]
    if scenario == "resources-subscribe":
        # The first subscription to the resource in the run must reach the upstream: as
        # resources/subscribe on the handshake era, as a listen filter naming it on 2026-07-28.
        if run.handshake_upstream:
            ok = any(r.get("method") == "resources/subscribe" and r.get("uri") == WATCHED for r in run.upstream)
        else:
            ok = any(r.get("method") == "subscriptions/listen" and WATCHED in r.get("uris", []) for r in run.upstream)
        if not ok:
            missing.append(f"a subscription to {WATCHED}")
    return missing


# --------------------------------------------------------------------------- the runs


def _policy(tmp: pytest.TempPathFactory, name: str, upstream: dict[str, Any]) -> Path:
    return write_policy(
        tmp.mktemp(name) / "policy.yaml",
        {name: upstream},
        confirm={"destructive": False},
        trifecta={"action": "off"},
        sampling="allow",
    )


@dataclass
class Upstream:
    proc: Proc
    record: Path


def _fixture(tmp: pytest.TempPathFactory, *extra: str) -> Iterator[Upstream]:
    record = tmp.mktemp("fixture") / "record.jsonl"
    with spawn([*FIXTURE, "--port", "0", "--record", str(record), *extra]) as proc:
        yield Upstream(proc, record)


@pytest.fixture(scope="module")
def legacy_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    yield from _fixture(tmp_path_factory, "--legacy")


@pytest.fixture(scope="module")
def modern_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    yield from _fixture(tmp_path_factory)


@pytest.fixture(scope="module")
def direct(legacy_fixture: Upstream, tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    out = tmp_path_factory.mktemp("direct")
    return run_suite("direct", legacy_fixture.proc.url, out, legacy_fixture.record, handshake_upstream=True)


@dataclass
class Guarded:
    """`mcp-guard serve` in front of a fixture."""

    proxy: Proc
    upstream: Upstream


def _guard(tmp: pytest.TempPathFactory, fixture: Upstream) -> Iterator[Guarded]:
    with proxy_http(_policy(tmp, "fixture", {"url": fixture.proc.url})) as proxy:
        yield Guarded(proxy, fixture)


@pytest.fixture(scope="module")
def guard_handshake_upstream(legacy_fixture: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    yield from _guard(tmp_path_factory, legacy_fixture)


@pytest.fixture(scope="module")
def guard_2026_upstream(modern_fixture: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    yield from _guard(tmp_path_factory, modern_fixture)


def _run_through(guarded: Guarded, label: str, tmp: pytest.TempPathFactory, *, handshake: bool) -> SuiteRun:
    return run_suite(label, guarded.proxy.url, tmp.mktemp(label), guarded.upstream.record, handshake_upstream=handshake)


@pytest.fixture(scope="module")
def via_guard_handshake_upstream(
    guard_handshake_upstream: Guarded, tmp_path_factory: pytest.TempPathFactory
) -> SuiteRun:
    return _run_through(guard_handshake_upstream, "handshake-upstream", tmp_path_factory, handshake=True)


@pytest.fixture(scope="module")
def via_guard_2026_upstream(guard_2026_upstream: Guarded, tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    return _run_through(guard_2026_upstream, "2026-upstream", tmp_path_factory, handshake=False)


def test_the_pinned_suite_has_exactly_these_server_scenarios() -> None:
    done = subprocess.run(
        _conformance("list", "--server"), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr[-2000:]
    listed = re.findall(r"^  - (\S+)", done.stdout, flags=re.MULTILINE)
    assert listed == SCENARIOS


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_fixture_passes_the_scenario_directly(scenario: str, direct: SuiteRun) -> None:
    outcome = direct.outcomes[scenario]
    assert outcome.passed, outcome.describe()
    assert not (missing := upstream_evidence(scenario, direct)), f"the fixture did not record: {missing}"


@pytest.mark.parametrize("upstream_era", ["handshake-upstream", "2026-upstream"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_scenario_passes_through_mcp_guard(
    scenario: str, upstream_era: str, direct: SuiteRun, request: pytest.FixtureRequest
) -> None:
    guarded: SuiteRun = request.getfixturevalue(f"via_guard_{upstream_era.replace('-', '_')}")
    before, after = direct.outcomes[scenario], guarded.outcomes[scenario]
    # The suite's own verdict: no check may fail. A check that succeeds directly may come back as a
    # warning (a SHOULD of the proxy's own transport, as the suite counts it) but not vanish.
    lost = before.ids("SUCCESS") - after.ids("SUCCESS") - after.ids("WARNING")
    # SSE streams are optional (the suite says INFO): mcp-guard's fast path answers with one JSON
    # response when a request has nothing to stream. No other check may turn into INFO.
    lost -= after.ids("INFO") & {"server-sse-streams-functional"}
    failed = after.ids("FAILURE")
    problems = after.describe(lost | failed) if (lost or failed or not after.checks) else ""
    if absent := lost - {c["id"] for c in after.checks}:
        problems += f"\n  succeeded directly, absent here: {sorted(absent)}"
    assert not problems, f"passes directly, not through mcp-guard ({upstream_era}):\n{problems}"
    missing = upstream_evidence(scenario, guarded)
    assert not missing, f"the client saw success but the upstream never received: {missing}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("upstream_era", ["handshake-upstream", "2026-upstream"])
async def test_a_json_schema_2020_12_input_schema_arrives_verbatim(
    upstream_era: str, mode: str, request: pytest.FixtureRequest
) -> None:
    # The scenario checks three keywords; every one of them (SEP-1613, SEP-2106) must survive.
    guarded: Guarded = request.getfixturevalue(f"guard_{upstream_era.replace('-', '_')}")
    async with Client(guarded.proxy.url, mode=mode, read_timeout_seconds=30) as client:
        tools = {t.name: t for t in await all_tools(client)}
    assert tools["json_schema_2020_12_tool"].input_schema == JSON_SCHEMA_2020_12


# --------------------------------------------------------------------------- server-everything behind mcp-guard


@dataclass
class Human:
    """The person at the client: answers relayed questions one way and remembers each question."""

    action: Literal["accept", "decline"] = "accept"
    content: dict[str, str | int | float | bool | list[str]] = field(default_factory=dict)
    questions: list[types.ElicitRequestFormParams] = field(default_factory=list)

    async def __call__(self, context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams), params
        self.questions.append(params)
        if self.action == "accept":
            return types.ElicitResult(action="accept", content=self.content)
        return types.ElicitResult(action="decline")


WAIT = 10.0  # server-everything repeats logs and updates every 5 s: one repeat's grace


class Heard:
    """Everything the client was sent outside results: log messages and resource updates."""

    def __init__(self) -> None:
        self.logs: list[types.LoggingMessageNotificationParams] = []
        self.updated: list[str] = []
        self._changed = anyio.Event()

    def _note(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params)
        self._note()

    async def message(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.updated.append(str(message.params.uri))
            self._note()

    async def until(self, predicate: Any) -> None:
        with anyio.fail_after(WAIT):
            while not predicate():
                await self._changed.wait()


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    entry = _bin(EVERYTHING, "mcp-server-everything")
    policy = _policy(tmp_path_factory, "everything", {"command": [_node(), str(entry), "stdio"]})
    with proxy_http(policy) as proc:
        yield proc


def _text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def _call(client: Client, name: str, arguments: dict[str, Any] | None = None, **kw: Any) -> types.CallToolResult:
    with anyio.fail_after(30):  # an answer must come back, never a hang
        return await client.call_tool(name, arguments or {}, **kw)


@pytest.mark.parametrize("mode", MODES)
async def test_everything_lists_and_calls_its_tools(mode: str, everything: Proc) -> None:
    async with Client(everything.url, mode=mode, read_timeout_seconds=30) as client:
        tools = {t.name: t for t in await all_tools(client)}
        echo = await _call(client, "echo", {"message": f"hello through mcp-guard ({mode})"})
        total = await _call(client, "get-sum", {"a": 2, "b": 3.5})
    assert {"echo", "get-sum", "get-structured-content", "trigger-long-running-operation"} <= set(tools)
    assert {"toggle-simulated-logging", "toggle-subscriber-updates"} <= set(tools)
    # server-everything offers this tool only to a client that declared elicitation: its presence says
    # mcp-guard's upstream connection declares it.
    assert "trigger-elicitation-request" in tools
    assert tools["echo"].input_schema["properties"]["message"]["type"] == "string"
    # What the upstream computed from the arguments it received.
    assert not echo.is_error and f"Echo: hello through mcp-guard ({mode})" in _text(echo)
    assert not total.is_error and "The sum of 2 and 3.5 is 5.5." in _text(total)


@pytest.mark.parametrize("mode", MODES)
async def test_everything_structured_content_arrives_intact(mode: str, everything: Proc) -> None:
    async with Client(everything.url, mode=mode, read_timeout_seconds=30) as client:
        tools = {t.name: t for t in await all_tools(client)}
        result = await _call(client, "get-structured-content", {"location": "Chicago"})
    schema = tools["get-structured-content"].output_schema
    assert schema is not None and set(schema["properties"]) == {"temperature", "conditions", "humidity"}
    assert not result.is_error, _text(result)
    assert result.structured_content == {"temperature": 36, "conditions": "Light rain / drizzle", "humidity": 82}
    assert '"temperature":36' in _text(result).replace(" ", "")


@pytest.mark.parametrize("mode", MODES)
async def test_everything_progress_is_relayed(mode: str, everything: Proc) -> None:
    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    async with Client(everything.url, mode=mode, read_timeout_seconds=30) as client:
        result = await _call(
            client, "trigger-long-running-operation", {"duration": 0.3, "steps": 3}, progress_callback=on_progress
        )
    assert not result.is_error, _text(result)
    assert "Long running operation completed. Duration: 0.3 seconds, Steps: 3." in _text(result)
    assert progress == [(1, 3), (2, 3), (3, 3)]


_SIMULATED_LOG = re.compile(r"(Debug|Info|Notice|Warning|Error|Critical|Emergency)-level message|Alert level-message")


@pytest.mark.parametrize("mode", MODES)
async def test_everything_log_messages_reach_the_client(mode: str, everything: Proc) -> None:
    heard = Heard()
    async with Client(
        everything.url, mode=mode, read_timeout_seconds=30, logging_callback=heard.log, log_level="debug"
    ) as client:
        if mode == "legacy":
            await client.set_logging_level("debug")
        # The tool sends one randomly-levelled message at once, then one every 5 s until toggled off.
        started = await _call(client, "toggle-simulated-logging")
        try:
            assert "Started simulated, random-leveled logging" in _text(started), _text(started)
            await heard.until(lambda: any(_SIMULATED_LOG.search(str(log.data)) for log in heard.logs))
        finally:
            stopped = await _call(client, "toggle-simulated-logging")
            assert "Stopped simulated logging" in _text(stopped), _text(stopped)


DOCUMENT = "demo://resource/static/document/features.md"


async def test_everything_resource_updates_reach_a_subscribed_handshake_client(everything: Proc) -> None:
    heard = Heard()
    async with Client(
        everything.url,
        mode="legacy",
        read_timeout_seconds=30,
        message_handler=heard.message,
        logging_callback=heard.log,
    ) as client:
        await client.set_logging_level("debug")
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        assert DOCUMENT in resources
        await client.subscribe_resource(DOCUMENT)
        # The upstream sends updates only for URIs this session subscribed to, the first one at once.
        await _call(client, "toggle-subscriber-updates")
        try:
            await heard.until(lambda: DOCUMENT in heard.updated)
        finally:
            await _call(client, "toggle-subscriber-updates")
        await client.unsubscribe_resource(DOCUMENT)
        # Unsubscribed: turning updates on again sends nothing for it (the first would be immediate).
        before = len(heard.updated)
        await _call(client, "toggle-subscriber-updates")
        try:
            await anyio.sleep(1.0)
        finally:
            await _call(client, "toggle-subscriber-updates")
        assert DOCUMENT not in heard.updated[before:]
    # The upstream's side: it answers each request with a log message naming the URI it received,
    # sent while that request is in flight for this session.
    logged = [str(m.data) for m in heard.logs]
    for acknowledgement in (
        f"Subscribe Resource request for URI: {DOCUMENT}",
        f"Unsubscribe Resource request: {DOCUMENT}",
    ):
        assert any(acknowledgement in line for line in logged), (
            f"the upstream's log {acknowledgement!r}, sent while it handled the request, never reached the client; "
            f"it got: {logged}"
        )


async def test_everything_resource_updates_reach_a_2026_listener(everything: Proc) -> None:
    async with Client(everything.url, mode="auto", read_timeout_seconds=30) as client:
        assert client.protocol_version == "2026-07-28"
        async with client.listen(resource_subscriptions=[DOCUMENT]) as sub:
            assert DOCUMENT in (sub.honored.resource_subscriptions or [])
            await _call(client, "toggle-subscriber-updates")
            try:
                with anyio.fail_after(10):
                    async for event in sub:
                        if isinstance(event, ResourceUpdated) and event.uri == DOCUMENT:
                            break
            finally:
                await _call(client, "toggle-subscriber-updates")


ANSWER: dict[str, str | int | float | bool | list[str]] = {
    "name": "Ada Lovelace",
    "check": True,
    "email": "ada@example.com",
    "integer": 7,
    "untitledSingleSelectEnum": "Joey",
    "titledMultipleSelectEnum": ["fish-2"],
}


@pytest.mark.parametrize("action", ["accept", "decline"])
@pytest.mark.parametrize("mode", MODES)
async def test_everything_elicitation_is_relayed_and_answered(
    mode: str, action: Literal["accept", "decline"], everything: Proc
) -> None:
    human = Human(action=action, content=dict(ANSWER))
    async with Client(everything.url, mode=mode, read_timeout_seconds=30, elicitation_callback=human) as client:
        result = await _call(client, "trigger-elicitation-request")
    text = _text(result)
    # The client side: asked exactly once, the upstream's question and form intact (SEP-1034
    # defaults, SEP-1330 enum forms), attributed to the upstream.
    assert len(human.questions) == 1, f"asked {len(human.questions)} times, the call returned: {text}"
    [asked] = human.questions
    assert "Please provide inputs for the following fields" in asked.message
    assert "everything" in asked.message
    schema = asked.requested_schema
    assert schema["required"] == ["name"]
    props = schema["properties"]
    assert props["firstLine"]["default"] == "It was a dark and stormy night."
    assert props["integer"]["default"] == 42 and props["number"]["default"] == 3.14
    assert props["untitledSingleSelectEnum"]["enum"] == ["Monica", "Rachel", "Joey", "Chandler", "Ross", "Phoebe"]
    assert [o["const"] for o in props["titledSingleSelectEnum"]["oneOf"]] == ["hero-1", "hero-2", "hero-3"]
    assert [o["const"] for o in props["titledMultipleSelectEnum"]["items"]["anyOf"]] == ["fish-1", "fish-2", "fish-3"]
    assert props["legacyTitledEnum"]["enumNames"] == ["Cats", "Dogs", "Birds", "Fish", "Reptiles"]
    # The upstream side: its result reports the answer it received.
    assert not result.is_error, text
    if action == "accept":
        assert "User provided the requested information" in text, text
        assert "Name: Ada Lovelace" in text and "Email: ada@example.com" in text and "Favorite Integer: 7" in text
    else:
        assert "User declined to provide the requested information" in text, text
        assert "Name: Ada Lovelace" not in text
