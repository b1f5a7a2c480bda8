"""The README and examples/ are checked against what the code does today, so the docs cannot drift.

- The README's two commands are the ones CI runs.
- The `mcp-guard check` outputs pasted in the README are what `check` prints now.
  Regenerate them with:  .venv/bin/python -m tests.test_readme
- The confirmation prompt pasted in the README is the one the gate renders.
- Every example config parses, names an existing policy and command, and keeps the token out.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.catalog import Catalog
from proxy.check import run_check
from proxy.guards.confirm import render_message
from proxy.policy import load_policy

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
EXAMPLES = REPO / "examples"
# Example configs write paths as a user would after cloning to /path/to/mcp-guard.
CHECKOUT = "/path/to/mcp-guard/"
LOCAL_URL = "http://127.0.0.1:8787/"
_CHECK_BLOCK = re.compile(r"<!-- check: (\S+) -->\n```text\n(.*?)\n```", re.S)
_PROMPT_BLOCK = re.compile(r"<!-- confirm-prompt -->\n````text\n(.*?)\n````", re.S)


def _readme() -> str:
    return README.read_text()


def _commands() -> list[str]:
    section = _readme().split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_readme_gives_exactly_two_commands() -> None:
    commands = _commands()
    assert len(commands) == 2
    assert "mcp-guard demo" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert _commands()[1] in ci


def test_the_test_command_installs_the_pinned_npm_clients_before_pytest() -> None:
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    command = _commands()[1]
    assert ci[-1] == command
    assert command.index("npm ci --prefix tests/npm ") < command.index("python -m pytest")
    lock = json.loads((REPO / "tests" / "npm" / "package-lock.json").read_text())
    pins = json.loads((REPO / "tests" / "npm" / "package.json").read_text())["dependencies"]
    for name, version in pins.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} must be pinned to an exact version"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version


# -- `mcp-guard check` outputs ------------------------------------------------------------------------------------


def check_output(policy: str) -> str:
    """What the README's `SMSAPI_TOKEN=x mcp-guard check --policy <policy>` prints, from the repository root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMSAPI_", "ELKS_"))}
    env.update(SMSAPI_TOKEN="x", PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "check", "--policy", policy],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.rstrip("\n")


def _team_policies() -> list[str]:
    return sorted(p.relative_to(REPO).as_posix() for p in (REPO / "policies" / "teams").glob("*.yaml"))


def test_readme_shows_check_for_every_team_policy() -> None:
    assert [path for path, _ in _CHECK_BLOCK.findall(_readme())] == _team_policies()


@pytest.mark.parametrize("policy", _team_policies())
def test_pasted_check_output_is_current(policy: str) -> None:
    pasted = dict(_CHECK_BLOCK.findall(_readme()))[policy]
    assert pasted == check_output(policy), "README is stale: run  .venv/bin/python -m tests.test_readme"


def update_readme() -> None:
    def fresh(m: re.Match[str]) -> str:
        return f"<!-- check: {m.group(1)} -->\n```text\n{check_output(m.group(1))}\n```"

    README.write_text(_CHECK_BLOCK.sub(fresh, _readme()))


# -- the confirmation prompt --------------------------------------------------------------------------------------


def test_pasted_confirmation_prompt_is_what_the_gate_renders() -> None:
    loaded = load_policy(REPO / "examples" / "policies" / "support-passthrough.yaml")
    rule = Catalog(loaded).rule("smsapi", "send_sms", None)
    arguments = {"to": "48600100200", "message": "Your order #1042 has shipped."}
    [pasted] = _PROMPT_BLOCK.findall(_readme())
    assert pasted == render_message("support", rule, list(rule.gate_reasons), arguments)


def test_readme_has_every_section_a_newcomer_needs() -> None:
    headings = re.findall(r"^## (.+)$", _readme(), re.M)
    for needed in (
        "Two commands",
        "Threat model",
        "Deployment",
        "Policy reference",
        "Profiles",
        "Sessions",
        "Confirmation",
        "Troubleshooting",
        "Performance",
    ):
        assert any(h.startswith(needed) for h in headings), needed


# -- examples/ ----------------------------------------------------------------------------------------------------


def _json_examples() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*.json"))


def _local(path: str) -> Path:
    assert path.startswith(CHECKOUT), f"{path}: example paths start with {CHECKOUT}"
    return REPO / path.removeprefix(CHECKOUT)


def test_there_is_an_example_for_every_client() -> None:
    names = {p.relative_to(EXAMPLES).as_posix() for p in _json_examples()}
    assert names == {
        "claude-code/.mcp.json",
        "claude-desktop/claude_desktop_config.json",
        "claude-desktop/claude_desktop_config.mcp-remote.json",
        "cursor/mcp.json",
        "vscode/.vscode/mcp.json",
    }
    assert (EXAMPLES / "claude-code" / "add-smsapi-guarded.sh").is_file()


def _servers(doc: dict[str, Any]) -> dict[str, Any]:
    return doc.get("mcpServers") or doc["servers"]


