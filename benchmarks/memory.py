"""Resident memory (VmRSS) of fresh proxies while many clients keep sessions open.

Two cases, each on its own fresh stack so neither process has been grown by the other or by the
load tests:

- shared credential: handshake-era clients with no Authorization header. A proxy holds one server
  session per client and one upstream connection for all of them.
- distinct credentials: half handshake-era, half 2026-era clients, each with its own
  `Authorization: Bearer` token. mcp-guard passes the caller's credential through by default, so
  every token gets its own upstream connection (client, session, HTTP client): this is what a
  team of real users costs. 2026-era clients hold no server session, only that connection.

Every client is initialized (or discovers), makes one tools/call and stays open while RSS is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from peers import call_once, stack


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


@asynccontextmanager
async def connect(url: str, mode: str, token: str | None) -> AsyncIterator[Client]:
    """A Client in `mode`, sending `Authorization: Bearer <token>` on every request when given one."""
    if token is None:
        async with Client(url, mode=mode) as client:
            yield client
        return
    # The SDK takes headers only through an HTTP client of our own (which it then leaves to us to
    # close); the timeouts are the SDK default client's.
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=timeout) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


@asynccontextmanager
async def open_sessions(url: str, plan: Sequence[tuple[str, str | None]]) -> AsyncIterator[None]:
    """One client per (mode, token) of `plan`, each connected, one call made, and held open."""
    ready = anyio.Semaphore(0)
    release = anyio.Event()
    opening = anyio.Semaphore(16)  # a burst of 200 handshakes at once only measures the backlog

    async def hold(mode: str, token: str | None) -> None:
        async with AsyncExitStack() as held:
            async with opening:
                client = await held.enter_async_context(connect(url, mode, token))
                await call_once(client)
            ready.release()
            await release.wait()

    async with anyio.create_task_group() as tg:
        for mode, token in plan:
            tg.start_soon(hold, mode, token)
        for _ in plan:
            await ready.acquire()
        try:
            yield
        finally:
            release.set()


async def _measure(
    url: str, pid: int, one: list[tuple[str, str | None]], many: list[tuple[str, str | None]]
) -> dict[str, Any]:
    idle = rss_mb(pid)
    async with open_sessions(url, one):
        first = rss_mb(pid)
    async with open_sessions(url, many):
        loaded = rss_mb(pid)
    # Per session from the second on: the first call also pays for imports and caches warmed once.
    return {
        "idle_mb": idle,
        "sessions_1_mb": first,
        "sessions_n_mb": loaded,
        "sessions": len(many),
        "per_session_kb": round((loaded - first) * 1024 / max(len(many) - 1, 1), 1),
    }


def shared_plan(sessions: int) -> list[tuple[str, str | None]]:
    return [("legacy", None)] * sessions


def distinct_plan(sessions: int) -> list[tuple[str, str | None]]:
    """Half handshake-era, half 2026-era (`auto`), every client with a token of its own."""
    return [("legacy" if i % 2 == 0 else "auto", f"bench-credential-{i:04d}") for i in range(1, sessions + 1)]


def memory_fresh(workdir: Path, sessions: int) -> dict[str, Any]:
    """VmRSS of mcp-guard and the plain proxy, fresh, with `sessions` clients on one credential, then distinct ones.

    fastmcp is left out: its 200 sessions take a minute to open and close on 2 cores, and no
    target concerns its memory.
    """
    out: dict[str, Any] = {}
    cases = {
        "shared": (shared_plan(1), shared_plan(sessions)),
        # The single session's token is not among the many, so all of them open a new upstream connection.
        "distinct": ([("legacy", "bench-credential-0000")], distinct_plan(sessions)),
    }
    for case, (one, many) in cases.items():
        (workdir / case).mkdir(exist_ok=True)
        with stack(workdir / case, None) as st:
            out[case] = {
                name: anyio.run(_measure, proc.url, proc.popen.pid, one, many) for name, proc in st.proxies.items()
            }
    return out
