"""Where mcp-guard's CPU goes under load: py-spy samples grouped by the code they land in.

py-spy records the running proxy (no restart, no instrumentation) at `RATE_HZ` in raw (collapsed
stack) form while run.py keeps it busy. Each sample is attributed to the innermost frame that
belongs to one of `AREAS`, so a json.dumps called by pydantic called by the SDK counts as json,
and our own code counts only for the time spent in it, not in what it calls. Compiled code
(pydantic-core, httptools, uvloop's C loop) has no Python frame: its time lands on the Python
frame that called it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

RATE_HZ = 500
# (key, label, path pattern): a frame's file matching the pattern belongs to the area.
AREAS: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple(
    (key, label, re.compile(pattern))
    for key, label, pattern in (
        ("http_client", "HTTP client to the upstream (httpx2, httpcore2, h11)", r"(^|/)(httpx2|httpcore2|h11)/"),
        ("sdk_server", "SDK server side (mcp/server, mcp_types)", r"(^|/)(mcp/server|mcp/types|mcp_types)/"),
        ("sdk_client", "SDK client side (mcp/client, mcp/shared)", r"(^|/)mcp/(client|shared)/"),
        ("asgi", "uvicorn, starlette", r"(^|/)(uvicorn|starlette|sse_starlette)/"),
        ("scheduling", "anyio, asyncio scheduling", r"(^|/)(anyio|asyncio|uvloop)/"),
        ("pydantic", "pydantic", r"(^|/)(pydantic|pydantic_core)/"),
        ("json", "json", r"(^|/)json/"),
        ("mcp_guard", "mcp-guard's own code (proxy/)", r"(^|/)proxy/"),
    )
)
OTHER = ("other", "anything else (stdlib, other packages)")
_FRAME_FILE = re.compile(r"\(([^()]*?)(?::\d+)?\)$")


def py_spy() -> tuple[Path | None, str]:
    """The venv's py-spy, installed into the project venv (a dev tool) when missing; else (None, why)."""
    found = Path(sys.executable).parent / "py-spy"
    if found.exists():
        return found, "found"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "py-spy"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not found.exists():
        return None, f"py-spy could not be installed: {(done.stderr or done.stdout).strip()[-300:]}"
    return found, "installed"


def area_of(frame: str) -> str | None:
    match = _FRAME_FILE.search(frame)
    path = match.group(1) if match else frame
    return next((key for key, _, pattern in AREAS if pattern.search(path)), None)


def attribute(raw: str) -> dict[str, Any]:
    """Samples per area from py-spy's raw output ("frame;frame;... count" per line, outermost first).

    Every stack starts in mcp-guard's own entry point and the event loop, so "other" stays near
    zero: a stdlib or third-party function counts for the area that called it.
    """
    areas: Counter[str] = Counter()
    hot: dict[str, Counter[str]] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        area, frame = next(((a, f) for f in reversed(frames) if (a := area_of(f)) is not None), (OTHER[0], frames[-1]))
        areas[area] += int(count)
        hot.setdefault(area, Counter())[frame] += int(count)
    total = sum(areas.values())
    labels = {key: label for key, label, _ in AREAS} | {OTHER[0]: OTHER[1]}
    return {
        "samples": total,
        "areas": {
            key: {
                "label": labels[key],
                "samples": areas[key],
                "share_pct": round(100 * areas[key] / max(total, 1), 1),
                # The frames an area's samples stopped in: where to look first.
                "top_frames": dict(hot.get(key, Counter()).most_common(3)),
            }
            for key in labels
        },
    }


async def record(spy: Path, pid: int, seconds: float, load: Callable[[float], Awaitable[Any]]) -> dict[str, Any]:
    """py-spy on `pid` for `seconds` at RATE_HZ while `load(duration)` keeps it busy a little longer."""
    with tempfile.TemporaryDirectory(prefix="mcp-guard-spy-") as tmp:
        out, log = Path(tmp) / "raw.txt", Path(tmp) / "py-spy.log"
        argv = [str(spy), "record", "-r", str(RATE_HZ), "-f", "raw", "-d", str(round(seconds)), "-p", str(pid)]
        with log.open("w") as log_fh:
            process = await anyio.open_process([*argv, "-o", str(out)], stdout=log_fh, stderr=log_fh)
            # The load starts with the recording and outlasts it, so no sample sees the proxy idle.
            await load(seconds + 1.5)
            code = await process.wait()
        if code != 0 or not out.exists():
            return {"error": f"py-spy exited {code}: {log.read_text().strip()[-300:]}"}
        result = attribute(out.read_text(encoding="utf-8"))
    return {"seconds": seconds, "rate_hz": RATE_HZ, **result}
