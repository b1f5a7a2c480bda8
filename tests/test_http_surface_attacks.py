"""Adversarial review of the downstream surface of `mcp-guard serve` (HTTP, both eras, fast path and
SDK path) and of `mcp-guard stdio`, as a hostile or buggy client.

One proxy per module on loopback, in front of two real upstreams: the feature server (`feat`,
resources without subscriptions, the policy's own Bearer token) and the notifier (`note`, resources
with subscriptions). Each test asserts the secure behaviour: a failing test is a confirmed finding.
Several principals are simulated with passthrough `Authorization` headers (one principal per token).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import httpx2
import mcp.types as types
import pytest
from mcp.shared.message import SessionMessage
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    JSONRPCError,
)

from proxy.policy import Upstream
from proxy.stdio import parse_line
from proxy.upstream import UpstreamConnection
from proxy.upstream_errors import UpstreamUnavailable
from tests.harness import (
    FEATURES,
    PY,
    REPO,
    Proc,
    env_with,
    jsonrpc_messages,
    proxy_http,
    records,
    spawn,
    stop_process,
    write_policy,
)

pytestmark = pytest.mark.anyio

NOTIFIER = [PY, str(REPO / "tests" / "servers" / "notifier.py")]
MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
SECRET = "review-upstream-secret-7f3a9c"  # the policy's upstream Bearer token: must never reach a client
UPSTREAM_TIMEOUT = 3.0  # feat's timeout_seconds, so a stuck upstream wait is short
BOUND = 15.0  # an answer later than this is a hang
ALICE, BOB = "Bearer alice-token", "Bearer bob-token"

# Every response body any test here received, for the leak check at the end.
SEEN: list[str] = []


@dataclass
class Rig:
    proxy: Proc
    url: str
    policy: Path
    feat_record: Path
    note_record: Path
    lines: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    where = tmp_path_factory.mktemp("surface")
    feat_record, note_record = where / "feat.jsonl", where / "note.jsonl"
    with (
        spawn([*FEATURES, "--port", "0", "--record", str(feat_record)]) as feat,
        spawn([*NOTIFIER, "--port", "0", "--record", str(note_record)]) as note,
    ):
        policy = write_policy(
            where / "p.yaml",
            {
                "feat": {
                    "url": feat.url,
                    "headers": {"Authorization": "Bearer ${REVIEW_SECRET}"},
                    "timeout_seconds": UPSTREAM_TIMEOUT,
                },
                "note": {"url": note.url},
            },
            confirm={"destructive": True},
            audit={"path": str(where / "audit.jsonl")},
        )
        with proxy_http(policy, env={"REVIEW_SECRET": SECRET}) as proxy:
            yield Rig(proxy, proxy.url, policy, feat_record, note_record, proxy.lines)


# -- helpers ----------------------------------------------------------------------------------------------


def envelope(caps: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        PROTOCOL_VERSION_META_KEY: MODERN,
        CLIENT_CAPABILITIES_META_KEY: caps or {},
        CLIENT_INFO_META_KEY: {"name": "review", "version": "1"},
    }


def modern_headers(method: str, name: str | None = None, auth: str | None = None) -> dict[str, str]:
    headers = {**ACCEPT, "MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    if auth is not None:
        headers["Authorization"] = auth
    return headers


def modern_body(method: str, params: dict[str, Any], rid: Any = 1, caps: dict[str, Any] | None = None) -> bytes:
    params = {**params, "_meta": {**envelope(caps), **params.get("_meta", {})}}
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}).encode()


async def open_session(
    http: httpx2.AsyncClient, url: str, *, auth: str | None = None, caps: dict[str, Any] | None = None
) -> dict[str, str]:
    """An initialised handshake-era session; returns the headers that use it."""
    headers = dict(ACCEPT)
    if auth is not None:
        headers["Authorization"] = auth
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE,
            "capabilities": caps or {},
            "clientInfo": {"name": "r", "version": "1"},
        },
    }
    opened = await http.post(url, json=init, headers=headers)
    assert opened.status_code == 200, opened.text
    headers |= {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": HANDSHAKE}
    done = await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    assert done.status_code == 202
    return headers


def messages(response: httpx2.Response) -> list[dict[str, Any]]:
    SEEN.append(response.text)
    return jsonrpc_messages(response)


async def post(http: httpx2.AsyncClient, url: str, body: Any, headers: dict[str, str]) -> httpx2.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with anyio.fail_after(BOUND):
        response = await http.post(url, content=content, headers=headers)
    SEEN.append(response.text)
    return response


def upstream_calls(record: Path, tool: str) -> list[dict[str, Any]]:
    return [r for r in records(record) if r.get("method") == "tools/call" and r.get("tool") == tool]


# -- resource subscriptions ----------------------------------------------------------------------------------


async def test_subscribe_is_answered_promptly_and_clearly(rig: Rig) -> None:
    """FINDING. With two upstreams offering resources, `resources/subscribe` goes to the first one
    (feat), which has no subscriptions (no change stream): the proxy waits for an acknowledgement
    nobody will send, for the upstream's whole timeout (30 s by default), and then answers
    `{"code": 0, "message": ""}` with a TimeoutError traceback in its log."""
    logged = len(rig.lines)
    async with httpx2.AsyncClient(timeout=BOUND + 30) as http:
        session = await open_session(http, rig.url)
        body = {"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": "note://a"}}
        started = anyio.current_time()
        answer = await http.post(rig.url, json=body, headers=session)
        took = anyio.current_time() - started
    final = messages(answer)[-1]
    assert "Traceback" not in "".join(rig.lines[logged:]), "".join(rig.lines[logged:])[-3000:]
    if "error" in final:
        assert final["error"]["code"] != 0 and final["error"]["message"], final
    # Nothing in this request needs to wait on the upstream's timeout: answered at once, either way.
    assert took < UPSTREAM_TIMEOUT - 0.5, (took, final)


async def test_a_2026_listen_reaches_the_upstream_that_offers_subscriptions(rig: Rig) -> None:
    """FINDING. The 2026-07-28 variant: `subscriptions/listen` for a URI is subscribed on the first
    upstream with resources (`Subscriptions.listening` -> `_single(caller, "resources")`), which has
    no change stream: after the upstream's whole timeout the client gets -32603 "Internal server
    error", and the upstream that does offer subscriptions never hears of it."""
    uri = "note://c"
    params = {"notifications": {"resourceSubscriptions": [uri]}}
    first: dict[str, Any] = {}
    async with httpx2.AsyncClient(timeout=BOUND) as http:
        started = anyio.current_time()
        with anyio.fail_after(BOUND):
            async with http.stream(
                "POST", rig.url, content=modern_body("subscriptions/listen", params),
                headers=modern_headers("subscriptions/listen"),
            ) as response:  # fmt: skip
                async for line in response.aiter_lines():
                    text = line[5:] if line.startswith("data:") else line if line.startswith("{") else ""
                    if text:
                        first = json.loads(text)
                        break
        took = anyio.current_time() - started
    listened = [r for r in records(rig.note_record) if r.get("method") == "subscriptions/listen" and uri in r["uris"]]
    assert "error" not in first and listened, (round(took, 1), first)


