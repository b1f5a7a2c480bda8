"""mcp-guard benchmarks: proxy overhead, throughput and memory against a direct connection and peer proxies.

    .venv/bin/python benchmarks/run.py [--quick] [--no-fastmcp] [--profile] [--json FILE]

Starts the SMSAPI sandbox upstream, mcp-guard (`python -m proxy serve`, the full guard pipeline
on), a plain SDK forwarding proxy (benchmarks/plain_proxy.py) and fastmcp's proxy
(benchmarks/fastmcp_proxy.py, from a side venv made on first use) as real processes on loopback,
drives them with the real `mcp.Client`, prints a table and writes JSON (default
benchmarks/results/latest.json). The machine is shared and noisy, so every comparison is
interleaved and reported as a median and a ratio. `--quick` is a smoke test (seconds, not minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import breakdown  # noqa: E402
from inproc import guard_cost, sanitize_cost, shield_cost  # noqa: E402
from memory import memory_fresh  # noqa: E402
from peers import Stack, call_once, fastmcp_python, stack  # noqa: E402
from report import render  # noqa: E402

RESULTS = HERE / "results"
ERAS = {"legacy": "legacy", "2026": "auto"}
# The 1 MB result: the sandbox's largest list is get_contacts at about 5 KB, so the run first adds
# contacts with long ordinary descriptions (create_contact, straight to the upstream) until one
# get_contacts page of them is about 1 MiB as the client receives it (text + structuredContent).
LARGE_CONTACTS = 200
LARGE_DESCRIPTION_CHARS = 1720
LARGE_MARK = "Benchbulk"
LARGE_CALL = ("get_contacts", {"q": LARGE_MARK, "limit": 500})


@dataclass(frozen=True)
class Settings:
    latency_calls: int
    warmup: int
    concurrency: tuple[int, ...]
    rounds: int
    seconds: float
    sessions: int
    large_calls: int
    guard_reps: int
    sanitize_reps: int
    sanitize_sizes: tuple[str, ...]
    profile_seconds: float


# Bursts stay short: a target's clients sit idle while the other three run, and uvicorn closes
# keep-alive connections idle for 5 s, which would race the next round's first requests.
FULL = Settings(200, 20, (1, 8, 32), 3, 1.0, 200, 30, 1000, 7, ("1KB", "100KB", "1MB"), 8.0)
QUICK = Settings(30, 5, (1, 8, 32), 1, 0.5, 20, 5, 100, 1, ("1KB", "100KB"), 3.0)


# -- machine ----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    return {"client": time.process_time(), **{name: cpu_seconds(pid) for name, pid in pids.items()}}


def rotated(targets: tuple[str, ...], i: int) -> tuple[str, ...]:
    """The targets in a different order each round, so none always runs first or after a given other."""
    k = i % len(targets)
    return targets[k:] + targets[:k]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ratios(out: dict[str, Any], key: str, targets: tuple[str, ...]) -> None:
    """Each proxy's `key` over direct's, and mcp-guard's over each peer's."""
    for t in targets[1:]:
        out[t]["ratio"] = round(out[t][key] / out["direct"][key], 2)
    for peer in targets[2:]:
        out[f"guard_over_{peer}"] = round(out["guard"][key] / out[peer][key], 3)


# -- latency ----------------------------------------------------------------------------------------


async def latency(st: Stack, mode: str, settings: Settings) -> dict[str, Any]:
    """Sequential small calls, interleaved across direct and every proxy with the order rotated every round."""
    targets, urls = st.targets(), st.urls()
    samples: dict[str, list[float]] = {t: [] for t in targets}
    async with AsyncExitStack() as es:
        clients = {t: await es.enter_async_context(Client(urls[t], mode=mode)) for t in targets}
        for _ in range(settings.warmup):
            for t in targets:
                await call_once(clients[t])
        for i in range(settings.latency_calls):
            for t in rotated(targets, i):
                start = time.perf_counter()
                await call_once(clients[t])
                samples[t].append((time.perf_counter() - start) * 1000)
    out: dict[str, Any] = {
        t: {"median_ms": round(statistics.median(s), 2), "p99_ms": round(pct(s, 0.99), 2)} for t, s in samples.items()
    }
    ratios(out, "median_ms", targets)
    for t in targets[1:]:
        out[t]["added_ms"] = round(out[t]["median_ms"] - out["direct"]["median_ms"], 2)
    return out


# -- throughput -------------------------------------------------------------------------------------


async def burst(clients: list[Client], seconds: float, label: str = "") -> tuple[int, float]:
    """Every client calls in a loop until the deadline; returns (calls completed, elapsed seconds)."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker(client: Client) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            try:
                await call_once(client)
            except Exception as exc:
                exc.add_note(f"target: {label or 'unnamed'}, {len(clients)} clients")
                raise
            done += 1

    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(worker, client)
    return done, time.perf_counter() - start


