"""Per-principal capacity (SPEC §9): one principal flooding `serve` gets 429, the others keep working."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp.types as types
import pytest
from mcp import Client
from starlette.types import Message, Receive, Scope, Send

from proxy.capacity import Capacity
from proxy.gateway import IDENTITY_KEY, Identity
from proxy.policy import CapacityPolicy
from tests.harness import proxy_http, write_policy
from tests.test_malformed import HEADERS, INIT
from tests.test_policies_e2e import bearer, text

pytestmark = pytest.mark.anyio


def policy(tmp: Path, **capacity: int) -> Path:
    return write_policy(
        tmp / "team.yaml",
        {"smsapi": {"builtin": "sandbox", "profile": "smsapi"}},
        scopes=["sms", "profile"],
        trifecta={"action": "off"},
        capacity=capacity,
    )


async def test_a_session_flood_gets_429_and_other_principals_keep_working(tmp_path: Path) -> None:
    with proxy_http(policy(tmp_path, sessions_per_principal=20)) as proxy:
        async with httpx2.AsyncClient(timeout=30) as http:
            answers = [await http.post(proxy.url, json=INIT, headers=HEADERS) for _ in range(26)]
            opened = [a.headers["mcp-session-id"] for a in answers if a.status_code == 200]
            refused = [a for a in answers if a.status_code != 200]
            assert len(opened) == 20 and len(refused) == 6
            assert all(a.status_code == 429 and int(a.headers["retry-after"]) >= 1 for a in refused)
            assert "too many open sessions" in refused[0].json()["error"]["message"]

            # Another principal is untouched, in both eras.
            for mode in ("legacy", "auto"):
                async with bearer(proxy.url, "other-token", mode) as client:
                    assert not (await client.call_tool("get_profile", {})).is_error
            # The flooder's own sessionless (2026-07-28) calls are not sessions, so not refused.
            async with Client(proxy.url, mode="auto") as client:
                assert not (await client.call_tool("get_profile", {})).is_error

            # Ending one of its sessions makes room for one more.
            ended = await http.delete(proxy.url, headers={**HEADERS, "Mcp-Session-Id": opened[0]})
            assert ended.status_code < 300
            again = await http.post(proxy.url, json=INIT, headers=HEADERS)
            assert again.status_code == 200
            assert (await http.post(proxy.url, json=INIT, headers=HEADERS)).status_code == 429


class Held:
    """An elicitation callback that holds every confirmation open until released."""

    def __init__(self) -> None:
        self.asked = 0
        self.release = anyio.Event()
        self.waiting = anyio.Event()

    async def __call__(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.asked += 1
        if self.asked == 2:
            self.waiting.set()
        await self.release.wait()
        return types.ElicitResult(action="accept", content={"confirm": True})


async def test_requests_in_flight_are_capped_per_principal(tmp_path: Path) -> None:
    send = {"to": "48500100200", "message": "Hej", "test": True}
    with proxy_http(policy(tmp_path, requests_per_principal=2)) as proxy:
        held = Held()
        results: list[types.CallToolResult] = []

        async def one() -> None:  # its own session, the same principal
            async with bearer(proxy.url, "busy-token", "legacy", elicitation_callback=held) as busy:
                results.append(await busy.call_tool("send_sms", send))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(one)
                tg.start_soon(one)
                await held.waiting.wait()  # two sends are in flight, each waiting on the human
                async with httpx2.AsyncClient(timeout=30, headers={"Authorization": "Bearer busy-token"}) as http:
                    third = await http.post(proxy.url, json=INIT, headers=HEADERS)
                assert third.status_code == 429 and "requests in flight" in third.json()["error"]["message"]
                async with bearer(proxy.url, "calm-token", "auto") as calm:  # someone else is served
                    assert not (await calm.call_tool("get_profile", {})).is_error
                held.release.set()
        assert [r.is_error for r in results] == [False, False], [text(r) for r in results]


# -- the eviction rule, on the middleware alone (no sleeping through a real minute) -----------------


class Opener:
    """A stand-in for the SDK's session manager: every bare POST opens a new numbered session."""

    def __init__(self) -> None:
        self.open: set[str] = set()
        self.closed: list[str] = []
        self.count = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.count += 1
        sid = f"s{self.count}"
        self.open.add(sid)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"mcp-session-id", sid.encode())]})
        await send({"type": "http.response.body", "body": b"{}"})

    async def close(self, sid: str) -> None:
        self.open.discard(sid)
        self.closed.append(sid)


class Gateway:
    def __init__(self, capacity: CapacityPolicy) -> None:
        policy = type("P", (), {"capacity": capacity})()
        self.policies = {"t": type("L", (), {"policy": policy})()}