async def test_a_failed_subscribe_is_never_reported_as_done_later(rig: Rig) -> None:
    """FINDING. `UpstreamConnection.subscribe` counts the subscription before the upstream took it;
    when that fails the count stays, so the next subscribe of the URI (any session sharing the
    connection, either era) is answered with success while no upstream was ever subscribed."""
    uri = "note://b"
    async with httpx2.AsyncClient(timeout=BOUND + 30) as http:
        session = await open_session(http, rig.url)
        outcomes = []
        for rid in (1, 2):
            body = {"jsonrpc": "2.0", "id": rid, "method": "resources/subscribe", "params": {"uri": uri}}
            outcomes.append(messages(await http.post(rig.url, json=body, headers=session))[-1])
    upstream_knows = [
        r
        for r in records(rig.note_record)
        if (r.get("method") == "resources/subscribe" and r.get("uri") == uri)
        or (r.get("method") == "subscriptions/listen" and uri in r.get("uris", []))
    ]
    for outcome in outcomes:
        if "result" in outcome:
            assert upstream_knows, f"subscribe answered {outcome} but no upstream was subscribed to {uri}"


async def test_a_subscription_no_change_stream_took_is_refused_and_not_counted() -> None:
    """The connection itself (what the two findings above came down to): a 2026-07-28 upstream whose
    change stream never acknowledges the filter fails the subscribe at its timeout as an unavailable
    upstream (not a bare TimeoutError, which the SDK answers `{"code": 0, "message": ""}`), and the
    URI is not counted, so the next subscribe asks again instead of reporting success. An upstream
    with no change stream at all is refused at once."""
    async with anyio.create_task_group() as tg:
        config = Upstream(url="http://127.0.0.1:9/", timeout_seconds=0.3)
        conn = UpstreamConnection("up", config, {}, tg, allow_sampling=False)
        caps = types.ServerCapabilities(resources=types.ResourcesCapability(subscribe=True))
        session = SimpleNamespace(protocol_version=MODERN, server_capabilities=caps)
        conn._client = SimpleNamespace(session=session)  # type: ignore[assignment]  # connected; no stream runs
        for _ in range(2):
            with pytest.raises(UpstreamUnavailable, match="did not acknowledge"):
                await conn.subscribe("note://x")
            assert conn.subscribed == {}
        session.server_capabilities = types.ServerCapabilities(resources=types.ResourcesCapability())
        with anyio.fail_after(0.2), pytest.raises(UpstreamUnavailable, match="no change stream"):
            await conn.subscribe("note://x")
        assert conn.subscribed == {}


