"""Issue 5 / SPEC §8: the audit log, end to end.

One JSON line per decision, written before the client has its answer (so it is read here
while the proxy still runs), with digests instead of values, phone numbers masked, and never a
secret: a fake bearer token is sent and then looked for in the audit file and in every stderr
line any process wrote.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.harness import CAPTURED, SANDBOX, calls, proxy_http, records, spawn, write_policy
from tests.test_policies_e2e import Human, bearer, text

pytestmark = pytest.mark.anyio

TOKEN = "fake-audit-token-7c2f9e01d4"
OTHER_TOKEN = "fake-audit-token-other-93ab"
FIELDS = {"time", "team", "principal", "session", "server", "tool", "decision", "reason", "args_sha256", "duration_ms"}
PHONE = "48600100200"


def sha256_args(arguments: dict[str, Any]) -> str:
    canonical = json.dumps(arguments, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Audit:
    """The audit file as another process sees it, line by line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = 0

    def new(self) -> list[dict[str, Any]]:
        lines = records(self.path)
        fresh, self.seen = lines[self.seen :], len(lines)
        return fresh

    def one(self) -> dict[str, Any]:
        (line,) = self.new()
        assert FIELDS <= set(line), line
        return line


async def test_one_line_per_decision_with_digests_and_no_secret(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    audit = Audit(tmp_path / "audit.jsonl")
    with spawn([*SANDBOX, "--port", "0", "--record", str(record)]) as upstream:
        policy = write_policy(
            tmp_path / "p.yaml",
            {"smsapi": {"url": upstream.url, "profile": "smsapi", "timeout_seconds": 5}},
            team="audited",
            scopes=["sms", "contacts", "profile"],
            trifecta={"action": "block"},
            audit={"path": "audit.jsonl"},  # relative to the policy file
        )
        with proxy_http(policy) as proxy:
            async with bearer(proxy.url, TOKEN, "legacy", elicitation_callback=Human()) as client:
                assert not (await client.call_tool("get_groups", {})).is_error  # untrusted leg only
                allowed = audit.one()
                send = {"to": PHONE, "message": "Twoje zamówienie", "test": True}
                assert not (await client.call_tool("send_sms", send)).is_error
                confirmed = audit.one()
                assert not (await client.call_tool("get_sms", {})).is_error
                audit.one()
                assert (await client.call_tool("send_sms", send)).is_error
                blocked = audit.one()
                assert (await client.call_tool("get_subusers", {})).is_error
                denied = audit.one()
                assert (await client.call_tool(f"+{PHONE}", {})).is_error
                unknown = audit.one()
            async with bearer(proxy.url, TOKEN, "legacy", elicitation_callback=Human("decline")) as client:
                assert (await client.call_tool("send_sms", send)).is_error
                declined = audit.one()
            async with bearer(proxy.url, OTHER_TOKEN, "auto", elicitation_callback=Human()) as client:
                assert not (await client.call_tool("send_sms", send)).is_error
                pending, modern = audit.new()
            upstream.stop()
            async with bearer(proxy.url, TOKEN, "legacy") as client:
                down = await client.call_tool("get_profile", {})
                assert down.is_error and "unavailable" in text(down)
                error = audit.one()
            jq = shutil.which("jq")
            if jq is not None:  # the file as an operator reads it
                parsed = await anyio.run_process([jq, "-c", ".", str(audit.path)])
                assert len(parsed.stdout.decode().splitlines()) == audit.seen
            else:
                assert [json.loads(line) for line in audit.path.read_text().splitlines()]
            proxy_stderr = "".join(proxy.lines)

    assert allowed["decision"] == "allowed" and allowed["tool"] == "get_groups" and allowed["server"] == "smsapi"
    assert allowed["team"] == "audited" and allowed["reason"] == "forwarded"
    assert allowed["args_sha256"] == sha256_args({})
    assert confirmed["decision"] == "confirmed" and confirmed["args_sha256"] == sha256_args(send)
    assert confirmed["recipients"] == 1
    assert blocked["decision"] == "blocked" and "get_sms" in blocked["reason"]
    assert denied["decision"] == "denied" and denied["reason"] == "scope 'subuser' not granted"
    assert unknown["decision"] == "denied" and unknown["server"] == "smsapi" and PHONE not in unknown["tool"]
    assert declined["decision"] == "declined"
    assert pending["decision"] == "pending" and modern["decision"] == "confirmed"
    assert error["decision"] == "error" and "unavailable" in error["reason"]

    # Principals are digests: stable per credential, different across credentials.
    legacy = [allowed, confirmed, blocked, denied, unknown, declined, error]
    assert len({line["principal"] for line in legacy}) == 1
    assert modern["principal"] == pending["principal"] != allowed["principal"]
    # Sessions are digests too: a handshake-era session id is a handle worth hiding.
    assert all(re.fullmatch(r"[0-9a-f]{16}", line["session"]) for line in [*legacy, pending, modern])
    assert allowed["session"] == blocked["session"] != declined["session"]
    assert all(isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0 for line in legacy)
    assert all(line["time"].endswith("Z") for line in legacy)

    # No value leaks: neither the phone number nor either token, anywhere.
    written = audit.path.read_text()
    assert PHONE not in written
    for secret in (TOKEN, OTHER_TOKEN):
        assert secret not in written
        assert secret not in proxy_stderr
        assert not [line for line in CAPTURED if secret in line]
    # The token did reach the upstream (passthrough), which proves it was really in play.
    assert {c["auth_sha256"] for c in calls(record)} >= {hashlib.sha256(f"Bearer {TOKEN}".encode()).hexdigest()}