async def post(app: Capacity, principal: str = "anonymous", session: str | None = None) -> int:
    headers = [(b"mcp-session-id", session.encode())] if session else []
    scope: Scope = {"type": "http", "method": "POST", "headers": headers, IDENTITY_KEY: Identity("t", principal, None)}
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    await app(scope, receive, send)
    return int(sent[0]["status"])


async def test_the_oldest_idle_session_of_that_principal_makes_room() -> None:
    now = [0.0]
    opener = Opener()
    app = Capacity(
        opener,
        Gateway(CapacityPolicy(sessions_per_principal=2)),  # type: ignore[arg-type]
        alive=lambda sid: sid in opener.open,
        close=opener.close,
        clock=lambda: now[0],
        idle_before_eviction=60,
    )
    assert [await post(app) for _ in range(2)] == [200, 200]
    assert await post(app, "bearer:other") == 200  # another principal has its own room
    now[0] = 30
    assert await post(app, session="s2") == 200  # s2 is used again; s1 stays idle since 0
    assert await post(app) == 429  # nothing idle long enough yet
    now[0] = 61
    assert await post(app) == 200
    assert opener.closed == ["s1"]  # the oldest idle session of this principal, and only that one
    assert await post(app) == 429  # s2 (used at 30) and s5 are both young
    opener.open.discard("s2")  # a session the client ended (or that timed out) frees its room
    assert await post(app) == 200


async def test_the_least_recently_used_idle_session_of_anyone_makes_room_in_the_process() -> None:
    opener = Opener()
    app = Capacity(
        opener,
        Gateway(CapacityPolicy()),  # type: ignore[arg-type]
        alive=lambda sid: sid in opener.open,
        close=opener.close,
        max_sessions=3,
    )
    assert [await post(app, f"bearer:{name}") for name in "abc"] == [200, 200, 200]  # s1, s2, s3
    assert await post(app, "bearer:a", session="s1") == 200  # s1 is used again: s2 is now the oldest
    assert await post(app, "bearer:d") == 200
    assert opener.closed == ["s2"]  # recency decides, not the principal: each holds one session
    opener.open.discard("s3")  # ended by its client: its room is free without closing anyone
    assert await post(app, "bearer:e") == 200
    assert opener.closed == ["s2"]


def made_up(n: int) -> dict[str, str]:
    return {**HEADERS, "Authorization": f"Bearer made-up-{n}"}


async def test_made_up_credentials_cannot_lock_others_out_of_sessions(tmp_path: Path) -> None:
    # Passthrough: every Authorization is its own principal, unverified, so per-principal caps alone
    # would let one client with a new token per initialize fill the SDK's session table.
    with proxy_http(policy(tmp_path, sessions_per_principal=2), "--max-sessions", "8") as proxy:
        async with httpx2.AsyncClient(timeout=30) as http:
            flood = [await http.post(proxy.url, json=INIT, headers=made_up(n)) for n in range(40)]
            assert [a.status_code for a in flood] == [200] * 40
            # Its oldest idle sessions were closed to make room for its newer ones.
            first = {**made_up(0), "Mcp-Session-Id": flood[0].headers["mcp-session-id"]}
            assert (await http.post(proxy.url, json=INIT | {"method": "tools/list"}, headers=first)).status_code == 404

            for turn, token in enumerate(("legit-token", "another-legit-token")):  # each after (and amid) a flood
                async with bearer(proxy.url, token, "legacy") as client:
                    assert not (await client.call_tool("get_profile", {})).is_error
                    new = range(100 * (turn + 1), 100 * (turn + 1) + 20)
                    more = [await http.post(proxy.url, json=INIT, headers=made_up(n)) for n in new]
                    assert [a.status_code for a in more] == [200] * 20


async def test_a_session_with_a_request_in_flight_is_never_closed_for_room(tmp_path: Path) -> None:
    send = {"to": "48500100200", "message": "Hej", "test": True}
    with proxy_http(policy(tmp_path), "--max-sessions", "2") as proxy:
        held = Held()
        results: list[types.CallToolResult] = []

        async def one(token: str) -> None:
            async with bearer(proxy.url, token, "legacy", elicitation_callback=held) as busy:
                results.append(await busy.call_tool("send_sms", send))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(one, "first-token")
                tg.start_soon(one, "second-token")
                await held.waiting.wait()  # both sessions are mid-call, waiting on the human
                async with httpx2.AsyncClient(timeout=30) as http:
                    refused = [await http.post(proxy.url, json=INIT, headers=made_up(n)) for n in range(5)]
                assert all(a.status_code == 503 and int(a.headers["retry-after"]) >= 1 for a in refused)
                assert "all of them busy" in refused[0].json()["error"]["message"]
                held.release.set()
        assert [r.is_error for r in results] == [False, False], [text(r) for r in results]
        async with httpx2.AsyncClient(timeout=30) as http:  # their sessions ended or are idle: room again
            assert (await http.post(proxy.url, json=INIT, headers=made_up(9))).status_code == 200
