"""mcp-guard benchmarks: proxy overhead, throughput and memory against a direct connection and a plain proxy.

    .venv/bin/python benchmarks/run.py [--quick] [--json FILE]

Starts the SMSAPI sandbox upstream, mcp-guard (`python -m proxy serve`, the full guard pipeline
on) and a plain SDK forwarding proxy (benchmarks/plain_proxy.py) as real processes on loopback,
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
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for entry in (str(ROOT), str(HERE)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from inproc import guard_cost, sanitize_cost, shield_cost  # noqa: E402

from tests.harness import PY, SANDBOX, Proc, spawn, write_policy  # noqa: E402

RESULTS = HERE / "results"
TOOL = "get_profile"  # a small read: no confirmation, every other guard runs
TARGETS = ("direct", "guard", "plain")
ERAS = {"legacy": "legacy", "2026": "auto"}
SCOPES = ["sms", "contacts", "profile", "subuser", "short_url", "hlr", "blacklist", "sms_sender"]


@dataclass(frozen=True)
class Settings:
    latency_calls: int
    warmup: int
    concurrency: tuple[int, ...]
    rounds: int
    seconds: float
    sessions: int
    guard_reps: int
    sanitize_reps: int
    sanitize_sizes: tuple[str, ...]


# Bursts stay short: a target's clients sit idle while the other two run, and uvicorn closes
# keep-alive connections idle for 5 s, which would race the next round's first requests.
FULL = Settings(200, 20, (1, 8, 32), 2, 1.5, 200, 1000, 7, ("1KB", "100KB", "1MB"))
QUICK = Settings(30, 5, (1, 8, 32), 1, 0.5, 20, 100, 1, ("1KB", "100KB"))


# -- machine and processes ------------------------------------------------------------------------


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


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    guard: Proc
    plain: Proc

    def urls(self) -> dict[str, str]:
        return {"direct": self.upstream.url, "guard": self.guard.url, "plain": self.plain.url}

    def pids(self) -> dict[str, int]:
        return {"upstream": self.upstream.popen.pid, "guard": self.guard.popen.pid, "plain": self.plain.popen.pid}


@contextmanager
def stack(workdir: Path) -> Iterator[Stack]:
    with spawn([*SANDBOX, "--port", "0"]) as upstream:
        policy = guard_policy(workdir / "policy.yaml", upstream.url)
        with spawn([PY, "-m", "proxy", "serve", "--policy", str(policy), "--port", "0"]) as guard:
            with spawn([PY, str(HERE / "plain_proxy.py"), "--upstream", upstream.url, "--port", "0"]) as plain:
                yield Stack(upstream, guard, plain)


# -- latency ----------------------------------------------------------------------------------------


async def call_once(client: Client) -> None:
    result = await client.call_tool(TOOL, {})
    if result.is_error:
        raise RuntimeError(f"{TOOL} failed: {result.content}")


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(urls: dict[str, str], mode: str, settings: Settings) -> dict[str, Any]:
    """Sequential calls, interleaved direct/guard/plain with the order rotated every round."""
    samples: dict[str, list[float]] = {t: [] for t in TARGETS}
    async with AsyncExitStack() as stack:
        clients = {t: await stack.enter_async_context(Client(urls[t], mode=mode)) for t in TARGETS}
        for _ in range(settings.warmup):
            for t in TARGETS:
                await call_once(clients[t])
        for i in range(settings.latency_calls):
            for t in TARGETS[i % 3 :] + TARGETS[: i % 3]:
                start = time.perf_counter()
                await call_once(clients[t])
                samples[t].append((time.perf_counter() - start) * 1000)
    out: dict[str, Any] = {
        t: {"median_ms": round(statistics.median(s), 2), "p99_ms": round(pct(s, 0.99), 2)} for t, s in samples.items()
    }
    direct = out["direct"]["median_ms"]
    for t in ("guard", "plain"):
        out[t]["ratio"] = round(out[t]["median_ms"] / direct, 2)
        out[t]["added_ms"] = round(out[t]["median_ms"] - direct, 2)
    out["guard_over_plain"] = round(out["guard"]["median_ms"] / out["plain"]["median_ms"], 3)
    return out


# -- throughput -------------------------------------------------------------------------------------


async def burst(clients: list[Client], seconds: float) -> tuple[int, float]:
    """Every client calls in a loop until the deadline; returns (calls completed, elapsed seconds)."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker(client: Client) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call_once(client)
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
    urls, pids = st.urls(), st.pids()
    calls = dict.fromkeys(TARGETS, 0)
    elapsed = dict.fromkeys(TARGETS, 0.0)
    cpu = {t: dict.fromkeys(("client", *pids), 0.0) for t in TARGETS}
    async with AsyncExitStack() as stack:
        clients = {t: [await stack.enter_async_context(Client(urls[t])) for _ in range(workers)] for t in TARGETS}
        for t in TARGETS:
            await burst(clients[t], min(0.3, settings.seconds))  # warm connections and caches
        for r in range(settings.rounds):
            for t in TARGETS[r % 3 :] + TARGETS[: r % 3]:
                before = cpu_snapshot(pids)
                n, secs = await burst(clients[t], settings.seconds)
                for name, used in cpu_snapshot(pids).items():
                    cpu[t][name] += used - before[name]
                calls[t] += n
                elapsed[t] += secs
    out: dict[str, Any] = {}
    for t in TARGETS:
        involved = ("client", "upstream") if t == "direct" else ("client", "upstream", t)
        per_call = {name: round(cpu[t][name] * 1000 / max(calls[t], 1), 2) for name in involved}
        out[t] = {"calls_per_s": round(calls[t] / elapsed[t], 1), "cpu_ms_per_call": per_call}
    direct = out["direct"]["calls_per_s"]
    for t in ("guard", "plain"):
        out[t]["ratio"] = round(out[t]["calls_per_s"] / direct, 2)
    out["guard_over_plain"] = round(out["guard"]["calls_per_s"] / out["plain"]["calls_per_s"], 3)
    return out


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    return {"client": time.process_time(), **{name: cpu_seconds(pid) for name, pid in pids.items()}}