# -- stdio ---------------------------------------------------------------------------------------------------


class StdioProxy:
    def __init__(self, policy: Path) -> None:
        self.popen = subprocess.Popen(
            [PY, "-m", "proxy", "stdio", "--policy", str(policy)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env_with({"REVIEW_SECRET": SECRET}),
            cwd=REPO,
        )

    def send(self, line: bytes) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + b"\n")
        self.popen.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        SEEN.append(line.decode("utf-8", "replace"))
        return json.loads(line)

    def until(self, request_id: Any) -> list[dict[str, Any]]:
        """Every message up to and including the answer to `request_id` (a probe sent last)."""
        seen = []
        while True:
            message = self.read()
            seen.append(message)
            if message.get("id") == request_id and "method" not in message:
                return seen

    def close(self) -> None:
        stop_process(self.popen)


@pytest.fixture
def stdio(rig: Rig) -> Iterator[StdioProxy]:
    proxy = StdioProxy(rig.policy)
    init = {
        "jsonrpc": "2.0",
        "id": "init",
        "method": "initialize",
        "params": {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "r", "version": "1"}},
    }
    try:
        proxy.send(json.dumps(init).encode())
        assert "result" in proxy.read()
        proxy.send(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
        yield proxy
    finally:
        proxy.close()


@pytest.mark.parametrize("request_id", [1.5, True, None, [7], {"a": 1}])
def test_stdio_request_with_an_id_of_the_wrong_type_gets_an_error(stdio: StdioProxy, request_id: Any) -> None:
    """FINDING. Over HTTP such a request is refused with -32600 (fastpath `_claim`); over stdio the SDK
    reads it as a notification and drops it: no answer ever, the client waits for ever. A probe with a
    good id sent after it shows what came back before it (stdout is ordered)."""
    stdio.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/list"}).encode())
    stdio.send(b'{"jsonrpc": "2.0", "id": "probe", "method": "ping"}')
    before_probe = stdio.until("probe")[:-1]
    errors = [m for m in before_probe if "error" in m]
    assert errors and errors[0]["error"]["code"] == -32600, before_probe


def test_stdio_invalid_utf8_is_refused_not_rewritten(stdio: StdioProxy, rig: Rig) -> None:
    """FINDING. Over HTTP a body that is not UTF-8 is refused (parse error); over stdio the bytes are
    replaced with U+FFFD and the altered arguments are forwarded to the upstream as if the client had
    sent them."""
    marker = "utf8-marker-1"
    line = (
        b'{"jsonrpc":"2.0","id":5,"method":"tools/call",'
        b'"params":{"name":"feat__echo","arguments":{"text":"%s \xff\xfe"}}}'
    )
    stdio.send(line % marker.encode())
    answer = stdio.until(5)[-1]
    forwarded = [c for c in upstream_calls(rig.feat_record, "echo") if marker in str(c.get("arguments"))]
    assert "error" in answer and not forwarded, (answer, forwarded)


def test_stdio_garbage_and_batches_get_errors_and_it_keeps_serving(stdio: StdioProxy) -> None:
    for line in (
        b"not json",
        b'[{"jsonrpc":"2.0","id":20,"method":"tools/list"}]',
        b'{"jsonrpc":"2.0","id":21,"method":"x","params":{"t":"\\ud800"}}',
    ):
        stdio.send(line)
        answer = stdio.read()
        assert answer["id"] is None and answer["error"]["code"] in (-32700, -32600), answer
    stdio.send(b'{"jsonrpc": "2.0", "id": 22, "method": "tools/list"}')
    assert "feat__echo" in json.dumps(stdio.until(22)[-1]["result"])


def test_stdio_an_overlong_line_is_refused_and_it_keeps_serving(stdio: StdioProxy) -> None:
    """A line past the HTTP body limit gets an error (not held whole); the next line is served."""
    stdio.send(b'{"jsonrpc":"2.0","id":30,"method":"ping","params":{"pad":"' + b"x" * (2 * 1024 * 1024) + b'"}}')
    answer = stdio.read()
    assert answer["id"] is None and answer["error"]["code"] == -32600 and "larger" in answer["error"]["message"]
    stdio.send(b'{"jsonrpc": "2.0", "id": 31, "method": "ping"}')
    assert stdio.until(31)[-1]["result"] == {}


def test_stdio_lines_are_told_apart_from_refusals() -> None:
    """The client's own error (its answer to a question of ours) goes to the server, not back to it;
    a refused line's error carries the request's id only where the id itself was readable."""
    answer = parse_line(b'{"jsonrpc":"2.0","id":"q1","error":{"code":-1,"message":"no"}}')
    assert isinstance(answer, SessionMessage) and isinstance(answer.message, JSONRPCError)
    refused = parse_line(b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"x":"\xff"}}')
    assert isinstance(refused, JSONRPCError) and refused.id == 7 and refused.error.code == -32700
    refused = parse_line(b'{"jsonrpc":"2.0","id":"a\xff","method":"ping"}')
    assert isinstance(refused, JSONRPCError) and refused.id is None


