"""SPEC §2: shipped profiles and policies work from an installed wheel, not only from a source checkout.

The wheel is built and installed into a directory of its own; the checks run with that directory first on
the path and the working directory outside the checkout, so `import proxy` can only find the installed copy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_demo import running_demo

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Installed:
    wheel: Path
    site: Path
    cwd: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(self.site)
        return env

    def python(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, env=self.env(), cwd=self.cwd, timeout=120
        )


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args, "-q", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    _pip("wheel", str(REPO), "-w", str(tmp / "dist"), "--no-deps")
    [wheel] = (tmp / "dist").glob("mcp_guard-*.whl")
    _pip("install", "--no-deps", "--no-compile", "--target", str(tmp / "site"), str(wheel))
    cwd = tmp / "elsewhere"
    cwd.mkdir()
    return Installed(wheel, tmp / "site", cwd)


def test_wheel_ships_profiles_policies_and_schema(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    teams = {f"proxy/policies/teams/{p.name}" for p in (REPO / "policies" / "teams").glob("*.yaml")}
    expected = {
        "proxy/policies/profiles/smsapi.yaml",
        "proxy/policies/profiles/elks46.yaml",
        "proxy/policies/demo.yaml",
        "proxy/policies/schema/policy.schema.json",
        "proxy/backends/sandbox.py",
        "proxy/backends/sandbox_core.py",
        "proxy/backends/sandbox_messaging.py",
        *teams,
    }
    assert len(teams) >= 4
    assert expected <= names
    # Nothing a working tree accumulates: audit logs, tests, caches.
    assert not [n for n in names if n.endswith(".jsonl") or n.startswith("tests/") or "__pycache__" in n]


def test_installed_package_finds_its_policies_inside_itself(installed: Installed) -> None:
    probe = """
import json, proxy
from proxy.policy import load_policy, policies_dir
shipped = policies_dir()
demo = load_policy(shipped / "demo.yaml")
teams = {p.name: load_policy(p, require_env=False).policy.team for p in sorted((shipped / "teams").glob("*.yaml"))}
print(json.dumps({"package": proxy.__file__, "policies": str(shipped), "demo": demo.policy.team, "teams": teams}))
"""
    done = installed.python("-c", probe)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    site = installed.site.resolve()
    assert Path(found["package"]).resolve().is_relative_to(site)
    assert Path(found["policies"]).resolve() == site / "proxy" / "policies"
    assert found["demo"] == "demo"
    assert set(found["teams"]) == {p.name for p in (REPO / "policies" / "teams").glob("*.yaml")}


def test_installed_check_and_schema_work(installed: Installed) -> None:
    checked = installed.python("-m", "proxy", "check", "--policy", str(installed.site / "proxy/policies/demo.yaml"))
    assert checked.returncode == 0, checked.stderr
    assert "send_sms" in checked.stdout
    schema = installed.python("-m", "proxy", "schema")
    assert schema.returncode == 0, schema.stderr
    assert schema.stdout == (installed.site / "proxy/policies/schema/policy.schema.json").read_text()


@pytest.fixture
def banner(installed: Installed) -> Iterator[str]:
    with running_demo(installed.cwd, installed.env()) as text:
        yield text


def test_installed_demo_keeps_its_audit_out_of_site_packages(installed: Installed, banner: str) -> None:
    policy = re.search(r"policy +(\S+)", banner)
    audit = re.search(r"audit +(\S+)", banner)
    assert policy and audit, banner
    assert Path(policy.group(1)).resolve() == installed.site.resolve() / "proxy/policies/demo.yaml"
    assert Path(audit.group(1)).resolve() == installed.cwd.resolve() / "mcp-guard-demo-audit.jsonl"
    assert not list(installed.site.rglob("*.jsonl"))
