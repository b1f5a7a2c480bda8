"""`mcp-guard pin`: write the lockfile, show what drifted, approve single tools, prompts or templates.

Exit codes: 0 done (or, with --diff, nothing drifted), 1 something drifted (--diff), 2 an error.
What an upstream wrote (names, descriptions) is printed with control and bidi characters escaped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mcp.shared.exceptions import MCPError

from proxy.logs import printable
from proxy.pinning import (
    KINDS,
    NOUN,
    Kind,
    LockError,
    Lockfile,
    Pins,
    definition,
    describe_drift,
    read_lockfile,
    relock,
    write_lockfile,
)
from proxy.policy import LoadedPolicy

EXIT_DRIFT = 1
EXIT_ERROR = 2


Listed = dict[str, dict[Kind, dict[str, Any]]]  # server -> kind -> name -> entry


async def pin(loaded: LoadedPolicy, diff: bool, approve: list[str], store_key: bytes | None = None) -> int:
    from proxy.gateway import Gateway
    from proxy.upstream_errors import UpstreamUnavailable

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
    listed: Listed = {}
    async with Gateway([loaded], store_key=store_key).running() as gateway:
        pipeline = gateway.pipeline(loaded.policy.team)
        for server in pipeline.pool.servers:
            conn = pipeline.pool.get(server)
            try:
                listed[server] = {
                    "tools": dict(await conn.list_all_tools()),
                    "prompts": await conn.list_all("prompts"),
                    "resource_templates": await conn.list_all("resource_templates"),
                }
            except (UpstreamUnavailable, MCPError) as exc:
                print(f"mcp-guard: {printable(str(exc))}", file=sys.stderr)
                return EXIT_ERROR
    if diff:
        return _diff(lock, listed)
    if approve:
        return _approve(lock, listed, approve, path)
    for server, kinds in listed.items():
        for kind, entries in kinds.items():
            lock = relock(lock, server, entries.values(), kind=kind)
    lock = Lockfile(upstreams={s: p for s, p in lock.upstreams.items() if s in listed})
    write_lockfile(path, lock)
    counted = ", ".join(f"{sum(len(kinds[kind]) for kinds in listed.values())} {NOUN[kind]}s" for kind in KINDS)
    print(f"mcp-guard: pinned {counted} of {len(listed)} upstream(s) in {path}")
    return 0


def _label(server: str, kind: Kind, name: str) -> str:
    shown = printable(f"{server}:{name}")
    return shown if kind == "tools" else f"{shown} ({NOUN[kind]})"


def _diff(lock: Lockfile, listed: Listed) -> int:
    pins = Pins(lock)
    drifted = False
    for server, kinds in listed.items():
        for kind, entries in kinds.items():
            for name, entry in sorted(entries.items()):
                status = pins.status(server, entry, kind)
                if status == "pinned":
                    continue
                drifted = True
                if status == "unpinned":
                    print(f"{_label(server, kind, name)}: new, not pinned")
                    continue
                pinned = pins.pinned(server, name, kind)
                assert pinned is not None
                print(f"{_label(server, kind, name)}: changed since it was pinned")
                for line in describe_drift(pinned.definition, definition(entry, kind), kind):
                    print(f"  {line}")
            known = lock.upstreams[server].of(kind) if server in lock.upstreams else {}
            for name in sorted(set(known) - set(entries)):
                drifted = True
                print(f"{_label(server, kind, name)}: pinned, no longer listed")
    if not drifted:
        print("mcp-guard: no drift; every listed tool, prompt and resource template matches its pin")
    return EXIT_DRIFT if drifted else 0


def _approve(lock: Lockfile, listed: Listed, names: list[str], path: Path) -> int:
    """Re-pin the named entries: a name approves whatever the upstream lists under it (a tool and a
    prompt may share one)."""
    unknown = [
        n
        for n in names
        if not any(_qualified(n, s) in entries for s, kinds in listed.items() for entries in kinds.values())
    ]
    if unknown:
        shown = ", ".join(printable(n) for n in unknown)
        print(f"mcp-guard: no upstream lists {shown}; nothing was approved", file=sys.stderr)
        return EXIT_ERROR
    for server, kinds in listed.items():
        for kind, entries in kinds.items():
            only = {_qualified(n, server) for n in names if _qualified(n, server) in entries}
            if only:
                lock = relock(lock, server, entries.values(), only=only, kind=kind)
    write_lockfile(path, lock)
    print(f"mcp-guard: re-pinned {', '.join(printable(n) for n in names)} in {path}")
    return 0


def _qualified(name: str, server: str) -> str:
    """`server:tool` or `server__tool` (a multi-upstream exposed name) as the upstream's own tool name."""
    for separator in (":", "__"):
        prefix = server + separator
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name