# -- non-JSON numbers ----------------------------------------------------------------------------------------


async def test_non_finite_numbers_are_confirmed_as_what_is_sent(rig: Rig) -> None:
    """`NaN`/`Infinity` are not JSON but both parsers take them; the upstream receives `null`. Held:
    the confirmation prompt shows `null` too, so what the human confirms is what is sent (SPEC §6)."""
    marker = "nan-marker-1"
    prompt = ""
    async with httpx2.AsyncClient(timeout=BOUND) as http:
        session = await open_session(http, rig.url, caps={"elicitation": {"form": {}}})
        body = (
            b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"feat__write_thing",'
            b'"arguments":{"x":"%s","limit":NaN}}}' % marker.encode()
        )
        with anyio.fail_after(BOUND):
            async with http.stream("POST", rig.url, content=body, headers=session) as response:
                lines = response.aiter_lines()
                async for line in lines:
                    if not line.startswith("data:"):
                        continue
                    message = json.loads(line[5:])
                    SEEN.append(line)
                    if message.get("method") == "elicitation/create":
                        prompt = message["params"]["message"]
                        accept = {
                            "jsonrpc": "2.0",
                            "id": message["id"],
                            "result": {"action": "accept", "content": {"confirm": True}},
                        }
                        await http.post(rig.url, json=accept, headers=session)
                    elif message.get("id") == 9:
                        break
    sent = [c["arguments"] for c in upstream_calls(rig.feat_record, "write_thing") if c["arguments"].get("x") == marker]
    assert len(sent) <= 1, sent
    for arguments in sent:  # forwarded only after the human saw exactly these values
        for key, value in arguments.items():
            assert f'"{key}": {json.dumps(value)}' in prompt, (prompt, arguments)


