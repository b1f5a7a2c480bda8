"""`check`: the effective table, the Rule-of-Two and weakening warnings, and no secrets in the output."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.check import run_check

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted([*REPO.glob("policies/*.yaml"), *REPO.glob("policies/teams/*.yaml")])
SECRET = "sk-test-SECRET-123"
SCRIPT = "import sys; from proxy.check import run_check; sys.exit(run_check(sys.argv[1]))"

BASE = """\
version: 1
team: t
upstreams:
  smsapi:
    url: https://mcp.smsapi.io/
    headers: {Authorization: "Bearer ${SMSAPI_TOKEN}"}
    profile: smsapi
scopes: [sms, contacts]
"""


def check(path: Path | str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_check(str(path), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def check_text(tmp_path: Path, text: str) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    code, out, err = check(path)
    assert (code, err) == (0, "")
    return out


def row(out: str, tool: str) -> str:
    return next(line for line in out.splitlines() if line.split()[:1] == [tool])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_policies_check_clean(path: Path) -> None:
    code, out, err = check(path)
    assert code == 0, err
    assert err == ""
    assert re.search(r"^TOOL\s+SERVER\s+SCOPE\s+GATED\s+LEGS\s+LIMITS\s+PINS\s+VISIBLE$", out, re.M)
    assert "valid:" in out
    assert "matches no tool" not in out  # the shipped globs have no typos


def test_demo_table_and_rule_of_two() -> None:
    code, out, _ = check(REPO / "policies/demo.yaml")
    assert code == 0
    assert re.search(r"^team\s+demo\b", out, re.M)
    assert "sandbox: builtin sandbox, profile smsapi" in out
    send = row(out, "send_sms")
    assert "yes: destructive+policy" in send and "external" in send and "30/min, max 10 recipients" in send
    assert re.search(r"get_sms\s+sandbox\s+sms\s+no\s+untrusted\+sensitive", out)
    joined = " ".join(out.split())
    assert "WARNING rule of two: this policy exposes untrusted content (get_sms," in joined
    assert "trifecta.action=confirm gates the completing call" in joined


def test_support_hides_denied_and_unscoped_tools() -> None:
    out = check(REPO / "policies/teams/support.yaml")[1]
    assert row(out, "delete_contact").endswith("no: denied by tools.deny 'delete_*'")
    assert row(out, "check_hlr").endswith("no: scope 'hlr' not granted")
    assert row(out, "get_contacts").endswith("yes")
    assert "Authorization: (set from ${SMSAPI_TOKEN})" in out


def test_analytics_is_read_only_and_passes_the_rule_of_two() -> None:
    out = check(REPO / "policies/teams/analytics.yaml")[1]
    for line in out.splitlines():
        if line.endswith(" yes") and not line.startswith(("TOOL", "team")):
            assert line.split()[0].startswith("get_"), line
    assert "rule of two" not in out


def test_elks46_shows_pin_and_env_sources() -> None:
    out = check(REPO / "policies/teams/elks46-dryrun.yaml")[1]
    assert "dry_run=true" in row(out, "send_sms")
    assert "env ELKS_API_PASSWORD: (set from ${ELKS_API_PASSWORD})" in out
    assert "command node /opt/46elks-mcp/dist/index.js" in out


@pytest.mark.parametrize(
    ("action", "says"),
    [
        ("block", "trifecta.action=block refuses the completing call"),
        ("off", "trifecta.action=off — nothing stops it"),
    ],
)
def test_rule_of_two_names_the_action(tmp_path: Path, action: str, says: str) -> None:
    out = check_text(tmp_path, BASE + f"trifecta: {{action: {action}}}\n")
    assert says in " ".join(out.split())


def test_no_rule_of_two_without_external(tmp_path: Path) -> None:
    out = check_text(tmp_path, BASE + "tools: {deny: ['send_*']}\n")
    assert "rule of two" not in out


def test_weakening_warnings(tmp_path: Path) -> None:
    text = BASE + (
        "output: {envelope: false, strip_html: false, strip_markdown: false}\n"
        "confirm: {destructive: false, skip: [delete_contact], without_elicitation: allow}\n"
        "trifecta: {action: off}\n"
        "sampling: allow\n"
        "tools: {unlisted: allow}\n"
        "auth: {required: false}\n"
    )
    out = " ".join(check_text(tmp_path, text).split())
    for needle in (
        "WARNING output.envelope is off",
        "WARNING output.strip_html is off",
        "WARNING output.strip_markdown is off",
        "WARNING confirm.destructive is off",
        "WARNING confirm.without_elicitation is allow",
        "WARNING trifecta.action is off",
        "WARNING sampling is allow",
        "WARNING tools.unlisted is allow",
    ):
        assert needle in out, needle
    assert not any("auth" in w for w in out.split("WARNING")[1:])  # auth.required false is not a weakening


def test_confirm_skip_names_each_destructive_tool(tmp_path: Path) -> None:
    out = " ".join(check_text(tmp_path, BASE + "confirm: {skip: ['delete_*', send_sms]}\n").split())
    for tool in ("delete_contact", "delete_group", "delete_scheduled_sms", "send_sms"):
        assert f"WARNING confirm.skip: {tool} is destructive and runs WITHOUT confirmation" in out
    assert "NO (confirm.skip)" in out


def test_glob_typo_is_flagged(tmp_path: Path) -> None:
    out = check_text(tmp_path, BASE + "tools: {deny: ['delte_*']}\n")
    assert "WARNING tools.deny 'delte_*' matches no tool in the profiles (a typo?)" in out


def test_upstream_without_profile(tmp_path: Path) -> None:
    out = check_text(tmp_path, "version: 1\nteam: t\nupstreams:\n  any: {command: [srv, --flag]}\n")
    assert "any: tools are classified at run time from their annotations" in out
    assert "command srv --flag, no profile" in out
    assert "TOOL" not in out


def test_missing_env_is_a_warning_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMSAPI_TOKEN", raising=False)
    out = " ".join(check_text(tmp_path, BASE).split())
    assert "WARNING environment variable SMSAPI_TOKEN is not set (upstreams.smsapi.headers.Authorization)" in out


def test_url_credentials_are_not_printed(tmp_path: Path) -> None:
    text = BASE.replace("https://mcp.smsapi.io/", "https://user:pw@mcp.example/mcp?key=abc")
    out = check_text(tmp_path, text)
    assert "url https://mcp.example/mcp?(query hidden)" in out
    assert "pw@" not in out and "abc" not in out


def test_broken_policy_exits_2_with_file_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BASE + "confrim: {}\n", encoding="utf-8")
    code, out, err = check(path)
    assert code == 2
    assert out == ""
    assert err.strip() == f"{path}:9: unknown key 'confrim' (did you mean 'confirm'?)"


def test_subprocess_never_prints_a_secret(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SMSAPI_TOKEN": SECRET,
        "ELKS_API_USERNAME": SECRET,
        "ELKS_API_PASSWORD": SECRET,
        "ELKS_PHONE_NUMBER": SECRET,
    }
    broken = tmp_path / "broken.yaml"
    broken.write_text(BASE + "confirm: {timeout_seconds: '${SMSAPI_TOKEN}'}\n", encoding="utf-8")
    for path, want in [*((p, 0) for p in SHIPPED), (broken, 2)]:
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
        )
        assert result.returncode == want, result.stderr
        assert SECRET not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr


def test_interpolated_values_elsewhere_are_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIN_KEY", SECRET)
    out = check_text(tmp_path, BASE + "pins: [{tools: [send_sms], set: {key: '${PIN_KEY}'}}]\n")
    assert SECRET not in out
    assert "key=${PIN_KEY}" in row(out, "send_sms")
