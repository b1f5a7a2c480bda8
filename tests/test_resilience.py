"""Issue 2 / SPEC §9: the proxy outlives its upstream, and bad start-up input is one clear line, exit 2."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
from mcp import Client

from tests.harness import MODES, PY, SANDBOX, calls, proxy_http, proxy_stdio, run, spawn, write_policy

pytestmark = pytest.mark.anyio


def _port(url: str) -> int:
    port = urlparse(url).port
    assert port is not None
    return port


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_upstream_killed_mid_session_then_recovered(transport: str, mode: str, tmp_path: Path) -> None:
    with spawn([*SANDBOX, "--port", "0"]) as first:
        port = _port(first.url)
        policy = write_policy(
            tmp_path / "p.yaml",
            {"smsapi": {"url": first.url, "profile": "smsapi", "timeout_seconds": 5}},
            scopes=["profile"],
        )
        with proxy_http(policy) as proxy:
            target = proxy_stdio(policy) if transport == "stdio" else proxy.url
            async with Client(target, mode=mode) as client:
                ok = await client.call_tool("get_profile", {})
                assert not ok.is_error

                first.stop()
                down = await client.call_tool("get_profile", {})
                assert down.is_error
                text = down.content[0].text  # type: ignore[union-attr]
                assert "upstream 'smsapi' is unavailable" in text

                with spawn([*SANDBOX, "--port", str(port)]):
                    again = await client.call_tool("get_profile", {})
                    assert not again.is_error, again.content


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("command", ["serve", "stdio", "check"])
def test_broken_policy_exits_2_with_file_and_line(command: str, tmp_path: Path) -> None:
    policy = tmp_path / "broken.yaml"
    policy.write_text("version: 1\nteam: t\nupstreams:\n  a: {builtin: sandbox}\nconfrim: {destructive: false}\n")
    done = run([PY, "-m", "proxy", command, "--policy", str(policy)])
    assert done.returncode == 2
    line = _one_line(done.stderr)
    assert line.startswith(f"{policy}:5:")
    assert "confrim" in line and "confirm" in line


@pytest.mark.parametrize("command", ["serve", "stdio"])
def test_missing_variable_exits_2_naming_it(command: str, tmp_path: Path) -> None:
    policy = write_policy(
        tmp_path / "p.yaml",
        {"smsapi": {"url": "http://127.0.0.1:9/", "headers": {"Authorization": "Bearer ${MCP_GUARD_TEST_NOPE}"}}},
    )
    done = run([PY, "-m", "proxy", command, "--policy", str(policy)])
    assert done.returncode == 2
    assert "MCP_GUARD_TEST_NOPE" in _one_line(done.stderr)


@pytest.mark.parametrize("command", ["serve", "stdio"])
def test_unreachable_upstream_exits_2(command: str, tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.yaml", {"down": {"url": "http://127.0.0.1:9/mcp", "timeout_seconds": 5}})
    done = run([PY, "-m", "proxy", command, "--policy", str(policy)])
    assert done.returncode == 2
    assert "upstream 'down' is unavailable" in _one_line(done.stderr)


@pytest.mark.parametrize("mode", MODES)
async def test_sse_only_upstream_is_reached_through_the_fallback(mode: str, tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    with spawn([PY, "tests/servers/sse_sandbox.py", "--record", str(record)]) as sse:
        policy = write_policy(tmp_path / "p.yaml", {"old": {"url": sse.url, "profile": "smsapi"}}, scopes=["profile"])
        with proxy_http(policy) as proxy:
            async with Client(proxy.url, mode=mode) as client:
                result = await client.call_tool("get_profile", {})
    assert not result.is_error
    assert len(calls(record, "get_profile")) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_upstream_401_is_named_with_its_status(mode: str, tmp_path: Path) -> None:
    """An upstream refusing the token must say so (HTTP 401), not just 'an error response'."""
    locked = write_policy(
        tmp_path / "locked.yaml", {"s": {"builtin": "sandbox"}}, auth={"mode": "passthrough", "required": True}
    )
    with proxy_http(locked) as upstream:
        outer = write_policy(tmp_path / "outer.yaml", {"smsapi": {"url": upstream.url}})
        with proxy_http(outer) as proxy:
            assert any("HTTP 401" in line for line in proxy.lines), proxy.lines
            async with Client(proxy.url, mode=mode) as client:
                with pytest.raises(Exception, match="HTTP 401"):
                    await client.list_tools()
