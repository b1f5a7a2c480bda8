"""The effective tool table: visibility, gating, legs and names, from policy plus profile."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp.types import ToolAnnotations

from proxy.catalog import Catalog
from proxy.policy import load_policy

PROFILE = """\
version: 1
name: test
groups:
  sms: [send_sms, get_sms, delete_sms]
  contacts: [get_contacts]
  hlr: [check_hlr]
tools:
  send_sms:
    scope: sms
    legs: [external]
    recipients: {args: [to]}
  get_sms:
    scope: sms
    legs: [untrusted, sensitive]
    verbatim: {"list[].id": "^[0-9]+$"}
    annotations: {readOnlyHint: true}
  delete_sms:
    scope: sms
    legs: []
  get_contacts:
    scope: contacts
    legs: [untrusted, sensitive]
    annotations: {readOnlyHint: true}
  check_hlr:
    scope: hlr
    legs: [sensitive]
    annotations: {readOnlyHint: true}
  plain: {}
"""

READ_ONLY = ToolAnnotations(readOnlyHint=True)
NOT_DESTRUCTIVE = ToolAnnotations(destructiveHint=False)
DESTRUCTIVE = ToolAnnotations(destructiveHint=True)


def catalog(
    tmp_path: Path, body: str = "", *, upstreams: str | None = None, scopes: str = "[sms, contacts]"
) -> Catalog:
    (tmp_path / "test-profile.yaml").write_text(PROFILE, encoding="utf-8")
    upstreams = upstreams or "  sms:\n    builtin: sandbox\n    profile: ./test-profile.yaml\n"
    text = f"version: 1\nteam: t\nupstreams:\n{upstreams}scopes: {scopes}\n{body}"
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return Catalog(load_policy(path, env={}))


# ---- visibility


def test_scope_not_granted_hides(tmp_path: Path) -> None:
    cat = catalog(tmp_path)
    rule = cat.rule("sms", "check_hlr", READ_ONLY)
    assert not rule.visible
    assert rule.hidden_reason == "scope 'hlr' not granted"
    assert cat.rule("sms", "get_contacts", READ_ONLY).visible


def test_profile_tool_without_scope_needs_none(tmp_path: Path) -> None:
    assert catalog(tmp_path, scopes="[]").rule("sms", "plain", READ_ONLY).visible


def test_deny_glob_hides(tmp_path: Path) -> None:
    cat = catalog(tmp_path, "tools:\n  deny: ['delete_*']\n")
    rule = cat.rule("sms", "delete_sms", None)
    assert not rule.visible
    assert rule.hidden_reason == "denied by tools.deny 'delete_*'"


def test_allow_glob_must_match(tmp_path: Path) -> None:
    cat = catalog(tmp_path, "tools:\n  allow: ['get_*']\n")
    assert cat.rule("sms", "get_sms", READ_ONLY).visible
    rule = cat.rule("sms", "send_sms", None)
    assert not rule.visible
    assert rule.hidden_reason == "not allowed by tools.allow"


def test_deny_wins_over_allow(tmp_path: Path) -> None:
    cat = catalog(tmp_path, "tools:\n  allow: ['get_*']\n  deny: [get_contacts]\n")
    assert not cat.rule("sms", "get_contacts", READ_ONLY).visible


def test_unlisted_hidden_by_default(tmp_path: Path) -> None:
    rule = catalog(tmp_path).rule("sms", "surprise", READ_ONLY)
    assert not rule.listed
    assert not rule.visible
    assert rule.hidden_reason == "not listed in profile 'test' (tools.unlisted: hide)"


def test_unlisted_allow_shows_with_default_classification(tmp_path: Path) -> None:
    cat = catalog(tmp_path, "tools:\n  unlisted: allow\n")
    reader = cat.rule("sms", "surprise", READ_ONLY)
    assert reader.visible and not reader.listed
    assert reader.legs == {"untrusted", "sensitive"}
    assert reader.verbatim is None  # every value cleaned, none byte-exact
    writer = cat.rule("sms", "other", None)
    assert writer.visible and writer.gated
    assert writer.legs == {"external"}


def test_no_profile_every_tool_visible(tmp_path: Path) -> None:
    cat = catalog(tmp_path, upstreams="  any:\n    command: [srv]\n", scopes="[]")
    rule = cat.rule("any", "whatever", None)
    assert rule.visible and rule.listed
    assert rule.scope is None
    assert rule.groups == frozenset()


# ---- effective destructive and gating


def test_unannotated_tool_is_destructive_and_gated(tmp_path: Path) -> None:
    rule = catalog(tmp_path).rule("sms", "send_sms", None)
    assert rule.destructive and not rule.read_only
    assert rule.gated and rule.gate_reasons == ("destructive",)


def test_read_only_is_not_gated(tmp_path: Path) -> None:
    rule = catalog(tmp_path).rule("sms", "delete_sms", READ_ONLY)
    assert rule.read_only and not rule.destructive and not rule.gated


def test_destructive_hint_false_is_not_gated(tmp_path: Path) -> None:
    rule = catalog(tmp_path).rule("sms", "delete_sms", NOT_DESTRUCTIVE)
    assert not rule.destructive and not rule.gated


def test_read_only_with_destructive_hint_is_not_destructive(tmp_path: Path) -> None:
    rule = catalog(tmp_path).rule("sms", "delete_sms", ToolAnnotations(readOnlyHint=True, destructiveHint=True))
    assert not rule.destructive


def test_profile_annotation_override_wins(tmp_path: Path) -> None:
    # The upstream claims get_sms destroys things; the profile says it only reads.
    rule = catalog(tmp_path).rule("sms", "get_sms", ToolAnnotations(readOnlyHint=False, destructiveHint=True))
    assert rule.read_only and not rule.gated


def test_confirm_destructive_off(tmp_path: Path) -> None:
    rule = catalog(tmp_path, "confirm:\n  destructive: false\n").rule("sms", "send_sms", None)
    assert rule.destructive and not rule.gated


def test_confirm_tools_adds_policy_gate(tmp_path: Path) -> None:
    cat = catalog(tmp_path, "confirm:\n  tools: ['send_*', get_sms]\n")
    assert cat.rule("sms", "send_sms", None).gate_reasons == ("destructive", "policy")
    assert cat.rule("sms", "get_sms", READ_ONLY).gate_reasons == ("policy",)


def test_confirm_skip_removes_gate_and_flags_it(tmp_path: Path) -> None:
    cat = catalog(tmp_path, "confirm:\n  skip: [delete_sms, get_sms]\n")
    skipped = cat.rule("sms", "delete_sms", DESTRUCTIVE)
    assert not skipped.gated and skipped.gate_reasons == () and skipped.skip_warning
    # Skipping a tool that was never gated is not a weakening worth a warning.
    assert not cat.rule("sms", "get_sms", READ_ONLY).skip_warning


# ---- legs, fields, limits, pins


def test_profile_legs_and_fields(tmp_path: Path) -> None:
    cat = catalog(tmp_path)
    get_sms = cat.rule("sms", "get_sms", READ_ONLY)
    assert get_sms.legs == {"untrusted", "sensitive"}
    assert get_sms.verbatim is not None and get_sms.verbatim["list[].id"].pattern == "^[0-9]+$"
    assert cat.rule("sms", "delete_sms", None).legs == frozenset()
    send = cat.rule("sms", "send_sms", None)
    assert send.legs == {"external"}
    assert send.recipients is not None and send.recipients.args == ("to",)


def test_profile_tool_without_legs_gets_defaults(tmp_path: Path) -> None:
    cat = catalog(tmp_path, scopes="[]")
    assert cat.rule("sms", "plain", READ_ONLY).legs == {"untrusted", "sensitive"}
    assert cat.rule("sms", "plain", None).legs == {"external"}


def test_limits_and_pins_attach_by_glob(tmp_path: Path) -> None:
    body = (
        "limits:\n  - {tools: ['send_*'], per_minute: 5}\n  - {tools: [get_sms], max_recipients: 2}\n"
        "pins:\n  - {tools: [send_sms], set: {test: true}}\n"
    )
    cat = catalog(tmp_path, body)
    send = cat.rule("sms", "send_sms", None)
    assert [limit.per_minute for limit in send.limits] == [5]
    assert [pin.values for pin in send.pins] == [{"test": True}]
    assert cat.rule("sms", "get_contacts", READ_ONLY).limits == ()


# ---- names, groups, caching


def test_single_upstream_keeps_names(tmp_path: Path) -> None:
    cat = catalog(tmp_path)
    assert cat.exposed_name("sms", "send_sms") == "send_sms"
    assert cat.resolve("send_sms") == ("sms", "send_sms")


def test_several_upstreams_prefix_and_resolve(tmp_path: Path) -> None:
    ups = "  sms:\n    builtin: sandbox\n    profile: ./test-profile.yaml\n  other:\n    command: [srv]\n"
    cat = catalog(tmp_path, "tools:\n  deny: ['other__drop*']\n", upstreams=ups)
    assert cat.exposed_name("sms", "send_sms") == "sms__send_sms"
    assert cat.resolve("sms__send_sms") == ("sms", "send_sms")
    assert cat.resolve("other__a__b") == ("other", "a__b")
    assert cat.resolve("nobody__send_sms") is None
    assert cat.resolve("send_sms") is None
    assert cat.rule("sms", "send_sms", None).exposed == "sms__send_sms"
    # Globs match the exposed name or the upstream's own name.
    assert not cat.rule("other", "drop_all", None).visible
    assert (
        catalog(tmp_path, "tools:\n  deny: ['send_*']\n", upstreams=ups).rule("sms", "send_sms", None).visible is False
    )


def test_groups(tmp_path: Path) -> None:
    cat = catalog(tmp_path)
    assert cat.groups() == ["sms", "contacts", "hlr"]
    get_sms = cat.rule("sms", "get_sms", READ_ONLY)
    assert get_sms.groups == {"sms"}
    assert cat.visible_in_group(get_sms, None)
    assert cat.visible_in_group(get_sms, "sms")
    assert not cat.visible_in_group(get_sms, "contacts")
    hidden = cat.rule("sms", "check_hlr", READ_ONLY)
    assert not cat.visible_in_group(hidden, "hlr")


def test_profile_rules_cover_the_profile(tmp_path: Path) -> None:
    rules = catalog(tmp_path).profile_rules()
    assert [r.name for r in rules] == ["send_sms", "get_sms", "delete_sms", "get_contacts", "check_hlr", "plain"]


def test_rule_is_cached_per_annotations(tmp_path: Path) -> None:
    cat = catalog(tmp_path)
    assert cat.rule("sms", "delete_sms", None) is cat.rule("sms", "delete_sms", None)
    assert cat.rule("sms", "delete_sms", READ_ONLY) is not cat.rule("sms", "delete_sms", None)


def test_unknown_server_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        catalog(tmp_path).rule("nope", "x", None)


def test_a_hint_the_profile_leaves_out_is_not_the_upstreams_to_set(tmp_path: Path) -> None:
    """A profile that says only `readOnlyHint: false`: the upstream's `destructiveHint: false` (a rug
    pull away) must not ungate the tool, nor its `readOnlyHint: true` make it a read."""
    profile = "  writes:\n    annotations: {readOnlyHint: false}\n  reads:\n    annotations: {readOnlyHint: true}\n"
    (tmp_path / "p.yaml").write_text(f"version: 1\nname: p\ntools:\n{profile}", encoding="utf-8")
    cat = catalog(tmp_path, upstreams="  up:\n    command: [x]\n    profile: ./p.yaml\n", scopes="[]")
    for claim in (NOT_DESTRUCTIVE, READ_ONLY, ToolAnnotations(readOnlyHint=True, destructiveHint=False)):
        rule = cat.rule("up", "writes", claim)
        assert rule.destructive and not rule.read_only and rule.gated, claim
    assert not cat.rule("up", "reads", DESTRUCTIVE).gated