# -- sessions, principals, cancellation ----------------------------------------------------------------------


async def test_another_principal_cannot_use_end_or_listen_on_a_session(rig: Rig) -> None:
    async with httpx2.AsyncClient(timeout=BOUND) as http:
        alice = await open_session(http, rig.url, auth=ALICE)
        bob = {**alice, "Authorization": BOB}
        anonymous = {k: v for k, v in alice.items() if k != "Authorization"}
        for intruder in (bob, anonymous):
            for body in (
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "tools/call",
                    "params": {"name": "feat__echo", "arguments": {"text": "x"}},
                },
                {"jsonrpc": "2.0", "id": 2, "method": "resources/list"},
                {"jsonrpc": "2.0", "id": "q1", "result": {"action": "accept", "content": {"confirm": True}}},
            ):
                assert (await post(http, rig.url, body, intruder)).status_code == 404
            with anyio.fail_after(BOUND):
                assert (await http.get(rig.url, headers=intruder)).status_code == 404
                assert (await http.delete(rig.url, headers=intruder)).status_code == 404
        # A forged session id, and the session id on a 2026-07-28 request, open nothing either.
        forged = {**alice, "Mcp-Session-Id": "0" * 32}
        assert (
            await post(http, rig.url, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, forged)
        ).status_code == 404
        still = await post(http, rig.url, {"jsonrpc": "2.0", "id": 4, "method": "tools/list"}, alice)
        assert still.status_code == 200 and "feat__echo" in still.text


async def test_nobody_else_can_cancel_a_running_call(rig: Rig) -> None:
    """Bob (with Alice's session id), an anonymous caller, and a 2026-07-28 request all send
    notifications/cancelled for Alice's running call; it still completes."""
    async with httpx2.AsyncClient(timeout=BOUND) as http:
        alice = await open_session(http, rig.url, auth=ALICE)
        call = {
            "jsonrpc": "2.0",
            "id": "slow-1",
            "method": "tools/call",
            "params": {"name": "feat__slow", "arguments": {"seconds": 1}, "_meta": {"progressToken": "p"}},
        }
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "slow-1"}}
        with anyio.fail_after(BOUND):
            async with http.stream("POST", rig.url, json=call, headers=alice) as running:
                lines = running.aiter_lines()
                async for line in lines:
                    if "notifications/progress" in line:
                        break  # surely in flight
                for intruder in (
                    {**alice, "Authorization": BOB},
                    {k: v for k, v in alice.items() if k != "Authorization"},
                ):
                    assert (await post(http, rig.url, cancel, intruder)).status_code == 404
                modern_cancel = {**cancel, "params": {**cancel["params"], "_meta": envelope()}}
                headers = {
                    **modern_headers("notifications/cancelled", auth=ALICE),
                    "Mcp-Session-Id": alice["Mcp-Session-Id"],
                }
                assert (await post(http, rig.url, modern_cancel, headers)).status_code == 202
                rest = [json.loads(x[5:]) for x in [x async for x in lines] if x.startswith("data:")]
    assert rest and rest[-1]["id"] == "slow-1" and "slept" in json.dumps(rest[-1]["result"]), rest


