"""What shared state in Redis adds to a call, against the in-memory default (SPEC §12).

    .venv/bin/python benchmarks/state.py [--calls N]

Starts a redis-server on a free loopback port (Debian's `redis-server` must be installed) and
drives the pipeline's own decision for one call, `Pipeline.decide`, in-process: once with the
in-memory state and once with Redis, for an ungated read (no state touched), a rate-limited read
(one atomic window script), and an external send under the trifecta rule (the session's legs read,
the window counted). It prints medians in µs, the added cost per call, and what each kind of key
holds in Redis (MEMORY USAGE).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from inproc import NoPrompter, _never  # noqa: E402

from proxy.audit import AuditLog  # noqa: E402
from proxy.backends.sandbox import TOOLS  # noqa: E402
from proxy.caller import Caller  # noqa: E402
from proxy.pipeline import Pipeline, ToolCall  # noqa: E402
from proxy.policy import load_policy  # noqa: E402
from proxy.redis_state import RedisState  # noqa: E402
from proxy.state import MemoryState, SharedState  # noqa: E402
from proxy.upstream_changes import Relay  # noqa: E402
from proxy.upstream_pool import UpstreamPool  # noqa: E402

CASES = {
    "ungated read (get_profile)": ("get_profile", {}),
    "rate-limited read (get_sms)": ("get_sms", {}),
    "external send, trifecta + limit (send_sms)": ("send_sms", {"to": "48500100200", "message": "Hej"}),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def policy_file(directory: Path) -> Path:
    doc: dict[str, Any] = {
        "version": 1,
        "team": "bench",
        "upstreams": {"smsapi": {"builtin": "sandbox", "profile": "smsapi"}},
        "scopes": ["sms", "profile"],
        "confirm": {"destructive": False},
        "trifecta": {"action": "confirm"},
        "limits": [{"tools": ["get_sms", "send_sms"], "per_minute": 1_000_000}],
    }
    path = directory / "bench.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def measure(state: SharedState, calls: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_policy(policy_file(Path(tmp)))
        async with anyio.create_task_group() as tg:
            pool = UpstreamPool(loaded.policy.upstreams, tg, allow_sampling=False)  # never connected here
            pipeline = Pipeline(loaded, pool, AuditLog(None), state)
            medians: dict[str, float] = {}
            for label, (name, arguments) in CASES.items():
                rule = pipeline.catalog.rule("smsapi", name, TOOLS[name].tool.annotations)
                times = []
                for i in range(calls):
                    caller = Caller(team="bench", principal="p", session=f"p/s{i % 50}")
                    call = ToolCall(caller, name, dict(arguments), NoPrompter(), Relay(elicit=_never, sample=_never))
                    started = time.perf_counter()
                    await pipeline.decide(call, rule)
                    if "send" not in name:
                        await pipeline.trifecta.record(caller.session, rule)
                    times.append(time.perf_counter() - started)
                medians[label] = statistics.median(times) * 1e6
            await pool.aclose()
            tg.cancel_scope.cancel()
    return medians


def key_sizes(port: int) -> list[tuple[str, str]]:
    cli = shutil.which("redis-cli")
    if cli is None:
        return []
    keys = subprocess.run([cli, "-p", str(port), "--scan"], capture_output=True, text=True).stdout.split()
    sizes = []
    for kind in ("rate", "legs", "once"):
        key = next((k for k in keys if f":{kind}:" in k and not k.endswith(":sum")), None)
        if key:
            usage = subprocess.run([cli, "-p", str(port), "MEMORY", "USAGE", key], capture_output=True, text=True)
            what = f"{usage.stdout.strip()} bytes"
            if kind == "rate":
                card = subprocess.run([cli, "-p", str(port), "ZCARD", key], capture_output=True, text=True)
                what += f" for {card.stdout.strip()} calls in the window"
            sizes.append((kind, f"{kind}: {what} ({key[:48]}…)"))
    return sizes


async def compare(calls: int, port: int) -> None:
    memory = await measure(MemoryState(), calls)
    shared = RedisState(f"redis://127.0.0.1:{port}/0", prefix="bench")
    redis = await measure(shared, calls)
    await shared.first_use("a-nonce", 600)
    print(f"Pipeline.decide per call, median µs over {calls} calls (redis-server on loopback)")
    print(f"  {'case':45s} {'memory':>8s} {'redis':>8s} {'added':>8s}")
    for label in CASES:
        print(f"  {label:45s} {memory[label]:8.1f} {redis[label]:8.1f} {redis[label] - memory[label]:8.1f}")
    for _, line in key_sizes(port):
        print(f"  key {line}")
    await shared.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    calls = parser.parse_args().calls
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("benchmarks/state.py needs redis-server (Debian: apt-get install redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if "Ready to accept connections" in line:
                break
        anyio.run(compare, calls, port)
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
