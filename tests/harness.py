"""Real processes for end-to-end tests: upstream servers and the proxy, on stdio or loopback HTTP.

Processes announce their URL on stderr once listening; we wait for that line (bounded), never sleep.
Every line a process writes to stderr is kept, so tests can assert that no secret ever appears.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mcp.types as types
import yaml
from mcp import Client, StdioServerParameters

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
SANDBOX = [PY, "-m", "proxy.backends.sandbox"]
FEATURES = [PY, str(REPO / "tests" / "servers" / "features.py")]
ELKS = [PY, str(REPO / "tests" / "servers" / "elks46.py")]
MODES = ["legacy", "auto"]
_URL = re.compile(r"https?://[^\s)]+")

# Every stderr line of every process started here, for the secrets-hygiene tests.
CAPTURED: list[str] = []


@dataclass
class Proc:
    popen: subprocess.Popen[str]
    url: str
    lines: list[str] = field(default_factory=list)

    def stop(self) -> None:
        stop_process(self.popen)


def stop_process(popen: subprocess.Popen[Any]) -> None:
    """Terminate a process we started, killing it if it does not end within 10 s."""
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def env_with(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


@contextmanager
def spawn(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 30) -> Iterator[Proc]:
    """Start a process that announces an http URL on stderr; yield once it is listening."""
    popen = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env_with(env),
        cwd=REPO,
    )
    proc = Proc(popen, "")
    found = threading.Event()

    def drain() -> None:
        assert popen.stderr is not None
        for line in popen.stderr:
            proc.lines.append(line)
            CAPTURED.append(line)
            if not found.is_set() and (m := _URL.search(line)):
                proc.url = m.group().rstrip("/.,") + ("/" if m.group().endswith("/") else "")
                found.set()
        found.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        if not found.wait(timeout) or not proc.url:
            raise RuntimeError(f"{argv} did not announce a URL: {''.join(proc.lines)[-2000:]}")
        yield proc
    finally:
        proc.stop()


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env_with(env), cwd=REPO, timeout=timeout, stdin=subprocess.DEVNULL
    )
    CAPTURED.extend(done.stdout.splitlines(True) + done.stderr.splitlines(True))
    return done


def write_policy(path: Path, upstreams: dict[str, Any], **sections: Any) -> Path:
    doc: dict[str, Any] = {"version": 1, "team": sections.pop("team", "test"), "upstreams": upstreams}
    doc.update(sections)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def proxy_stdio(policy: Path, env: dict[str, str] | None = None) -> StdioServerParameters:
    return StdioServerParameters(command=PY, args=["-m", "proxy", "stdio", "--policy", str(policy)], env=env_with(env))


@contextmanager
def proxy_http(policy: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[Proc]:
    with spawn([PY, "-m", "proxy", "serve", "--policy", str(policy), "--port", "0", *extra], env=env) as proc:
        yield proc


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def calls(path: Path, tool: str | None = None) -> list[dict[str, Any]]:
    return [r for r in records(path) if r.get("tool") and (tool is None or r["tool"] == tool) and "event" not in r]


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    """Poll a condition another process makes true; bounded, for facts we cannot be told about."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


async def all_tools(client: Client) -> list[types.Tool]:
    """Every tool over every page of tools/list."""
    tools: list[types.Tool] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if cursor is None:
            return tools


def jsonrpc_messages(response: Any) -> list[Any]:
    """The JSON-RPC messages of an HTTP answer (an httpx2 response), JSON or event stream."""
    if not response.content:
        return []
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        # SSE ends lines at CR, LF or CRLF only; str.splitlines would also split inside a JSON string
        # at U+0085 or U+2028, which an id may hold raw.
        lines = re.split(r"\r\n|\r|\n", response.text)
        return [json.loads(line[5:]) for line in lines if line.startswith("data:") and line[5:].strip()]
    return [response.json()]