# -- memory -----------------------------------------------------------------------------------------


@asynccontextmanager
async def open_sessions(url: str, count: int) -> AsyncIterator[None]:
    """`count` handshake-era clients, each initialized, one call made, and held open."""
    ready = anyio.Semaphore(0)
    release = anyio.Event()
    opening = anyio.Semaphore(16)

    async def hold() -> None:
        async with opening:
            client = Client(url, mode="legacy")
            await client.__aenter__()
            try:
                await call_once(client)
            except BaseException:
                await client.__aexit__(None, None, None)
                raise
        try:
            ready.release()
            await release.wait()
        finally:
            await client.__aexit__(None, None, None)

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(hold)
        for _ in range(count):
            await ready.acquire()
        try:
            yield
        finally:
            release.set()


async def memory(url: str, pid: int, sessions: int) -> dict[str, Any]:
    idle = rss_mb(pid)
    async with open_sessions(url, 1):
        one = rss_mb(pid)
    async with open_sessions(url, sessions):
        many = rss_mb(pid)
    return {
        "idle_mb": idle,
        "sessions_1_mb": one,
        f"sessions_{sessions}_mb": many,
        "sessions": sessions,
        "per_session_kb": round((many - one) * 1024 / max(sessions - 1, 1), 1),
    }


def memory_fresh(workdir: Path, sessions: int) -> dict[str, Any]:
    """RSS of a fresh mcp-guard and a fresh plain proxy (not grown by the load tests) as sessions open."""
    out: dict[str, Any] = {}
    with stack(workdir) as st:
        for name, proc in (("guard", st.guard), ("plain", st.plain)):
            out[name] = anyio.run(memory, proc.url, proc.popen.pid, sessions)
    return out


# -- the run ----------------------------------------------------------------------------------------


def run_all(settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {"machine": machine(), "settings": settings.__dict__}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mcp-guard-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "mem").mkdir()
        progress(started, f"memory: {settings.sessions} handshake-era sessions")
        report["memory"] = memory_fresh(workdir / "mem", settings.sessions)
        with stack(workdir) as st:
            report["latency"] = {}
            for era, mode in ERAS.items():
                progress(started, f"latency: {era}")
                report["latency"][era] = anyio.run(latency, st.urls(), mode, settings)
            report["throughput"] = {}
            for n in settings.concurrency:
                progress(started, f"throughput: {n} clients")
                report["throughput"][str(n)] = anyio.run(throughput, st, n, settings)
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
    lat, thr, mem = report["latency"], report["throughput"], report["memory"]["guard"]
    top = str(max(int(k) for k in thr))
    pipeline: dict[str, float] = {}
    for row in report["guard_inprocess"]:  # the slower tool of each kind of rows
        pipeline[row["rows"]] = max(pipeline.get(row["rows"], 0.0), row["guard_plus_shield_us"])
    shield = report["shield"]
    rows: list[tuple[str, float | None, str, float]] = [
        *((f"proxied/direct median latency, {era}", lat[era]["guard"]["ratio"], "<=", 1.5) for era in ERAS),
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
        (f"throughput at {top} clients, proxied/direct", thr[top]["guard"]["ratio"], ">=", 0.6),
        (f"RSS with {mem['sessions']} sessions (MB)", mem[f"sessions_{mem['sessions']}_mb"], "<=", 150),
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


# -- output -----------------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"mcp-guard benchmarks  {m['date']}  nproc={m['nproc']}  cpu={m['cpu']}  python={m['python']}  "
        f"loadavg={m['load_avg_at_start']}  ({report['seconds']} s)",
        *_latency_lines(report["latency"]),
        *_throughput_lines(report["throughput"]),
        *_inprocess_lines(report),
        *_memory_lines(report["memory"]),
        "",
        "Targets",
    ]
    for t in report["targets"]:
        verdict = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT MET")
        lines.append(f"  [{verdict:>7}] {t['target']}: {t['measured']} (target {t['op']} {t['limit']:g})")
    return "\n".join(lines)