# -- DNS rebinding -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "value", "status"),
    [
        ("Host", "evil.example", 421),
        ("Host", "localhost.evil.example", 421),
        ("Origin", "http://evil.example", 403),
        ("Origin", "null", 403),
    ],
)
async def test_rebound_host_or_foreign_origin_is_refused_on_every_path(
    rig: Rig, header: str, value: str, status: int
) -> None:
    marker = f"rebind-{header}-{value}"
    async with httpx2.AsyncClient(timeout=BOUND) as http:
        session = await open_session(http, rig.url)
        echo = {"name": "feat__echo", "arguments": {"text": marker}}
        tries = [
            (modern_body("tools/call", echo), modern_headers("tools/call", "feat__echo")),  # fast path
            (
                modern_body("tools/call", {**echo, "_meta": {"progressToken": 1}}),
                modern_headers("tools/call", "feat__echo"),
            ),  # SDK path
            (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": echo}).encode(), session),
            (json.dumps({"jsonrpc": "2.0", "id": 2, "method": "resources/list"}).encode(), session),
        ]
        for body, headers in tries:
            answer = await post(http, rig.url, body, {**headers, header: value})
            assert answer.status_code == status, answer.text
        with anyio.fail_after(BOUND):
            assert (await http.get(rig.url, headers={**session, header: value})).status_code == status
    assert not [c for c in upstream_calls(rig.feat_record, "echo") if marker in str(c.get("arguments"))]


async def test_healthz_is_not_served_to_a_rebound_host(rig: Rig) -> None:
    """FINDING (low). /healthz skips the Host/Origin check the MCP endpoints have, so a page that
    rebinds its DNS name to 127.0.0.1 reads it (team names, pin drift counts, state backend)."""
    async with httpx2.AsyncClient(timeout=BOUND) as http:
        answer = await http.get(rig.url + "healthz", headers={"Host": "evil.example"})
    assert answer.status_code in (403, 421), answer.text


# -- confirmation state across principals (2026-07-28) -------------------------------------------------------


async def test_a_sealed_confirmation_cannot_be_replayed_or_used_by_another_principal(rig: Rig) -> None:
    caps = {"elicitation": {"form": {}}}
    marker = "sealed-marker-1"
    params = {"name": "feat__write_thing", "arguments": {"x": marker}}
    async with httpx2.AsyncClient(timeout=BOUND) as http:
        asked = (
            await post(
                http,
                rig.url,
                modern_body("tools/call", params, caps=caps),
                modern_headers("tools/call", "feat__write_thing", ALICE),
            )
        ).json()
        result = asked["result"]
        assert result["resultType"] == "input_required", result
        key = next(iter(result["inputRequests"]))
        retry = {
            **params,
            "requestState": result["requestState"],
            "inputResponses": {key: {"action": "accept", "content": {"confirm": True}}},
        }
        body = modern_body("tools/call", retry, rid=2, caps=caps)
        bob = await post(http, rig.url, body, modern_headers("tools/call", "feat__write_thing", BOB))
        assert "error" in bob.json() or bob.json()["result"].get("isError"), bob.text
        assert not [c for c in upstream_calls(rig.feat_record, "write_thing") if c["arguments"].get("x") == marker]
        # Altered arguments under Alice's own state are refused too.
        altered = modern_body("tools/call", {**retry, "arguments": {"x": marker + "-altered"}}, rid=3, caps=caps)
        changed = await post(http, rig.url, altered, modern_headers("tools/call", "feat__write_thing", ALICE))
        assert "error" in changed.json() or changed.json()["result"].get("isError"), changed.text
        first = await post(http, rig.url, body, modern_headers("tools/call", "feat__write_thing", ALICE))
        again = await post(http, rig.url, body, modern_headers("tools/call", "feat__write_thing", ALICE))
    assert first.json()["result"].get("isError") is not True, first.text
    assert "error" in again.json() or again.json()["result"].get("isError"), again.text
    assert (
        len([c for c in upstream_calls(rig.feat_record, "write_thing") if marker in c["arguments"].get("x", "")]) == 1
    )


# -- malformed bodies both paths agree on --------------------------------------------------------------------


async def test_duplicate_keys_cannot_smuggle_a_gated_call_past_the_gate(rig: Rig) -> None:
    """A duplicated `name` (or `params`): whichever value the proxy acts on is the one it guards, on
    the fast path and the SDK path, in both eras; a client without elicitation gets the gated tool
    refused and the upstream never sees it."""
    marker = "dup-marker-1"
    inner = (
        b'{"name":"feat__echo","arguments":{"x":"%s","text":"a"},"name":"feat__write_thing","arguments":{"x":"%s"}'
        % (marker.encode(), marker.encode())
    )
    async with httpx2.AsyncClient(timeout=BOUND) as http:
        session = await open_session(http, rig.url)
        meta = json.dumps(envelope()).encode()
        modern_fast = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":%s,"_meta":%s}}' % (inner, meta)
        modern_sdk = b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":%s,"_meta":%s}}' % (
            inner,
            json.dumps({**envelope(), "progressToken": 5}).encode(),
        )
        handshake = b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":%s}}' % inner
        for body, headers in [
            (modern_fast, modern_headers("tools/call", "feat__write_thing")),
            (modern_fast, modern_headers("tools/call", "feat__echo")),
            (modern_sdk, modern_headers("tools/call", "feat__write_thing")),
            (handshake, session),
        ]:
            answer = await post(http, rig.url, body, headers)
            assert answer.status_code < 500
            final = messages(answer)[-1]
            assert (
                "error" in final
                or final["result"].get("isError")
                or final["result"].get("resultType") == "input_required"
            ), final
    assert not [c for c in upstream_calls(rig.feat_record, "write_thing") if c["arguments"].get("x") == marker]