async def throughput(st: Stack, workers: int, settings: Settings) -> dict[str, Any]:
    """Calls/s with `workers` concurrent clients (one Client each, default era), rounds interleaved.

    Also the CPU each process spends per call (this client process, the proxy, the upstream):
    on 2 shared cores throughput is CPU-bound, so these explain the ratios.
    """
    targets, urls, pids = st.targets(), st.urls(), st.pids()
    calls = dict.fromkeys(targets, 0)
    elapsed = dict.fromkeys(targets, 0.0)
    cpu = {t: dict.fromkeys(("client", *pids), 0.0) for t in targets}
    for r in range(settings.rounds):
        for t in rotated(targets, r):
            # Fresh clients for each burst, warmed just before it: a pool's idle connections would
            # otherwise wait out the other targets' bursts and meet the servers' 5 s keep-alive close.
            async with AsyncExitStack() as es:
                clients = [await es.enter_async_context(Client(urls[t])) for _ in range(workers)]
                await burst(clients, min(0.3, settings.seconds), t)  # warm connections and caches
                before = cpu_snapshot(pids)
                n, secs = await burst(clients, settings.seconds, t)
                for name, used in cpu_snapshot(pids).items():
                    cpu[t][name] += used - before[name]
            calls[t] += n
            elapsed[t] += secs
    out: dict[str, Any] = {}
    for t in targets:
        involved = ("client", "upstream") if t == "direct" else ("client", "upstream", t)
        per_call = {name: round(cpu[t][name] * 1000 / max(calls[t], 1), 2) for name in involved}
        out[t] = {"calls_per_s": round(calls[t] / elapsed[t], 1), "cpu_ms_per_call": per_call}
    ratios(out, "calls_per_s", targets)
    return out


# -- a 1 MB tool result -----------------------------------------------------------------------------


async def seed_large(upstream: str) -> None:
    """Contacts with long, ordinary descriptions, so one get_contacts page is about 1 MiB."""
    import bench_sanitize

    async with Client(upstream) as client:
        for i in range(LARGE_CONTACTS):
            description = bench_sanitize.fill(bench_sanitize.PROSE, LARGE_DESCRIPTION_CHARS, start=i * 100)
            contact = {
                "phone_number": f"+48 601 {i:06d}",
                "first_name": "Anna",
                "last_name": f"{LARGE_MARK} {i}",
                "description": description[:LARGE_DESCRIPTION_CHARS],
                "source": "benchmark",
            }
            await call_once(client, "create_contact", contact)


