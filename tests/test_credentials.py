"""The credentials mcp-guard sends upstream are withheld from everything it sends downstream.

The end-to-end case (an upstream echoing the policy's Authorization header) is in
tests/test_state_auth_review.py; these pin the pure parts: the search, the registration from a
policy, and the places that trust a string without cleaning it (names, verbatim values).
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from proxy import credentials
from proxy.credentials import MIN_CHARS, WITHHELD, Credentials
from proxy.json_clean import sanitize_json
from proxy.policy import OutputPolicy, load_policy
from proxy.untrusted import OutputShield, plain_name

SECRET = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=MIN_CHARS, max_size=40).filter(
    lambda s: len(s.strip()) >= MIN_CHARS
)


@given(secret=SECRET, before=st.text(max_size=30), after=st.text(max_size=30))
def test_a_registered_credential_never_survives_withholding(secret: str, before: str, after: str) -> None:
    found = Credentials()
    found.register(secret)
    for text in (before + secret + after, before + json.dumps(secret) + after, secret + secret):
        out = found.withhold(text)
        assert secret not in out
        assert not found.holds(out)
        assert found.withhold(out) == out  # idempotent


@given(text=st.text(max_size=60))
def test_nothing_is_withheld_when_nothing_is_registered(text: str) -> None:
    assert Credentials().withhold(text) == text


def test_short_values_are_not_registered() -> None:
    found = Credentials()
    found.register("48")
    found.register("true")
    found.register(" " * 20)
    assert found.version == 0
    assert found.withhold("+48 true") == "+48 true"


def test_a_policy_registers_what_it_sends_upstream_and_nothing_else(tmp_path: Path) -> None:
    token, key, password, client_secret = (f"{what}-{secrets.token_hex(8)}" for what in "tkpc")
    sender = "ShopName-" + secrets.token_hex(4)  # a ${VAR} outside any upstream: not a credential
    policy = tmp_path / "team.yaml"
    policy.write_text(
        f"""
team: creds
upstreams:
  http:
    url: https://user:{password}@example.test/mcp?api_key=${{KEY}}
    headers:
      Authorization: Bearer ${{TOKEN}}
      Accept: application/json
  oauthed:
    url: https://other.example.test/mcp
    oauth:
      client_id: guard
      client_secret: {client_secret}
sms:
  senders:
    allow: ["${{SENDER}}"]
"""
    )
    load_policy(policy, env={"TOKEN": token, "KEY": key, "SENDER": sender})
    for value in (token, key, password, client_secret):
        assert credentials.holds(f"echo: {value}"), value
    assert not credentials.holds(f"from {sender}: application/json")


def test_the_shield_withholds_a_credential_in_any_string_and_refuses_it_as_a_name() -> None:
    secret = "reflected-" + secrets.token_hex(10)
    shield = OutputShield(OutputPolicy())
    before = shield.tool_result("up:echo", {"content": [{"type": "text", "text": f"header was Bearer {secret}"}]})
    credentials.register(secret)
    result = shield.tool_result(
        "up:echo",
        {
            "content": [{"type": "text", "text": f"header was Bearer {secret}"}],
            "structuredContent": {"deep": [{secret: secret, "z\u200b": f"{secret[:5]}\u200b{secret[5:]}"}]},
        },
    )
    shown = json.dumps(result)
    assert secret in json.dumps(before)  # registered only after: the cached verdicts are not reused
    assert secret not in shown and WITHHELD in shown
    assert not plain_name(secret)
    assert secret not in json.dumps(sanitize_json({"id": secret}, shield.result_clean(), shield.unchanged))


def test_a_verbatim_value_holding_a_credential_is_cleaned() -> None:
    secret = "verbatim-" + secrets.token_hex(10)
    credentials.register(secret)
    shield = OutputShield(OutputPolicy())
    verbatim = {"id": re.compile(r"[a-z0-9\-]+")}
    out = shield.tool_result(
        "up:get", {"content": [{"type": "text", "text": json.dumps({"id": secret})}]}, verbatim=verbatim
    )
    assert secret not in json.dumps(out)


def test_a_credential_cut_by_the_length_limit_leaves_no_part_of_it() -> None:
    secret = "cut-in-half-" + secrets.token_hex(12)
    credentials.register(secret)
    shield = OutputShield(OutputPolicy(max_chars=40))
    out = shield.clean("x" * 20 + secret)
    assert secret[:12] not in out and secret[-8:] not in out


def test_the_audit_log_never_holds_a_reflected_credential(tmp_path: Path) -> None:
    from proxy.audit import AuditLog

    secret = "audited-" + secrets.token_hex(12)
    credentials.register(secret)
    log = AuditLog(tmp_path / "audit.jsonl")
    from proxy.audit import _MAX_TEXT

    # The first occurrence straddles the cut: its first half would survive a cut made first.
    assert log.write(event="call", reason="y" * (_MAX_TEXT - 10) + secret + " and " + secret)
    log.close()
    text = (tmp_path / "audit.jsonl").read_text()
    assert secret[:8] not in text and "y" * (_MAX_TEXT - 10) in text


def test_registering_a_known_value_again_keeps_the_shields_caches() -> None:
    """A grant's tokens are registered each time the grant is read (every upstream call): only a
    new value may make the shield forget its cleaned strings."""
    found = Credentials()
    found.register("first-" + "a" * 10, lasting=False)
    seen = found.version
    found.register("first-" + "a" * 10, lasting=False)
    assert found.version == seen
    found.register("second-" + "b" * 10, lasting=False)
    assert found.version == seen + 1
