"""In-process costs, no network: the guard pipeline on a 2 KB SMSAPI result, and sanitise + envelope by size.

The guard pipeline is timed on the proxy's own objects, built the way `proxy.gateway.Gateway`
builds them from a policy file: `Pipeline.guard` (visibility → pins → limits → trifecta; a
read tool needs no confirmation) and `OutputShield.tool_result` on a real sandbox result
trimmed to about 2 KB (text content and structuredContent), plus the bookkeeping after the
forward (`trifecta.record` and the audit line) reported on its own.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from proxy.audit import AuditLog  # noqa: E402
from proxy.backends.sandbox import TOOLS, Sandbox, run_tool  # noqa: E402
from proxy.guards import Admitted  # noqa: E402
from proxy.pipeline import Caller, Pipeline, ToolCall  # noqa: E402
from proxy.policy import OutputPolicy, load_policy  # noqa: E402
from proxy.sanitize import sanitize_text  # noqa: E402
from proxy.untrusted import OutputShield  # noqa: E402
from proxy.upstream_changes import Relay  # noqa: E402
from proxy.upstream_pool import UpstreamPool  # noqa: E402

RESULT_CHARS = 2048
# Where each tool keeps its rows in the SMSAPI JSON, to trim a real result to the target size.
ROWS_KEY = {"get_sms": "list", "get_contacts": "collection"}
COUNT_KEY = {"get_sms": "count", "get_contacts": "size"}


class NoPrompter:
    """A read tool is never gated, so the confirm gate is never asked; fail loudly if it is."""

    modern = False
    can_elicit = False
    can_elicit_url = False
    request_state: str | None = None
    input_responses: dict[str, Any] | None = None

    async def elicit(self, message: str, schema: dict[str, Any]) -> types.ElicitResult:
        raise AssertionError("a read tool must not be gated in this benchmark")


async def _never(*_: Any) -> Any:
    raise AssertionError("no upstream request is relayed in-process")


def sized_result(tool: str, *, benign: bool, chars: int = RESULT_CHARS) -> types.CallToolResult:
    """The sandbox's own result for `tool`, its rows repeated (fresh ids) or cut to about `chars`.

    benign: only rows whose text the sanitiser leaves unchanged (an ordinary inbox); otherwise
    every sandbox row, including its injection attempts, markdown links, ANSI and HTML.
    """
    body = json.loads(run_tool(Sandbox(), tool, {"limit": 100}).content[0].text)
    rows = [r for r in body[ROWS_KEY[tool]] if not benign or _unchanged(r)]
    kept: list[Any] = []
    for i in range(1000):
        row = {**rows[i % len(rows)], "id": f"{rows[i % len(rows)]['id']}-{i}"}
        candidate = {**body, COUNT_KEY[tool]: len(kept) + 1, ROWS_KEY[tool]: [*kept, row]}
        if len(json.dumps(candidate, ensure_ascii=False)) > chars:
            break
        kept.append(row)
    structured = {**body, COUNT_KEY[tool]: len(kept), ROWS_KEY[tool]: kept}
    text = json.dumps(structured, ensure_ascii=False)
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=structured)


def _unchanged(row: dict[str, Any]) -> bool:
    return all(sanitize_text(v) == v for v in row.values() if isinstance(v, str))


def _median_us(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e6, 1)


async def _time_tool(pipeline: Pipeline, tool: str, benign: bool, reps: int) -> dict[str, Any]:
    server = next(iter(pipeline.loaded.policy.upstreams))
    rule = pipeline.catalog.rule(server, tool, TOOLS[tool].tool.annotations)
    result = sized_result(tool, benign=benign)
    source = f"{rule.server}:{rule.name}"
    guard_s: list[float] = []
    shield_s: list[float] = []
    after_s: list[float] = []
    for i in range(reps + 20):
        call = ToolCall(
            caller=Caller(team=pipeline.team, principal="bench", session=f"bench/{i % 8}"),
            name=tool,
            arguments={"limit": 10},
            prompter=NoPrompter(),
            relay=Relay(elicit=_never, sample=_never),
        )
        t0 = time.perf_counter()
        outcome = await pipeline.decide(call, rule)  # every guard, and the call counted against its limits
        t1 = time.perf_counter()
        if not isinstance(outcome, Admitted) or outcome.decision != "allowed":
            raise RuntimeError(f"the benchmark policy refused {tool}: {outcome}")
        raw = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        shielded = types.CallToolResult.model_validate(pipeline.shield.tool_result(source, raw, None, rule.verbatim))
        t2 = time.perf_counter()
        await pipeline.trifecta.record(call.caller.session, rule)
        pipeline._finish(call, rule, "allowed", "forwarded", shielded)
        t3 = time.perf_counter()
        if i >= 20:  # the first calls warm the regex and markdown-it caches
            guard_s.append(t1 - t0)
            shield_s.append(t2 - t1)
            after_s.append(t3 - t2)
    total = [g + s for g, s in zip(guard_s, shield_s, strict=True)]
    return {
        "tool": tool,
        "rows": "benign" if benign else "hostile",
        "result_chars": len(result.content[0].text),  # type: ignore[union-attr]
        "guard_us": _median_us(guard_s),
        "shield_us": _median_us(shield_s),
        "guard_plus_shield_us": _median_us(total),
        # The best run shows the floor under a noisy shared machine; targets use the median.
        "guard_plus_shield_best_us": round(min(total) * 1e6, 1),
        "record_and_audit_us": _median_us(after_s),
    }


def guard_cost(policy_path: Path, reps: int) -> list[dict[str, Any]]:
    """Median microseconds per call of the guard pipeline for get_sms and get_contacts, benign and hostile."""
    loaded = load_policy(policy_path)

    async def run() -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory() as tmp:
            audit = AuditLog(Path(tmp) / "audit.jsonl")
            async with anyio.create_task_group() as tg:
                pool = UpstreamPool(loaded.policy.upstreams, tg, allow_sampling=False)  # never connected here
                pipeline = Pipeline(loaded, pool, audit)
                rows = [await _time_tool(pipeline, tool, benign, reps) for benign in (True, False) for tool in ROWS_KEY]
                tg.cancel_scope.cancel()
            audit.close()
        return rows

    return anyio.run(run)


# -- sanitise + envelope -----------------------------------------------------------------------------


def sanitize_cost(reps: int, sizes: tuple[str, ...]) -> list[dict[str, Any]]:
    """bench_sanitize's cases (the pure functions, no size cap) at `sizes`: median ms of `reps` runs."""
    import bench_sanitize  # benchmarks/ is on sys.path when run.py runs

    rows = []
    for name, func, chars in bench_sanitize.cases():
        if name.rsplit(" ", 1)[-1] not in sizes:
            continue
        times = bench_sanitize.measure(func, reps)
        rows.append({"case": name, "chars": chars, "median_ms": round(statistics.median(times), 3)})
    return rows


def shield_cost(reps: int, sizes: tuple[str, ...]) -> list[dict[str, Any]]:
    """The proxy's own path for one text block, `OutputShield.text`, with the policy defaults (max_chars cap)."""
    import bench_sanitize

    shield = OutputShield(OutputPolicy())
    rows = []
    for label in sizes:
        size = bench_sanitize.SIZES[label]
        for kind, unit in (("plain", bench_sanitize.PROSE), ("hostile-md", bench_sanitize.HOSTILE_MARKDOWN)):
            for shape, text in (
                ("text", bench_sanitize.fill(unit, size)),
                ("json", bench_sanitize.smsapi_result(unit, size)),
            ):
                times = bench_sanitize.measure(partial(shield.text, text, "smsapi:get_sms"), reps)
                rows.append(
                    {
                        "case": f"shield {shape} {kind} {label}",
                        "chars": len(text),
                        "median_ms": round(statistics.median(times), 3),
                    }
                )
    return rows
