"""The printed tables of a benchmark run (run.py writes the same numbers as JSON)."""

from __future__ import annotations

from typing import Any

from peers import LABELS, TOOL

CPU_SHORT = {"client": "c", "upstream": "u", "guard": "g", "plain": "p", "fastmcp": "f"}


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"mcp-guard benchmarks  {m['date']}  nproc={m['nproc']}  cpu={m['cpu']}  python={m['python']}  "
        f"loadavg={m['load_avg_at_start']}  ({report['seconds']} s)",
        f"fastmcp peer: {report['fastmcp']['note']}",
        *_latency_lines(report["latency"]),
        *_throughput_lines(report["throughput"]),
        *_large_lines(report["large_result"]),
        *_inprocess_lines(report),
        *_memory_lines(report["memory"]),
        *_profile_lines(report.get("profile")),
        "",
        "Targets",
    ]
    for t in report["targets"]:
        verdict = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT MET")
        lines.append(f"  [{verdict:>7}] {t['target']}: {t['measured']} (target {t['op']} {t['limit']:g})")
    return "\n".join(lines)


PROXIES = ("guard", "plain", "fastmcp")


def _peers(row: dict[str, Any]) -> list[str]:
    """The proxies measured in a section (fastmcp is missing when its side venv is)."""
    return [t for t in PROXIES if t in row]


def _latency_lines(latency: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Latency, one small tools/call ({TOOL}), sequential, interleaved; median/p99 ms; ratio = over direct",
        f"{'era':<8}{'direct':>14}"
        + "".join(f"{LABELS[t]:>14}{'ratio':>7}" for t in PROXIES)
        + f"{'+ms guard':>10}{'guard/plain':>12}{'guard/fastmcp':>14}",
    ]
    for era, row in latency.items():
        cells = "".join(
            f"{_mp(row[t]):>14}{row[t]['ratio']:>7.2f}" if t in row else f"{'n/a':>14}{'':>7}" for t in PROXIES
        )
        lines.append(
            f"{era:<8}{_mp(row['direct']):>14}{cells}{row['guard']['added_ms']:>10.2f}"
            f"{row['guard_over_plain']:>12.3f}{_opt(row.get('guard_over_fastmcp'), 14, 3)}"
        )
    return lines


def _opt(value: float | None, width: int, digits: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def _mp(row: dict[str, Any]) -> str:
    return f"{row['median_ms']:.2f}/{row['p99_ms']:.1f}"


def _throughput_lines(throughput: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Throughput, calls/s, 2026 era, one Client per worker; ratio = over direct",
        f"{'clients':<8}{'direct':>9}"
        + "".join(f"{LABELS[t]:>12}{'ratio':>7}" for t in PROXIES)
        + f"{'guard/plain':>12} | CPU ms per call: direct | mcp-guard | plain proxy | fastmcp",
    ]
    for n, row in throughput.items():
        cells = "".join(
            f"{row[t]['calls_per_s']:>12.1f}{row[t]['ratio']:>7.2f}" if t in row else f"{'n/a':>12}{'':>7}"
            for t in PROXIES
        )
        cpu = " | ".join(_cpu(row[t]) for t in ("direct", *_peers(row)))
        lines.append(f"{n:<8}{row['direct']['calls_per_s']:>9.1f}{cells}{row['guard_over_plain']:>12.3f} | {cpu}")
    return lines


def _cpu(row: dict[str, Any]) -> str:
    return " ".join(f"{CPU_SHORT[k]}{v:.2f}" for k, v in row["cpu_ms_per_call"].items())


def _large_lines(big: dict[str, Any]) -> list[str]:
    args = ", ".join(f"{k}={v!r}" for k, v in big["arguments"].items())
    lines = [
        "",
        f"A 1 MB tool result: {big['tool']}({args}) over seeded contacts, {big['era']} era, sequential, interleaved",
        f"  {'':<13}{'median ms':>10}{'ratio':>7}{'result bytes':>14}{'text bytes':>12}",
    ]
    for t in ("direct", *PROXIES):
        row = big.get(t)
        if row is None:
            lines.append(f"  {LABELS[t]:<13}{'n/a':>10}")
            continue
        ratio = f"{row['ratio']:>7.2f}" if "ratio" in row else f"{'':>7}"
        lines.append(
            f"  {LABELS[t]:<13}{row['median_ms']:>10.2f}{ratio}{row['result_bytes']:>14}{row['text_bytes']:>12}"
        )
    return lines


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
    n = memory["shared"]["guard"]["sessions"]
    titles = {
        "shared": f"{n} handshake-era sessions, one credential (no Authorization header)",
        "distinct": f"{n} sessions with distinct credentials ({n // 2} handshake-era, {n - n // 2} 2026-era, "
        "each its own Bearer token)",
    }
    lines = ["", "Resident memory (VmRSS) of a fresh process, MB; each client made one call and stays open"]
    for case, title in titles.items():
        lines += [f"  {title}", f"    {'':<13}{'idle':>8}{'1 session':>11}{f'{n} sessions':>14}{'KB/session':>12}"]
        for name, row in memory[case].items():
            lines.append(
                f"    {LABELS[name]:<13}{row['idle_mb']:>8.1f}{row['sessions_1_mb']:>11.1f}"
                f"{row['sessions_n_mb']:>14.1f}{row['per_session_kb']:>12.1f}"
            )
    return lines


def _profile_lines(profile: dict[str, Any] | None) -> list[str]:
    if profile is None:
        return []
    if "error" in profile:
        return ["", f"Profile of mcp-guard: n/a ({profile['error']})"]
    lines = [
        "",
        f"Profile of mcp-guard under 8 clients (2026 era, {TOOL}): py-spy {profile['rate_hz']} Hz for "
        f"{profile['seconds']:g} s, {profile['samples']} samples, each to the innermost frame of an area",
    ]
    for area in sorted(profile["areas"].values(), key=lambda a: -a["samples"]):
        top = next(iter(area["top_frames"]), "")
        lines.append(f"  {area['share_pct']:>5.1f} %  {area['label']:<55}{top}")
    if profile.get("other_top_files"):
        lines.append(
            "  other, by innermost file: " + ", ".join(f"{f} {c}" for f, c in profile["other_top_files"].items())
        )
    return lines
