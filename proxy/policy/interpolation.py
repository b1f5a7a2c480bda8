"""`${VAR}` in policy values: replaced from the environment, each value registered as a secret.

Only string values are interpolated, never keys.  `$$` is a literal `$`.  A missing variable keeps
its reference as written (so no partial value is ever built) and is an error, or, for `check`, a
name collected for a warning.  Every value that came from the environment is registered with
`proxy.redact`, and the template it replaced is kept so `check` can say where a value comes from.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.policy.source import Loc, _dotted, _line_for

_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|(\{[^}]*\}?))")


def _strings(data: Any, loc: Loc = ()) -> Iterator[tuple[Loc, str]]:
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _strings(v, (*loc, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _strings(v, (*loc, i))
    elif isinstance(data, str):
        yield loc, data


def _set_at(data: Any, loc: Loc, value: Any) -> None:
    for part in loc[:-1]:
        data = data[part]
    data[loc[-1]] = value


def env_names(text: str) -> list[str]:
    """The variables a string references with `${NAME}` (not `$${NAME}`, which is literal)."""
    return [m.group(2) for m in _VAR.finditer(text) if m.group(2)]


@dataclass
class _Interpolation:
    env: Mapping[str, str]
    require: bool
    missing: list[str] = field(default_factory=list)
    templates: dict[str, str] = field(default_factory=dict)
    errors: list[tuple[int, str]] = field(default_factory=list)

    def expand(self, text: str, line: int, where: str) -> str:
        if env_names(text):
            self.templates[where] = text
        return _VAR.sub(lambda m: self._substitute(m, line, where), text)

    def _substitute(self, m: re.Match[str], line: int, where: str) -> str:
        if m.group(1):
            return "$"
        name = m.group(2)
        if name is None:
            self.errors.append((line, f"bad variable reference in {where}: write ${{NAME}}, or $$ for a '$'"))
        elif name in self.env:
            from proxy.redact import register_secret

            # Whatever comes from the environment may be a credential: no log line may show it.
            register_secret(self.env[name])
            return self.env[name]
        else:
            if name not in self.missing:
                self.missing.append(name)
            if self.require:
                self.errors.append((line, f"environment variable {name} is not set ({where})"))
        # Unresolved: keep the reference as written, so no partial value is ever built.
        return m.group(0)


def _interpolate(data: dict[str, Any], lines: dict[Loc, int], env: Mapping[str, str], require: bool) -> _Interpolation:
    """Replace `${VAR}` in every string value in place; `$$` is a literal `$`."""
    result = _Interpolation(env, require)
    for loc, text in list(_strings(data)):
        if "$" in text:
            _set_at(data, loc, result.expand(text, _line_for(lines, loc), _dotted(loc)))
    return result
