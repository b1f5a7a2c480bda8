"""Policy and profile loading: shipped files load, and every error is one `FILE:LINE: message`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.policy import PolicyError, load_policy, load_profile, policies_dir

REPO = Path(__file__).resolve().parent.parent
FAKE_ENV = {
    "SMSAPI_TOKEN": "sk-test-token",
    "ELKS_API_USERNAME": "u-test",
    "ELKS_API_PASSWORD": "p-test",
    "ELKS_PHONE_NUMBER": "+46700000000",
}
SHIPPED_POLICIES = sorted(
    [*REPO.glob("policies/*.yaml"), *REPO.glob("policies/teams/*.yaml"), *REPO.glob("examples/**/*.yaml")]
)
SHIPPED_PROFILES = sorted(REPO.glob("policies/profiles/*.yaml"))

MINIMAL = """\
version: 1
team: support
upstreams:
  smsapi:
    url: https://mcp.smsapi.io/
    headers:
      Authorization: "Bearer ${SMSAPI_TOKEN}"
    profile: smsapi
scopes: [sms, contacts]
"""


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(path, env=FAKE_ENV if env is None else env)
    text = str(info.value)
    for line in text.splitlines():
        assert re.match(r"^.+:\d+: \S", line), line
    return text


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# ---- shipped files


@pytest.mark.parametrize("path", SHIPPED_POLICIES, ids=lambda p: p.name)
def test_shipped_policy_loads(path: Path) -> None:
    loaded = load_policy(path, env=FAKE_ENV)
    assert loaded.missing_env == []
    assert loaded.policy.upstreams
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")


@pytest.mark.parametrize("path", SHIPPED_PROFILES, ids=lambda p: p.name)
def test_shipped_profile_loads(path: Path) -> None:
    profile = load_profile(path.stem, base_dir=REPO)
    assert profile.name == path.stem
    assert profile.tools
    for name, tool in profile.tools.items():
        assert tool.legs is not None, f"{name} has no legs"
        assert tool.scope, f"{name} has no scope"


def test_shipped_policies_are_found() -> None:
    assert {"demo.yaml"} <= {p.name for p in SHIPPED_POLICIES}
    assert {"support.yaml", "marketing.yaml", "analytics.yaml", "elks46-dryrun.yaml"} <= {
        p.name for p in SHIPPED_POLICIES
    }


def test_policies_dir_finds_shipped_profiles() -> None:
    assert (policies_dir() / "profiles" / "smsapi.yaml").is_file()
    assert (policies_dir() / "profiles" / "elks46.yaml").is_file()


def test_smsapi_profile_covers_every_scope_and_group() -> None:
    profile = load_profile("smsapi", base_dir=REPO)
    assert profile.scopes() == {"sms", "contacts", "profile", "subuser", "short_url", "hlr", "blacklist", "sms_sender"}
    assert list(profile.groups) == ["sms", "contacts", "account", "subusers", "short-url", "hlr", "blacklist"]
    grouped = {name for names in profile.groups.values() for name in names}
    assert grouped == set(profile.tools)
    assert profile.tools["get_contacts"].verbatim == {"collection[].id": "^[0-9a-f]{24}$"}
    assert all(tool.untrusted_fields is None for tool in profile.tools.values())  # the old key is gone
    assert profile.tools["send_sms"].recipients is not None
    assert profile.tools["send_sms"].recipients.args == ("to",)
    assert profile.tools["send_group_sms"].recipients is not None
    assert profile.tools["send_group_sms"].recipients.group_args == ("group",)


def test_elks46_profile_classifies_every_tool() -> None:
    profile = load_profile("elks46", base_dir=REPO)
    assert set(profile.tools) == {
        "send_sms",
        "get_sms_messages",
        "check_sms_status",
        "check_account_balance",
        "estimate_sms_cost",
        "get_delivery_statistics",
    }
    for name, tool in profile.tools.items():
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is (name != "send_sms")
        assert not tool.verbatim  # plain-text results: cleaned whole
    assert profile.tools["send_sms"].annotations.destructive_hint is True  # type: ignore[union-attr]


def test_elks46_dryrun_pins_dry_run() -> None:
    loaded = load_policy(REPO / "policies/teams/elks46-dryrun.yaml", env=FAKE_ENV)
    (pin,) = loaded.policy.pins
    assert pin.values == {"dry_run": True}
    assert loaded.policy.upstreams["elks"].env["DRY_RUN"] == "true"


# ---- defaults


def test_defaults_fail_closed(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, MINIMAL), env=FAKE_ENV).policy
    assert policy.confirm.destructive is True
    assert policy.confirm.without_elicitation == "deny"
    assert policy.trifecta.action == "confirm"
    assert policy.output.envelope and policy.output.strip_html and policy.output.strip_markdown
    assert policy.sampling == "deny"
    assert policy.tools.unlisted == "hide"
    assert policy.tools.allow == ("*",)
    assert policy.auth.mode == "passthrough"


# ---- errors name the file and line


def test_unknown_key_names_line_and_suggests(tmp_path: Path) -> None:
    text = MINIMAL + "confrim:\n  destructive: false\n"
    path = write(tmp_path, text)
    error = error_of(path)
    assert error == f"{path}:{line_of(text, 'confrim')}: unknown key 'confrim' (did you mean 'confirm'?)"


def test_nested_unknown_key_suggests(tmp_path: Path) -> None:
    text = MINIMAL + "confirm:\n  destructve: false\n"
    path = write(tmp_path, text)
    error = error_of(path)
    assert error.startswith(f"{path}:{line_of(text, 'destructve')}: unknown key 'confirm.destructve'")
    assert "did you mean 'destructive'?" in error


def test_wrong_type_names_line(tmp_path: Path) -> None:
    text = MINIMAL + "confirm:\n  tools: [send_sms]\n  timeout_seconds: soon\n"
    path = write(tmp_path, text)
    error = error_of(path)
    assert error.startswith(f"{path}:{line_of(text, 'timeout_seconds')}: confirm.timeout_seconds:")


def test_range_and_list_item_errors(tmp_path: Path) -> None:
    text = MINIMAL + "limits:\n  - tools: [send_sms]\n    per_minute: 0\n  - tools: ['']\n    per_minute: 5\n"
    path = write(tmp_path, text)
    lines = error_of(path).splitlines()
    assert lines[0].startswith(f"{path}:{line_of(text, 'per_minute: 0')}: limits[0].per_minute:")
    empty_glob = line_of(text, "tools: ['']")
    assert lines[1].startswith(f"{path}:{empty_glob}: limits[1].tools[0]:")


def test_several_errors_sorted_by_line(tmp_path: Path) -> None:
    text = MINIMAL + "sampling: maybe\nconfrim: {}\n"
    lines = error_of(write(tmp_path, text)).splitlines()
    assert len(lines) == 2
    assert [int(line.split(":")[1]) for line in lines] == [10, 11]


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nteam: x\n  upstreams: [\n")
    error = error_of(path)
    assert error.startswith(f"{path}:3: YAML syntax error")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    text = MINIMAL + "trifecta: {action: off}\ntrifecta: {action: block}\n"
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}:11: duplicate key 'trifecta' (first at line 10)"


def test_empty_and_non_mapping_files(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, "", "empty.yaml")).endswith(":1: policy is empty")
    assert "must be a mapping" in error_of(write(tmp_path, "- a\n", "list.yaml"))


def test_missing_file(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.yaml").startswith(f"{tmp_path / 'nope.yaml'}:1: cannot read policy")


def test_upstream_needs_exactly_one_kind(tmp_path: Path) -> None:
    text = "version: 1\nteam: x\nupstreams:\n  a:\n    url: https://x/\n    builtin: sandbox\n"
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}:4: upstreams.a: an upstream needs exactly one of url, command or builtin"


def test_upstream_name_without_double_underscore(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nteam: x\nupstreams:\n  a__b: {builtin: sandbox}\n")
    assert "must not contain '__'" in error_of(path)


def test_scopes_required_with_a_profile(tmp_path: Path) -> None:
    text = MINIMAL.replace("scopes: [sms, contacts]\n", "")
    path = write(tmp_path, text)
    assert error_of(path).startswith(f"{path}:{line_of(text, 'profile:')}: scopes is required")


def test_unknown_scope_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("[sms, contacts]", "[sms, contact]"))
    assert "unknown scope 'contact' (did you mean 'contacts'?)" in error_of(path)


def test_unknown_profile_suggests(tmp_path: Path) -> None:
    text = MINIMAL.replace("profile: smsapi", "profile: smsap")
    path = write(tmp_path, text)
    error = error_of(path)
    assert error.startswith(f"{path}:{line_of(text, 'profile:')}: upstreams.smsapi.profile: unknown profile 'smsap'")
    assert "did you mean 'smsapi'?" in error


def test_profile_errors_name_the_profile_file(tmp_path: Path) -> None:
    profile = write(
        tmp_path,
        "version: 1\nname: p\ngroups: {g: [t1, t2]}\ntools:\n  t1: {legs: [untrusted, evil]}\n",
        "profiles/p.yaml",
    )
    path = write(
        tmp_path, "version: 1\nteam: x\nupstreams:\n  a: {builtin: sandbox, profile: profiles/p.yaml}\nscopes: []\n"
    )
    assert error_of(path).startswith(f"{profile}:5: tools.t1.legs[1]:")
    profile.write_text("version: 1\nname: p\ngroups:\n  g: [t1, t2]\ntools:\n  t1: {}\n", encoding="utf-8")
    assert error_of(path) == f"{profile}:4: group 'g' lists 't2', which is not under tools"


# ---- ${VAR}


def test_env_interpolation(tmp_path: Path) -> None:
    loaded = load_policy(write(tmp_path, MINIMAL), env={"SMSAPI_TOKEN": "abc"})
    assert loaded.policy.upstreams["smsapi"].headers["Authorization"] == "Bearer abc"
    assert loaded.env_templates == {"upstreams.smsapi.headers.Authorization": "Bearer ${SMSAPI_TOKEN}"}


def test_double_dollar_is_a_literal_dollar(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("Bearer ${SMSAPI_TOKEN}", "Bearer $${SMSAPI_TOKEN} US$5"))
    header = load_policy(path, env={}).policy.upstreams["smsapi"].headers["Authorization"]
    assert header == "Bearer ${SMSAPI_TOKEN} US$5"


def test_missing_env_var_names_it_and_no_value(tmp_path: Path) -> None:
    text = MINIMAL.replace("url: https://mcp.smsapi.io/", "url: https://mcp.smsapi.io/${SECRET_PATH}")
    path = write(tmp_path, text)
    error = error_of(path, env={"SECRET_PATH": "sk-test-SECRET-123"})
    assert error == (
        f"{path}:{line_of(text, 'Authorization')}: environment variable SMSAPI_TOKEN is not set "
        "(upstreams.smsapi.headers.Authorization)"
    )
    assert "sk-test-SECRET-123" not in error


def test_errors_never_quote_interpolated_values(tmp_path: Path) -> None:
    text = MINIMAL + "confirm:\n  timeout_seconds: '${SMSAPI_TOKEN}'\n"
    error = error_of(write(tmp_path, text), env={"SMSAPI_TOKEN": "sk-test-SECRET-123"})
    assert "confirm.timeout_seconds" in error
    assert "SECRET" not in error


def test_bad_variable_reference(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("${SMSAPI_TOKEN}", "${SMSAPI TOKEN}"))
    assert "bad variable reference in upstreams.smsapi.headers.Authorization" in error_of(path)


def test_require_env_false_collects_names(tmp_path: Path) -> None:
    text = MINIMAL.replace("url: https://mcp.smsapi.io/", "url: https://mcp.smsapi.io/${A}/${SMSAPI_TOKEN}")
    loaded = load_policy(write(tmp_path, text), env={}, require_env=False)
    assert loaded.missing_env == ["A", "SMSAPI_TOKEN"]
    assert loaded.policy.upstreams["smsapi"].headers["Authorization"] == "Bearer ${SMSAPI_TOKEN}"
    assert set(loaded.env_templates) == {"upstreams.smsapi.url", "upstreams.smsapi.headers.Authorization"}


# ---- paths and value forms


def test_profile_path_relative_to_policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path,
        "version: 1\nname: mine\ngroups: {g: [t]}\ntools:\n  t: {scope: s, legs: [sensitive]}\n",
        "team/profiles/mine.yaml",
    )
    policy = write(
        tmp_path,
        "version: 1\nteam: x\nupstreams:\n  a: {builtin: sandbox, profile: ./profiles/mine.yaml}\nscopes: [s]\n",
        "team/policy.yaml",
    )
    monkeypatch.chdir(tmp_path)
    loaded = load_policy(Path("team/policy.yaml"), env={})
    assert loaded.profiles["a"] is not None
    assert loaded.profiles["a"].name == "mine"
    assert loaded.path == Path("team/policy.yaml")
    assert policy.exists()


def test_missing_profile_path(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nteam: x\nupstreams:\n  a: {builtin: sandbox, profile: ./nope.yaml}\n")
    assert "profile file ./nope.yaml not found" in error_of(path)


def test_relative_cwd_and_audit_path_follow_the_policy_file(tmp_path: Path) -> None:
    text = "version: 1\nteam: x\nupstreams:\n  a: {command: [node, x.js], cwd: srv}\naudit: {path: logs/a.jsonl}\n"
    loaded = load_policy(write(tmp_path, text), env={})
    assert loaded.policy.upstreams["a"].cwd == str(tmp_path / "srv")
    assert loaded.audit_path == tmp_path / "logs/a.jsonl"


def test_yaml_12_words_stay_strings(tmp_path: Path) -> None:
    text = MINIMAL + "trifecta: {action: off}\nconfirm: {destructive: yes}\n"
    policy = load_policy(write(tmp_path, text), env=FAKE_ENV).policy
    assert policy.trifecta.action == "off"
    assert policy.confirm.destructive is True


def test_env_values_accept_scalars(tmp_path: Path) -> None:
    text = "version: 1\nteam: x\nupstreams:\n  a:\n    command: [node]\n    env: {DRY_RUN: true, N: 3}\n"
    env = load_policy(write(tmp_path, text), env={}).policy.upstreams["a"].env
    assert env == {"DRY_RUN": "true", "N": "3"}


def test_pin_set_and_forbid(tmp_path: Path) -> None:
    text = MINIMAL + "pins:\n  - tools: [send_sms]\n    set: {test: true}\n    forbid: [flash]\n"
    (pin,) = load_policy(write(tmp_path, text), env=FAKE_ENV).policy.pins
    assert pin.values == {"test": True}
    assert pin.forbid == ("flash",)
