"""Issue 13: the fast sanitiser against a slow, obviously correct reference (tests/reference_sanitizer.py).

Properties, over hostile text (tests/strategies.py) and arbitrary text:
- wherever the reference's output passes E1/E2 (tests/invariants.py), `sanitize_text`'s does too;
- `sanitize_text` is idempotent (E3);
- ordinary values (ids, phone numbers, dates, statuses, URLs, e-mail addresses, numbers, names in
  many scripts, emoji) come out byte-identical (E3), because cleaning leaves them alone.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.sanitize import sanitize_text
from tests.invariants import text_violations
from tests.reference_sanitizer import reference_sanitize
from tests.strategies import BENIGN, benign_text, hostile_text

EXAMPLES = int(os.environ.get("MCP_GUARD_ORACLE_EXAMPLES", "300"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXTS = st.one_of(hostile_text(8), st.text(max_size=40), benign_text())


def test_the_reference_is_a_sanitiser() -> None:
    # The oracle is only worth something if it does clean: its output of known markup passes E2.
    for raw in ["<script>alert(1)</script>x", "&lt;b&gt;x", "![a](https://e/x) **b**", "# h\n> q", "\u202ex\x1b[1m"]:
        assert not text_violations(reference_sanitize(raw)), raw


@SETTINGS
@given(TEXTS)
@example("&amp;lt;img src=x onerror=alert(1)&amp;gt;")
@example("[x](javascript:alert(1))")
@example("\\u003cscript\\u003e")
@example('{"a": "\\u003cb\\u003e"}')
def test_fast_output_passes_whatever_the_reference_output_passes(text: str) -> None:
    reference = reference_sanitize(text)
    if text_violations(reference):
        return  # the reference does not vouch for this input (e.g. JSON-escaped markup in plain text)
    fast = sanitize_text(text)
    assert "<" not in fast and ">" not in fast, ascii(fast)  # E1: safe to put in an envelope as is
    found = text_violations(fast)
    assert not found, f"input {text!a}\nfast {fast!a}\nreference {reference!a}\n" + "\n".join(found)


@SETTINGS
@given(TEXTS)
def test_sanitize_text_is_idempotent(text: str) -> None:
    once = sanitize_text(text)
    assert sanitize_text(once) == once, f"input {text!a}\nonce {once!a}"


@pytest.mark.parametrize("value", BENIGN, ids=[ascii(v) for v in BENIGN])
def test_listed_benign_values_come_out_byte_identical(value: str) -> None:
    assert sanitize_text(value) == value


@SETTINGS
@given(benign_text())
def test_generated_benign_values_come_out_byte_identical(value: str) -> None:
    assert sanitize_text(value) == value