async def large_result(st: Stack, settings: Settings) -> dict[str, Any]:
    """The 1 MiB get_contacts page, 2026 era, sequential, interleaved across direct and every proxy.

    2026 era only: the handshake-era direct response is one SSE event, and the SDK client refuses
    SSE events over 1 MiB (`max_sse_event_size`), so the direct call of the legacy era fails.
    """
    targets, urls = st.targets(), st.urls()
    tool, arguments = LARGE_CALL
    samples: dict[str, list[float]] = {t: [] for t in targets}
    sizes: dict[str, dict[str, int]] = {}
    async with AsyncExitStack() as es:
        clients = {t: await es.enter_async_context(Client(urls[t])) for t in targets}
        for t in targets:
            result = await call_once(clients[t], tool, arguments)
            text = result.content[0].text if result.content and result.content[0].type == "text" else ""
            wire = result.model_dump_json(by_alias=True, exclude_none=True)
            sizes[t] = {"text_bytes": len(text.encode()), "result_bytes": len(wire.encode())}
        for i in range(settings.large_calls):
            for t in rotated(targets, i):
                start = time.perf_counter()
                await call_once(clients[t], tool, arguments)
                samples[t].append((time.perf_counter() - start) * 1000)
    out: dict[str, Any] = {
        "tool": tool,
        "arguments": arguments,
        "era": "2026",
        **{t: {"median_ms": round(statistics.median(s), 2), **sizes[t]} for t, s in samples.items()},
    }
    ratios(out, "median_ms", targets)
    return out


# -- profile ----------------------------------------------------------------------------------------


async def profile_guard(st: Stack, spy: Path, seconds: float) -> dict[str, Any]:
    """py-spy on mcp-guard while 8 clients (2026 era) call get_profile."""
    async with AsyncExitStack() as es:
        clients = [await es.enter_async_context(Client(st.guard.url)) for _ in range(8)]
        await burst(clients, 0.3)

        async def load(duration: float) -> None:
            await burst(clients, duration)

        return await breakdown.record(spy, st.guard.popen.pid, seconds, load)


# -- the run ----------------------------------------------------------------------------------------


