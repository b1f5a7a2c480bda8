"""`mcp-guard pin`: write the lockfile, show what drifted, approve single tools.

Exit codes: 0 done (or, with --diff, nothing drifted), 1 something drifted (--diff), 2 an error.
What an upstream wrote (names, descriptions) is printed with control and bidi characters escaped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mcp.types as types

from proxy.pinning import (
    LockError,
    Lockfile,
    Pins,
    definition,
    describe_drift,
    read_lockfile,
    relock,
    terminal_safe,
    write_lockfile,
)
from proxy.policy import LoadedPolicy

EXIT_DRIFT = 1
EXIT_ERROR = 2


async def pin(loaded: LoadedPolicy, diff: bool, approve: list[str], store_key: bytes | None = None) -> int:
    from proxy.server import Gateway
    from proxy.upstream import UpstreamUnavailable

    path = loaded.lockfile_path
    lock = Lockfile()
    if path.exists():
        try:
            lock = read_lockfile(path)
        except LockError as exc:
            print(f"mcp-guard: {exc}", file=sys.stderr)
            return EXIT_ERROR
    elif diff or approve:
        print(f"mcp-guard: no lockfile at {path}; run `mcp-guard pin --policy {loaded.path}` first", file=sys.stderr)
        return EXIT_ERROR
    listed: dict[str, dict[str, types.Tool]] = {}
    async with Gateway([loaded], store_key=store_key).running() as gateway:
        pipeline = gateway.pipeline(loaded.policy.team)
        for server in pipeline.pool.servers:
            try:
                listed[server] = await pipeline.pool.get(server).list_all_tools()
            except UpstreamUnavailable as exc:
                print(f"mcp-guard: {exc}", file=sys.stderr)
                return EXIT_ERROR
    if diff:
        return _diff(lock, listed)
    if approve:
        return _approve(lock, listed, approve, path)
    for server, tools in listed.items():
        lock = relock(lock, server, tools.values())
    lock = Lockfile(upstreams={s: p for s, p in lock.upstreams.items() if s in listed})
    write_lockfile(path, lock)
    count = sum(len(tools) for tools in listed.values())
    print(f"mcp-guard: pinned {count} tools of {len(listed)} upstream(s) in {path}")
    return 0


def _diff(lock: Lockfile, listed: dict[str, dict[str, types.Tool]]) -> int:
    pins = Pins(lock)
    drifted = False
    for server, tools in listed.items():
        for name, tool in sorted(tools.items()):
            status = pins.status(server, tool)
            if status == "pinned":
                continue
            drifted = True
            shown = terminal_safe(f"{server}:{name}")
            if status == "unpinned":
                print(f"{shown}: new, not pinned")
                continue
            pinned = pins.pinned(server, name)
            assert pinned is not None
            print(f"{shown}: changed since it was pinned")
            for line in describe_drift(pinned.definition, definition(tool)):
                print(f"  {line}")
        gone = set(lock.upstreams.get(server).tools if server in lock.upstreams else ()) - set(tools)
        for name in sorted(gone):
            drifted = True
            print(f"{terminal_safe(f'{server}:{name}')}: pinned, no longer listed")
    if not drifted:
        print("mcp-guard: no drift; every listed tool matches its pin")
    return EXIT_DRIFT if drifted else 0


def _approve(lock: Lockfile, listed: dict[str, dict[str, types.Tool]], names: list[str], path: Path) -> int:
    unknown = [n for n in names if not any(_qualified(n, s) in tools for s, tools in listed.items())]
    if unknown:
        shown = ", ".join(terminal_safe(n) for n in unknown)
        print(f"mcp-guard: no upstream lists {shown}; nothing was approved", file=sys.stderr)
        return EXIT_ERROR
    for server, tools in listed.items():
        only = {_qualified(n, server) for n in names if _qualified(n, server) in tools}
        if only:
            lock = relock(lock, server, tools.values(), only=only)
    write_lockfile(path, lock)
    print(f"mcp-guard: re-pinned {', '.join(terminal_safe(n) for n in names)} in {path}")
    return 0


def _qualified(name: str, server: str) -> str:
    """`server:tool` or `server__tool` (a multi-upstream exposed name) as the upstream's own tool name."""
    for separator in (":", "__"):
        prefix = server + separator
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name
