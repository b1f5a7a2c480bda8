"""The processes a benchmark run measures: the upstream, mcp-guard and the peer proxies.

The SMSAPI sandbox upstream, mcp-guard with every guard on, the plain SDK forwarding proxy
(plain_proxy.py) and, when its side venv can be had, fastmcp's proxy (fastmcp_proxy.py). fastmcp
never enters the project's venv or dependencies: `fastmcp_python` makes benchmarks/.venv-peers
on first use and reports why not when it cannot (no network), so its rows read n/a instead of
failing the run.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mcp import Client  # noqa: E402
from mcp.types import CallToolResult  # noqa: E402

from tests.harness import PY, SANDBOX, Proc, spawn, write_policy  # noqa: E402

PEER_VENV = HERE / ".venv-peers"
# fastmcp 4.1.6 wants mcp>=2.3.0,<3: pinning the project's mcp keeps the SDK under both peers the same.
PEER_PACKAGES = ("fastmcp==4.1.6", "mcp==2.3.0")
SCOPES = ["sms", "contacts", "profile", "subuser", "short_url", "hlr", "blacklist", "sms_sender"]
LABELS = {"direct": "direct", "guard": "mcp-guard", "plain": "plain proxy", "fastmcp": "fastmcp"}
TOOL = "get_profile"  # a small read: no confirmation, every other guard runs


async def call_once(client: Client, tool: str = TOOL, arguments: dict[str, Any] | None = None) -> CallToolResult:
    """One tools/call that must succeed."""
    result = await client.call_tool(tool, arguments or {})
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {str(result.content)[:500]}")
    return result


def _has_peer_packages(python: Path) -> bool:
    check = (
        "import importlib.metadata as m, sys; "
        f"sys.exit(0 if [m.version(p.split('==')[0]) for p in {list(PEER_PACKAGES)!r}] == "
        f"[p.split('==')[1] for p in {list(PEER_PACKAGES)!r}] else 1)"
    )
    try:
        return subprocess.run([str(python), "-c", check], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def fastmcp_python() -> tuple[Path | None, str]:
    """The side venv's python with fastmcp installed, making the venv if needed; else (None, why not).

    The venv is built from this interpreter so fastmcp runs on the same Python as the others.
    """
    python = PEER_VENV / "bin" / "python"
    if python.exists() and _has_peer_packages(python):
        return python, f"fastmcp {PEER_PACKAGES[0].split('==')[1]} from {PEER_VENV.relative_to(ROOT)}"
    print(f"creating {PEER_VENV.relative_to(ROOT)} ({' '.join(PEER_PACKAGES)}), once", file=sys.stderr, flush=True)
    steps = [
        [sys.executable, "-m", "venv", str(PEER_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PEER_PACKAGES],
    ]
    for argv in steps:
        if argv[1:3] == ["-m", "venv"] and python.exists():
            continue  # a venv whose install failed last time: only the install is retried
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{' '.join(argv[:4])} failed: {exc}"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return None, f"{' '.join(argv[:4])} exited {done.returncode}: {' | '.join(tail)}"
    if not _has_peer_packages(python):
        return None, f"{PEER_VENV.relative_to(ROOT)} lacks {' '.join(PEER_PACKAGES)} after installing"
    return python, f"fastmcp {PEER_PACKAGES[0].split('==')[1]} from {PEER_VENV.relative_to(ROOT)} (just made)"


def guard_policy(path: Path, upstream_url: str) -> Path:
    """Every guard on: smsapi profile, every scope, pins, a limit that never trips, trifecta confirm, envelope."""
    return write_policy(
        path,
        {"smsapi": {"url": upstream_url, "profile": "smsapi"}},
        team="bench",
        scopes=SCOPES,
        tools={"allow": ["*"], "deny": ["clear_blacklist"]},
        confirm={"destructive": True, "tools": ["send_*"]},
        trifecta={"action": "confirm"},
        limits=[{"tools": ["*"], "per_minute": 10_000_000}, {"tools": ["send_sms*"], "max_recipients": 10}],
        pins=[{"tools": ["*"], "forbid": ["x_debug"]}],
        output={"envelope": True, "strip_html": True, "strip_markdown": True},
        audit={"path": "audit.jsonl"},
    )


@dataclass
class Stack:
    upstream: Proc
    proxies: dict[str, Proc]  # "guard", "plain" and, when its venv exists, "fastmcp"

    @property
    def guard(self) -> Proc:
        return self.proxies["guard"]

    def targets(self) -> tuple[str, ...]:
        return ("direct", *self.proxies)

    def urls(self) -> dict[str, str]:
        return {"direct": self.upstream.url, **{name: proc.url for name, proc in self.proxies.items()}}

    def pids(self) -> dict[str, int]:
        return {"upstream": self.upstream.popen.pid, **{name: p.popen.pid for name, p in self.proxies.items()}}


@contextmanager
def stack(workdir: Path, fastmcp: Path | None) -> Iterator[Stack]:
    """The upstream and every proxy in front of it, each a fresh process on an ephemeral port."""
    with spawn([*SANDBOX, "--port", "0"]) as upstream, ExitStack() as procs:
        policy = guard_policy(workdir / "policy.yaml", upstream.url)
        commands = {
            "guard": [PY, "-m", "proxy", "serve", "--policy", str(policy), "--port", "0"],
            "plain": [PY, str(HERE / "plain_proxy.py"), "--upstream", upstream.url, "--port", "0"],
        }
        if fastmcp is not None:
            commands["fastmcp"] = [str(fastmcp), str(HERE / "fastmcp_proxy.py"), "--upstream", upstream.url]
        proxies = {name: procs.enter_context(spawn(argv)) for name, argv in commands.items()}
        yield Stack(upstream, proxies)