def _latency_lines(latency: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Latency, one small tools/call ({TOOL}), sequential, interleaved; median/p99 ms",
        f"{'era':<8}{'direct':>15}{'mcp-guard':>15}{'ratio':>7}{'+ms':>7}{'plain proxy':>15}{'ratio':>7}"
        f"{'guard/plain':>12}",
    ]
    for era, row in latency.items():
        d, g, p = row["direct"], row["guard"], row["plain"]
        lines.append(
            f"{era:<8}{_mp(d):>15}{_mp(g):>15}{g['ratio']:>7.2f}{g['added_ms']:>7.2f}{_mp(p):>15}{p['ratio']:>7.2f}"
            f"{row['guard_over_plain']:>12.3f}"
        )
    return lines


def _mp(row: dict[str, Any]) -> str:
    return f"{row['median_ms']:.2f}/{row['p99_ms']:.1f}"


def _throughput_lines(throughput: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Throughput, calls/s, 2026 era, one Client per worker",
        f"{'clients':<8}{'direct':>9}{'mcp-guard':>11}{'ratio':>7}{'plain':>9}{'ratio':>7}{'guard/plain':>12}"
        "   CPU ms per call: direct | mcp-guard | plain",
    ]
    for n, row in throughput.items():
        d, g, p = row["direct"], row["guard"], row["plain"]
        lines.append(
            f"{n:<8}{d['calls_per_s']:>9.1f}{g['calls_per_s']:>11.1f}{g['ratio']:>7.2f}{p['calls_per_s']:>9.1f}"
            f"{p['ratio']:>7.2f}{row['guard_over_plain']:>12.3f}   {_cpu(d)} | {_cpu(g)} | {_cpu(p)}"
        )
    return lines


def _cpu(row: dict[str, Any]) -> str:
    short = {"client": "c", "upstream": "u", "guard": "g", "plain": "p"}
    return " ".join(f"{short[k]}{v:.2f}" for k, v in row["cpu_ms_per_call"].items())


def _inprocess_lines(report: dict[str, Any]) -> list[str]:
    lines = ["", "Guard pipeline in-process, no network; median µs per call (guard = visibility+pins+limits+trifecta)"]
    for row in report["guard_inprocess"]:
        lines.append(
            f"  {row['tool']:<13}{row['rows']:<8}{row['result_chars']:>5} chars  guard {row['guard_us']:>6.1f}  "
            f"shield {row['shield_us']:>7.1f}  guard+shield {row['guard_plus_shield_us']:>7.1f} "
            f"(best {row['guard_plus_shield_best_us']:>6.1f})  "
            f"(then record+audit {row['record_and_audit_us']:.1f})"
        )
    sizes = [s for s in ("1KB", "100KB", "1MB") if any(r["case"].endswith(" " + s) for r in report["sanitize"])]
    lines += [
        "",
        "Sanitise + envelope, median ms (bench_sanitize: pure functions, no cap; shield: OutputShield.text,"
        " policy defaults)",
        "  " + f"{'case':<30}" + "".join(f"{s:>10}" for s in sizes),
    ]
    table: dict[str, dict[str, float]] = {}
    for row in report["sanitize"] + report["shield"]:
        kind, size = row["case"].rsplit(" ", 1)
        table.setdefault(kind, {})[size] = row["median_ms"]
    for kind, by_size in table.items():
        lines.append(f"  {kind:<30}" + "".join(f"{by_size.get(s, float('nan')):>10.2f}" for s in sizes))
    return lines


def _memory_lines(memory: dict[str, Any]) -> list[str]:
    n = memory["guard"]["sessions"]
    lines = [
        "",
        "Resident memory (VmRSS) of a fresh process, MB, with handshake-era sessions open "
        "(2026-era clients hold no session)",
        f"  {'':<13}{'idle':>8}{'1 session':>11}{f'{n} sessions':>14}{'KB/session':>12}",
    ]
    for name, label in (("guard", "mcp-guard"), ("plain", "plain proxy")):
        row = memory[name]
        lines.append(
            f"  {label:<13}{row['idle_mb']:>8.1f}{row['sessions_1_mb']:>11.1f}{row[f'sessions_{n}_mb']:>14.1f}"
            f"{row['per_session_kb']:>12.1f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run with few samples")
    parser.add_argument("--json", dest="json_file", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    report = run_all(QUICK if args.quick else FULL)
    print(render(report))
    args.json_file.parent.mkdir(parents=True, exist_ok=True)
    args.json_file.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nJSON: {args.json_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
