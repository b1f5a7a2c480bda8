"""What `serve`, `stdio`, `pin` and `login` settle before they run: the team's OAuth grants, the
proxy keys, the shared state and its key, readable lockfiles, and one connection to every upstream.

Each failure is a `StartupError` phrased for the person who ran the command: `mcp-guard` prints
it as one line and exits 2, never with a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy import logs
from proxy.policy import LoadedPolicy

if TYPE_CHECKING:
    from proxy.auth import KeyRing


class StartupError(Exception):
    """A reason not to start, phrased for the person who ran the command."""


def stdio_grant(loaded: LoadedPolicy, store_key: bytes | None) -> None:
    """Under auth.mode oauth clients log in over HTTP; stdio has no client login, so it needs a grant
    of mcp-guard's own (`mcp-guard login`) for the federated upstream."""
    from proxy.oauth_client import grant_store

    policy = loaded.policy
    federated = policy.federated_upstream if policy.auth.mode == "oauth" else None
    if federated is not None and store_key is not None and not grant_store(loaded, federated, store_key).exists():
        raise StartupError(
            f"mcp-guard: {loaded.path} sets auth.mode oauth, whose clients log in over HTTP (`serve`); for stdio, "
            f"log mcp-guard itself in to '{federated}' first: `mcp-guard login --policy {loaded.path}`"
        )


def keyring(path: str, loaded: list[LoadedPolicy]) -> KeyRing:
    from proxy.auth import KeyRing, load_keys

    teams = [p.policy.team for p in loaded]
    if len(set(teams)) != len(teams):
        raise StartupError("mcp-guard: two --policy files name the same team")
    for p in loaded:
        if p.policy.auth.mode != "keys":
            raise StartupError(
                f"mcp-guard: {p.path} sets auth.mode {p.policy.auth.mode}; with --keys set auth: {{mode: keys}}"
            )
    ring = KeyRing(load_keys(Path(path)))
    for team in sorted(set(teams) - ring.teams()):
        print(f"mcp-guard: WARNING no key in {path} opens team '{team}'", file=sys.stderr)
    return ring


def policies_with_grants(
    loaded: list[LoadedPolicy], args: argparse.Namespace
) -> tuple[list[LoadedPolicy], bytes | None]:
    """Policies as their OAuth grants allow, and the key that opens the grants (None: no OAuth upstream)."""
    from proxy.grants import GrantError, store_key
    from proxy.oauth_client import oauth_servers, with_grants

    if not any(oauth_servers(p) for p in loaded):
        return loaded, None
    try:
        key = store_key(getattr(args, "store_key_file", None))
        return [with_grants(p, key) for p in loaded], key
    except GrantError as exc:
        raise StartupError(f"mcp-guard: {exc}") from None


def shared_state(
    loaded: list[LoadedPolicy], args: argparse.Namespace, *, need_key: bool = True
) -> tuple[Any, bytes | None]:
    """The state backend and request-state key `serve` runs with (SPEC §12)."""
    urls = {p.policy.state.url for p in loaded}
    url = getattr(args, "state", None) or (urls.pop() if len(urls) == 1 else None)
    if url is None and len(urls) > 1:
        raise StartupError("mcp-guard: the --policy files name different state.url; pass one --state")
    key = state_key(getattr(args, "state_key_file", None))
    if url is None:
        return None, key
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise StartupError("mcp-guard: --state takes a redis://, rediss:// or unix:// URL")
    if key is None and need_key:
        raise StartupError(
            "mcp-guard: shared state needs the key every replica seals request states with: "
            "--state-key-file FILE or MCP_GUARD_STATE_KEY (at least 32 bytes; it is never written to Redis)"
        )
    from proxy.redis_state import RedisState

    prefixes = {p.policy.state.prefix for p in loaded}
    return RedisState(url, prefix=prefixes.pop() if len(prefixes) == 1 else "mcp-guard"), key


def state_key(path: str | None) -> bytes | None:
    if path is not None:
        try:
            raw = Path(path).read_bytes().strip()
        except OSError as exc:
            raise StartupError(f"mcp-guard: cannot read --state-key-file {path}: {exc.strerror}") from None
    else:
        raw = os.environ.get("MCP_GUARD_STATE_KEY", "").strip().encode()
        if not raw:
            return None
    if len(raw) < 32:
        raise StartupError("mcp-guard: the state key must be at least 32 bytes of secret randomness")
    return raw


def run(fn: Any, *args: Any) -> Any:
    from proxy.netutil import run_async

    return run_async(fn, *args)


def read_lockfiles(loaded: list[LoadedPolicy]) -> None:
    """A lockfile that cannot be read stops start-up."""
    from proxy.pinning import LockError, read_lockfile

    for policy in loaded:
        if policy.lockfile_path.exists():
            try:
                read_lockfile(policy.lockfile_path)
            except LockError as exc:
                raise StartupError(f"mcp-guard: {exc}") from None


def warn_unpinned(loaded: list[LoadedPolicy]) -> None:
    """A missing lockfile is one warning: pinning is off."""
    for policy in loaded:
        if not policy.lockfile_path.exists():
            print(
                f"mcp-guard: WARNING no lockfile for team '{policy.policy.team}' ({policy.lockfile_path}): tool "
                f"pinning is off; run `mcp-guard pin --policy {policy.path}`",
                file=sys.stderr,
            )


async def probe(loaded: list[LoadedPolicy], store_key: bytes | None = None) -> tuple[str | None, frozenset[str] | None]:
    """Connect to every upstream once before serving: an unreachable one stops start-up.

    Returns the upstreams' instructions (with one team only) and the features they offer (None
    when one could not be asked): mcp-guard advertises only what some upstream offers.
    """
    from proxy.gateway import Gateway
    from proxy.server import offered_by
    from proxy.upstream_errors import UpstreamUnavailable

    gateway = Gateway(loaded, store_key=store_key)
    parts: list[str] = []
    features: set[str] | None = set()
    failure: str | None = None
    # Errors are raised after the task group closes, so they leave as themselves, not as a group.
    async with gateway.running():
        for team, pipeline in gateway.pipelines.items():
            for server in pipeline.pool.servers:
                if pipeline.opened_by_logins_only(server):
                    features = None  # only a client's own login opens it: asked on first use
                    continue
                try:
                    await pipeline.pool.get(server).session()
                except UpstreamUnavailable as exc:
                    if _unreachable(exc):
                        failure = f"mcp-guard: {exc} (team '{team}')"
                        break
                    print(f"mcp-guard: WARNING {logs.printable(str(exc))}; will retry on first use", file=sys.stderr)
                    features = None
                    continue
                if features is not None:
                    features |= offered_by(pipeline.pool.get(server).capabilities())
            # One instructions text answers every client's `initialize`, before mcp-guard knows its
            # team: an upstream's guidance to the team that chose it would reach every other team's
            # model too. With several teams, no upstream's instructions are passed on.
            if failure is None and len(loaded) == 1 and (text := await pipeline.instructions()) is not None:
                parts.append(text)
    if failure is not None:
        raise StartupError(failure)
    return "\n".join(parts) or None, frozenset(features) if features is not None else None


def _unreachable(exc: Exception) -> bool:
    detail = getattr(exc, "detail", "")
    return any(word in detail for word in ("refused", "unreachable", "timed out", "could not start", "connection"))
