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