def run_all(settings: Settings, *, fastmcp: bool, profile: bool) -> dict[str, Any]:
    report: dict[str, Any] = {"machine": machine(), "settings": settings.__dict__}
    started = time.perf_counter()
    peer, why = fastmcp_python() if fastmcp else (None, "skipped (--no-fastmcp)")
    report["fastmcp"] = {"available": peer is not None, "note": why}
    progress(started, f"fastmcp: {why}")
    with tempfile.TemporaryDirectory(prefix="mcp-guard-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "mem").mkdir()
        progress(started, f"memory: {settings.sessions} sessions, one credential and distinct ones")
        report["memory"] = memory_fresh(workdir / "mem", settings.sessions)
        with stack(workdir, peer) as st:
            report["latency"] = {}
            for era, mode in ERAS.items():
                progress(started, f"latency: {era}")
                report["latency"][era] = anyio.run(latency, st, mode, settings)
            report["throughput"] = {}
            for n in settings.concurrency:
                progress(started, f"throughput: {n} clients")
                report["throughput"][str(n)] = anyio.run(throughput, st, n, settings)
            progress(started, "a 1 MB tool result")
            anyio.run(seed_large, st.upstream.url)
            report["large_result"] = anyio.run(large_result, st, settings)
            if profile:
                progress(started, f"profile: py-spy on mcp-guard for {settings.profile_seconds:g} s")
                spy, why = breakdown.py_spy()
                report["profile"] = (
                    anyio.run(profile_guard, st, spy, settings.profile_seconds) if spy else {"error": why}
                )
            progress(started, "guard pipeline in-process")
            report["guard_inprocess"] = guard_cost(workdir / "policy.yaml", settings.guard_reps)
    progress(started, "sanitise + envelope")
    report["sanitize"] = sanitize_cost(settings.sanitize_reps, settings.sanitize_sizes)
    report["shield"] = shield_cost(settings.sanitize_reps, settings.sanitize_sizes)
    report["targets"] = targets(report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def progress(started: float, what: str) -> None:
    print(f"[{time.perf_counter() - started:6.1f} s] {what}", file=sys.stderr, flush=True)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 15's targets, and the earlier ones that still apply."""
    lat, thr, mem, big = report["latency"], report["throughput"], report["memory"], report["large_result"]
    top = str(max(int(k) for k in thr))
    pipeline: dict[str, float] = {}
    for row in report["guard_inprocess"]:  # the slower tool of each kind of rows
        pipeline[row["rows"]] = max(pipeline.get(row["rows"], 0.0), row["guard_plus_shield_us"])
    shield = report["shield"]
    n = mem["shared"]["guard"]["sessions"]
    rows: list[tuple[str, float | None, str, float]] = [
        ("mcp-guard/direct median latency, legacy", lat["legacy"]["guard"]["ratio"], "<=", 1.3),
        ("mcp-guard/direct median latency, 2026", lat["2026"]["guard"]["ratio"], "<=", 1.5),
        *((f"mcp-guard/direct throughput at {c} clients", thr[c]["guard"]["ratio"], ">=", 0.7) for c in ("8", "32")),
        (
            f"RSS, {n} sessions, distinct credentials, half per era (MB)",
            mem["distinct"]["guard"]["sessions_n_mb"],
            "<=",
            150,
        ),
        (f"RSS, {n} handshake-era sessions, one credential (MB)", mem["shared"]["guard"]["sessions_n_mb"], "<=", 150),
        (
            f"1 MB tool result ({big['direct']['result_bytes']} bytes), mcp-guard/direct median latency",
            big["guard"]["ratio"],
            "<=",
            2,
        ),
        *((f"guards over plain proxy, median latency, {era}", lat[era]["guard_over_plain"], "<=", 1.1) for era in ERAS),
        (f"guards over plain proxy, throughput at {top}", thr[top]["guard_over_plain"], ">=", round(1 / 1.1, 3)),
        ("in-process pipeline, 2 KB result, benign rows (ms)", pipeline["benign"] / 1000, "<=", 0.3),
        ("in-process pipeline, 2 KB result, hostile rows (ms)", pipeline["hostile"] / 1000, "<=", 0.3),
        ("1 MB through OutputShield, SMSAPI JSON plain (ms)", _case(shield, "shield json plain 1MB"), "<=", 50),
        ("1 MB through OutputShield, text plain (ms)", _case(shield, "shield text plain 1MB"), "<=", 50),
        (
            "1 MB sanitise+envelope, slowest result short of a stress case (ms)",
            _worst_1mb(report["sanitize"]),
            "<=",
            50,
        ),
        ("1 MB sanitise+envelope, slowest stress case (ms)", _worst_1mb(report["sanitize"], stress=True), "<=", 50),
    ]
    return [
        {
            "target": name,
            "measured": None if value is None else round(value, 3),
            "op": op,
            "limit": limit,
            "met": None if value is None else (value <= limit if op == "<=" else value >= limit),
        }
        for name, value, op, limit in rows
    ]


def _case(rows: list[dict[str, Any]], name: str) -> float | None:
    return next((r["median_ms"] for r in rows if r["case"] == name), None)


def _worst_1mb(rows: list[dict[str, Any]], stress: bool = False) -> float | None:
    """The slowest 1 MB case, among bench_sanitize's stress cases (`stress`) or among the others."""
    import bench_sanitize

    return max(
        (
            r["median_ms"]
            for r in rows
            if r["case"].endswith(" 1MB") and (r["case"].rsplit(" ", 1)[0] in bench_sanitize.STRESS) == stress
        ),
        default=None,
    )


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run with few samples")
    parser.add_argument("--no-fastmcp", action="store_true", help="leave fastmcp's proxy out (no side venv)")
    parser.add_argument("--profile", action="store_true", help="py-spy mcp-guard under 8 clients; CPU share by area")
    parser.add_argument("--json", dest="json_file", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    try:
        report = run_all(QUICK if args.quick else FULL, fastmcp=not args.no_fastmcp, profile=args.profile)
    except BaseExceptionGroup as group:
        # Every Client and task group adds a level of nesting, deeper than Python prints: show the errors.
        for leaf in _leaves(group):
            traceback.print_exception(leaf)
        return 1
    # The numbers first: a report that fails to render must not cost a run of minutes.
    args.json_file.parent.mkdir(parents=True, exist_ok=True)
    args.json_file.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(render(report))
    print(f"\nJSON: {args.json_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
