"""An audit log that cannot be written refuses what must be on record (SPEC §9), rotates without
losing a line, and never leaves half a line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from proxy.audit import AuditLog
from tests.harness import MODES, SANDBOX, calls, proxy_stdio, write_policy
from tests.test_policies_e2e import Human, text

SEND = {"to": "48500100200", "message": "Hej", "test": True}


def policy(tmp: Path, record: Path, audit: dict[str, Any]) -> Path:
    return write_policy(
        tmp / "team.yaml",
        {"smsapi": {"command": [*SANDBOX, "--stdio", "--record", str(record)], "profile": "smsapi"}},
        scopes=["sms", "profile"],
        trifecta={"action": "off"},
        audit=audit,
    )


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_a_full_disk_refuses_gated_sends_and_the_upstream_never_sees_them(tmp_path: Path, mode: str) -> None:
    record = tmp_path / "calls.jsonl"
    human = Human()
    async with Client(proxy_stdio(policy(tmp_path, record, {"path": "/dev/full"})), mode=mode,
                      elicitation_callback=human) as client:  # fmt: skip
        send = await client.call_tool("send_sms", SEND)
        profile = await client.call_tool("get_profile", {})
    assert send.is_error and "audit line could not be written" in text(send) and "No space" in text(send)
    assert calls(record, "send_sms") == []
    assert not profile.is_error  # a read that acts on nothing is still answered
    assert calls(record, "get_profile")


@pytest.mark.anyio
async def test_audit_not_required_only_logs_the_failure(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    audit = {"path": "/dev/full", "required": False}
    async with Client(proxy_stdio(policy(tmp_path, record, audit)), elicitation_callback=Human()) as client:
        send = await client.call_tool("send_sms", SEND)
    assert not send.is_error, text(send)
    assert len(calls(record, "send_sms")) == 1


@pytest.mark.anyio
async def test_a_gated_call_written_ahead_leaves_one_line(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    log = tmp_path / "audit.jsonl"
    async with Client(proxy_stdio(policy(tmp_path, record, {"path": str(log)})), elicitation_callback=Human()) as c:
        assert not (await c.call_tool("send_sms", SEND)).is_error
    written = [json.loads(raw) for raw in log.read_text().splitlines()]
    (line,) = [r for r in written if r["decision"] != "pending"]  # the 2026-07-28 round trip that asked
    assert len(calls(record, "send_sms")) == 1
    assert line["decision"] == "confirmed" and line["tool"] == "send_sms" and line["recipients"] == 1


def lines(path: Path) -> list[dict[str, Any]]:
    files = sorted(path.parent.glob(path.name + "*"))
    return [json.loads(raw) for f in files for raw in f.read_text().splitlines()]


def test_size_rotation_keeps_every_line_whole(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=4096, keep=50)
    for n in range(200):
        assert log.write(n=n, reason="x" * 100)
    log.close()
    written = lines(path)
    assert sorted(r["n"] for r in written) == list(range(200))
    files = list(tmp_path.glob("audit.jsonl*"))
    assert len(files) > 3 and all(f.stat().st_size <= 4096 for f in files)


def test_old_rotations_beyond_keep_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=4096, keep=2)
    for n in range(200):
        assert log.write(n=n, reason="x" * 100)
    log.close()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert max(r["n"] for r in lines(path)) == 199


def test_daily_rotation(tmp_path: Path) -> None:
    now = [datetime(2026, 12, 4, 23, 59, tzinfo=UTC)]
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, daily=True, clock=lambda: now[0])
    assert log.write(n=1)
    now[0] += timedelta(minutes=2)
    assert log.write(n=2)
    log.close()
    assert json.loads((tmp_path / "audit.jsonl.1").read_text())["n"] == 1
    assert json.loads(path.read_text())["n"] == 2


def test_a_removed_file_is_recreated_and_no_line_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    assert log.write(n=1)
    path.unlink()
    assert log.write(n=2)
    log.close()
    assert [r["n"] for r in lines(path)] == [2]


def test_a_full_device_reports_failure_and_recovers_when_writable(tmp_path: Path) -> None:
    log = AuditLog(Path("/dev/full"))
    assert not log.write(n=1)
    assert log.failing and "space" in log.failing
    log.path = tmp_path / "audit.jsonl"  # the operator freed space (here: the log moved somewhere writable)
    assert log.write(n=2) and log.failing is None
    log.close()


def test_an_unwritable_directory_fails_closed_and_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = AuditLog(blocker / "audit.jsonl")  # its "directory" is a file: cannot be created
    assert not log.write(n=1)
    assert log.failing