@pytest.mark.parametrize("era", ["modern", "handshake"])
async def test_batches_and_oversize_bodies_are_refused(rig: Rig, era: str) -> None:
    async with httpx2.AsyncClient(timeout=BOUND) as http:
        headers = modern_headers("tools/list") if era == "modern" else await open_session(http, rig.url)
        one = (
            json.loads(modern_body("tools/list", {}))
            if era == "modern"
            else {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        )
        big = {**one, "params": {**one.get("params", {}), "cursor": "a" * (1024 * 1024 + 10)}}
        huge = await post(http, rig.url, json.dumps(big).encode(), headers)
        assert huge.status_code == 413, huge.status_code

        async def chunks() -> Any:  # no Content-Length: the limit must hold for a chunked body too
            yield json.dumps(one)[:-1].encode() + b', "pad": "'
            for _ in range(24):
                yield b"b" * 65536
            yield b'"}'

        with anyio.fail_after(BOUND):
            chunked = await http.post(rig.url, content=chunks(), headers=headers)
        assert chunked.status_code == 413, chunked.status_code
        SEEN.append(chunked.text)
        batch = await post(http, rig.url, json.dumps([one, {**one, "id": 2}]).encode(), headers)
        # FINDING (low, handshake era): the SDK's transport answers -32602 with pydantic's whole
        # validation report (input echoed, library URL) instead of -32600 "Invalid Request".
        assert batch.status_code == 400 and batch.json()["error"]["code"] in (-32600, -32700), batch.text
        assert "pydantic" not in batch.text and "input_value" not in batch.text, batch.text


# -- runs last -----------------------------------------------------------------------------------------------


def test_no_secret_traceback_or_path_reached_a_client_and_nothing_crashed(rig: Rig) -> None:
    for text in SEEN:
        assert SECRET not in text
        assert "Traceback" not in text and 'File "/' not in text and str(REPO) not in text, text[:1000]
    log = "".join(rig.lines)
    assert SECRET not in log
    # (A TimeoutError traceback from the subscribe finding above is that test's to report.)
    assert "Exception in ASGI application" not in log, log[-4000:]
