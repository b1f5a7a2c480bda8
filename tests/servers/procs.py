"""Process helpers for end-to-end tests: start servers as real subprocesses, learn their URL.

An HTTP server announces its URL on stderr once its socket is live (`proxy.netutil`). We
read stderr on a thread until the announce line appears — bounded by a timeout, never by
sleeps — and keep draining it afterwards so a chatty child can never block on a full pipe.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from mcp import StdioServerParameters

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVERS_DIR = Path(__file__).resolve().parent
ANY_URL = re.compile(r"(https?://\S+)")
STDERR_LINES_KEPT = 200


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment plus the repo root on PYTHONPATH (the project is not installed)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def stdio_params(args: Sequence[str], env: Mapping[str, str] | None = None) -> StdioServerParameters:
    """Launch `python ARGS` as a stdio MCP server from the repo root."""
    return StdioServerParameters(
        command=sys.executable, args=list(args), cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT), **(env or {})}
    )


@dataclass
class ServerProcess:
    """A running server subprocess and the URL it announced."""

    popen: subprocess.Popen[bytes]
    url: str = ""
    _stderr: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=STDERR_LINES_KEPT))
    _pump: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr_text(self) -> str:
        return "".join(self._stderr)

    async def wait(self, seconds: float) -> int:
        """Wait for exit; raises subprocess.TimeoutExpired after `seconds`."""
        return await anyio.to_thread.run_sync(lambda: self.popen.wait(seconds))

    async def stop(self, grace: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit within `grace` seconds; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            code = await self.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = await self.wait(grace)
        if self._pump is not None:
            # The pump reaches EOF once the child is gone; joining makes stderr_text() complete.
            await anyio.to_thread.run_sync(self._pump.join, grace)
        return code


def _pump_stderr(proc: ServerProcess, pattern: re.Pattern[str], found: threading.Event) -> None:
    """Thread body: keep every stderr line, note the first announce match, run until EOF."""
    assert proc.popen.stderr is not None
    with proc.popen.stderr as stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace")
            proc._stderr.append(line)
            match = pattern.search(line)
            if match and not found.is_set():
                proc.url = match.group(1)
                found.set()
    found.set()  # EOF: the child died before announcing; the waiter sees url == ""


async def spawn_http(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 20.0,  # noqa: ASYNC109 - bounds only the announce wait, not the server's life
    pattern: re.Pattern[str] = ANY_URL,
    cwd: Path = REPO_ROOT,
) -> ServerProcess:
    """Start `argv` and wait until it announces a URL on stderr (first `pattern` group).

    Raises RuntimeError (with the child's stderr) if it exits or stays silent past `timeout`;
    the child is stopped in that case. The caller owns `stop()` otherwise.
    """
    popen = await anyio.to_thread.run_sync(
        lambda: subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=python_env(env),
            cwd=cwd,
        )
    )
    proc = ServerProcess(popen)
    found = threading.Event()
    proc._pump = threading.Thread(target=_pump_stderr, args=(proc, pattern, found), daemon=True)
    proc._pump.start()
    announced = await anyio.to_thread.run_sync(found.wait, timeout)
    if not announced or not proc.url:
        await proc.stop()
        raise RuntimeError(f"{argv!r} did not announce a URL within {timeout}s:\n{proc.stderr_text()}")
    return proc


@contextlib.asynccontextmanager
async def http_server(argv: Sequence[str], **kwargs: Any) -> AsyncIterator[ServerProcess]:
    """`spawn_http` as a context manager that always stops the process."""
    proc = await spawn_http(argv, **kwargs)
    try:
        yield proc
    finally:
        with anyio.CancelScope(shield=True):
            await proc.stop()


def read_record(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON lines of a call record; an absent file is an empty record."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def tool_calls(path: str | os.PathLike[str], tool: str | None = None) -> list[dict[str, Any]]:
    """The `tools/call` lines of a record, optionally only for one tool."""
    return [e for e in read_record(path) if "tool" in e and "event" not in e and tool in (None, e["tool"])]


async def wait_for_record(
    path: str | os.PathLike[str],
    predicate: Callable[[dict[str, Any]], bool],
    *,
    count: int = 1,
    seconds: float = 5.0,
    poll: float = 0.02,
) -> dict[str, Any]:
    """The `count`-th record line matching `predicate`, polling for up to `seconds` (then TimeoutError).

    For events another process writes asynchronously (e.g. a handler noticing cancellation).
    """
    with anyio.fail_after(seconds):
        while True:
            matches = [entry for entry in read_record(path) if predicate(entry)]
            if len(matches) >= count:
                return matches[count - 1]
            await anyio.sleep(poll)