@pytest.mark.parametrize("path", _json_examples(), ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_example_parses_and_keeps_the_token_out(path: Path) -> None:
    text = path.read_text()
    doc = json.loads(text)
    [(name, server)] = _servers(doc).items()
    assert name == "smsapi-guarded"
    # No literal credential: a token appears only as a reference the client resolves at run time.
    assert not re.search(r"Bearer (?!\$\{)", text)
    assert "env" not in server
    for value in server.get("headers", {}).values():
        assert re.fullmatch(r"Bearer \$\{(env:|input:)?[A-Za-z_][\w-]*\}", value)
    if "url" in server:
        assert server["url"] == LOCAL_URL


def test_claude_desktop_stdio_example_runs_mcp_guard_stdio_with_the_support_policy() -> None:
    server = _servers(json.loads((EXAMPLES / "claude-desktop" / "claude_desktop_config.json").read_text()))
    wrapper = _local(server["smsapi-guarded"]["command"])
    assert wrapper.is_file() and wrapper.stat().st_mode & stat.S_IXUSR
    program, command, flag, policy = server["smsapi-guarded"]["args"]
    assert program.endswith("/bin/mcp-guard") and (command, flag) == ("stdio", "--policy")
    assert _local(policy) == REPO / "policies" / "teams" / "support.yaml"
    assert run_check(str(_local(policy))) == 0


def test_mcp_remote_example_is_pinned_like_the_tested_client() -> None:
    server = _servers(json.loads((EXAMPLES / "claude-desktop" / "claude_desktop_config.mcp-remote.json").read_text()))
    pinned = json.loads((REPO / "tests" / "npm" / "package.json").read_text())["dependencies"]["mcp-remote"]
    args = server["smsapi-guarded"]["args"]
    assert server["smsapi-guarded"]["command"] == "npx"
    assert args[:3] == ["-y", f"mcp-remote@{pinned}", LOCAL_URL]
    assert args[args.index("--header-file") + 1].endswith(".headers")


def test_claude_code_script_adds_what_the_mcp_json_example_shows() -> None:
    script = (EXAMPLES / "claude-code" / "add-smsapi-guarded.sh").read_text()
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0
    assert "claude mcp add --transport http --scope project" in script
    assert "--header 'Authorization: Bearer ${SMSAPI_TOKEN}'" in script  # single quotes: stored unexpanded
    assert f"smsapi-guarded {LOCAL_URL}" in script
    server = _servers(json.loads((EXAMPLES / "claude-code" / ".mcp.json").read_text()))["smsapi-guarded"]
    assert server == {"type": "http", "url": LOCAL_URL, "headers": {"Authorization": "Bearer ${SMSAPI_TOKEN}"}}


def test_passthrough_policy_says_what_the_support_policy_says(tmp_path: Path) -> None:
    team = yaml.safe_load((REPO / "policies" / "teams" / "support.yaml").read_text())
    gateway = yaml.safe_load((EXAMPLES / "policies" / "support-passthrough.yaml").read_text())
    assert team["upstreams"]["smsapi"].pop("headers") == {"Authorization": "Bearer ${SMSAPI_TOKEN}"}
    assert gateway.pop("auth") == {"mode": "passthrough", "required": True}
    assert gateway == team


def _fake_secret_store(tmp_path: Path, token: str) -> dict[str, str]:
    """A `secret-tool` that answers like libsecret's, first on a PATH without macOS's `security`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "secret-tool"
    # Like libsecret's: the secret without a newline, or exit status 1 when nothing is stored under the name.
    lookup = '[ "$*" = "lookup service mcp-guard-smsapi" ]'
    tool.write_text(f'#!/bin/sh\n{lookup} && [ -n "{token}" ] || exit 1\nprintf %s "{token}"\n')
    tool.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSAPI_")}
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", PYTHONPATH=str(REPO))
    return env


def test_token_wrapper_hands_the_stored_token_to_the_policy(tmp_path: Path) -> None:
    wrapper = EXAMPLES / "claude-desktop" / "with-smsapi-token.sh"
    env = _fake_secret_store(tmp_path, "t0ken-from-the-store")
    policy = str(REPO / "policies" / "teams" / "support.yaml")
    probe = (
        "import os; from proxy.policy import load_policy; p = load_policy(os.sys.argv[1]); "
        "print(p.policy.upstreams['smsapi'].headers['Authorization'])"
    )
    done = subprocess.run([str(wrapper), sys.executable, "-c", probe, policy], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Bearer t0ken-from-the-store"


def test_token_wrapper_refuses_to_run_without_a_stored_token(tmp_path: Path) -> None:
    wrapper = EXAMPLES / "claude-desktop" / "with-smsapi-token.sh"
    done = subprocess.run([str(wrapper), "true"], capture_output=True, text=True, env=_fake_secret_store(tmp_path, ""))
    assert done.returncode == 2
    assert "no token stored" in done.stderr


if __name__ == "__main__":
    update_readme()
