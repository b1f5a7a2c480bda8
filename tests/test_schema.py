"""Issue 6: the policy JSON Schema editors use is the one `mcp-guard schema` prints, and every shipped
policy points at it and satisfies it, so an editor never flags a valid policy or misses a typo the loader
would refuse.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from proxy.policy import PolicyError, load_policy
from tests.harness import PY, run

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "policies" / "schema" / "policy.schema.json"
POLICIES = sorted(
    [*REPO.glob("policies/*.yaml"), *REPO.glob("policies/teams/*.yaml"), *REPO.glob("examples/**/*.yaml")]
)
_MODELINE = re.compile(r"# yaml-language-server: \$schema=(\S+)")


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def test_committed_schema_is_what_mcp_guard_schema_prints() -> None:
    printed = run([PY, "-m", "proxy", "schema"])
    assert printed.returncode == 0, printed.stderr
    assert SCHEMA.read_text() == printed.stdout, (
        "policies/schema/policy.schema.json is stale: regenerate it with\n"
        "    .venv/bin/python -m proxy schema > policies/schema/policy.schema.json"
    )


def test_there_are_policies_to_check() -> None:
    names = {p.relative_to(REPO).as_posix() for p in POLICIES}
    assert {"policies/demo.yaml", "policies/teams/support.yaml", "examples/policies/support-passthrough.yaml"} <= names


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_each_policy_names_the_schema_on_its_first_line(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    match = _MODELINE.fullmatch(first)
    assert match, f"{path}: first line should be '# yaml-language-server: $schema=<relative path>', got {first!r}"
    assert (path.parent / match.group(1)).resolve() == SCHEMA.resolve()


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_each_policy_satisfies_the_schema(path: Path) -> None:
    errors = [e.message for e in _validator().iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


def _minimal(**extra: Any) -> dict[str, Any]:
    return {"version": 1, "team": "t", "upstreams": {"s": {"builtin": "sandbox"}}, **extra}


@pytest.mark.parametrize(
    "doc",
    [
        _minimal(confrim={"destructive": True}),  # a typo of a section
        _minimal(confirm={"without_elicitation": "yes"}),  # a value outside the enum
        _minimal(trifecta={"action": "warn"}),
        _minimal(limits=[{"tools": ["send_*"], "per_minute": 0}]),
        _minimal(team="Support Team"),  # not a slug
    ],
)
def test_schema_and_loader_both_refuse_what_weakens_a_policy(doc: dict[str, Any], tmp_path: Path) -> None:
    assert list(_validator().iter_errors(doc)), "an editor would not flag this"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PolicyError):
        load_policy(path)
