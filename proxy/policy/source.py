"""Policy and profile files as data, and every problem in them as `FILE:LINE: message`.

The YAML is composed by hand (`_Builder`) so that every key and item keeps its line, duplicate keys
are errors rather than a silent last-one-wins, and YAML 1.1's `on`/`off`/`yes`/`no` stay strings.
pydantic's errors are then mapped back to those lines, with a "did you mean" for unknown keys.  No
message ever quotes a value: values may be secrets interpolated from the environment.
"""

from __future__ import annotations

import difflib
import re
import types
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

_MAX_NODES = 100_000
_MAX_DEPTH = 64
# Far beyond any policy or profile; read no further, so a path to /dev/zero or a runaway file is an
# error rather than a process that reads until it is killed.
_MAX_BYTES = 4 * 1024 * 1024


class PolicyError(Exception):
    """A policy or profile that cannot be used. `str()` is one `FILE:LINE: message` per line."""

    def __init__(self, lines: list[str] | str) -> None:
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        super().__init__("\n".join(self.lines))


M = TypeVar("M", bound=BaseModel)


# --------------------------------------------------------------------------- YAML with lines

Loc = tuple[str | int, ...]


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Builder:
    """Plain data from a composed YAML node tree, with the line of every key and item."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Loc, int] = {(): 1}
        self.errors: list[tuple[int, str]] = []
        self._nodes = 0

    def build(self, node: yaml.Node, loc: Loc = ()) -> Any:
        self._nodes += 1
        if self._nodes > _MAX_NODES or len(loc) > _MAX_DEPTH:
            raise PolicyError(f"{self.file}:{node.start_mark.line + 1}: document too large or too deeply nested")
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode):
            out = []
            for i, item in enumerate(node.value):
                self.lines[(*loc, i)] = item.start_mark.line + 1
                out.append(self.build(item, (*loc, i)))
            return out
        return self._scalar(node)

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            line = knode.start_mark.line + 1
            if not isinstance(knode, yaml.ScalarNode):
                self.errors.append((line, f"{_dotted(loc) or 'document'}: keys must be plain strings"))
                continue
            # The key as written: YAML 1.1 would turn `on:`/`yes:` into booleans.
            key = knode.value
            if key in out:
                first = self.lines[(*loc, key)]
                self.errors.append((line, f"duplicate key '{_dotted((*loc, key))}' (first at line {first})"))
                continue
            self.lines[(*loc, key)] = line
            out[key] = self.build(vnode, (*loc, key))
        return out

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        # YAML 1.2 core semantics: `off`, `no`, `yes` stay strings (pydantic still reads them
        # as booleans where a boolean is expected), so `action: off` means "off", not False.
        tag, text = node.tag, node.value
        if tag.endswith(":null"):
            return None
        if tag.endswith(":bool"):
            return text.lower() == "true" if text.lower() in ("true", "false") else text
        if tag.endswith(":int") and re.fullmatch(r"[-+]?[0-9]+", text):
            return int(text)
        if tag.endswith(":float") and re.fullmatch(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", text):
            return float(text)
        return text


def _read_yaml(path: Path, what: str) -> tuple[Any, dict[Loc, int]]:
    file = str(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_BYTES + 1)
        if len(raw) > _MAX_BYTES:
            raise PolicyError(f"{file}:1: {what} is larger than {_MAX_BYTES // (1024 * 1024)} MiB")
        text = raw.decode("utf-8")
    except OSError as exc:
        raise PolicyError(f"{file}:1: cannot read {what}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{file}:1: {what} is not UTF-8 text") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise PolicyError(f"{file}:{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{file}:1: YAML error: {type(exc).__name__}") from None
    if root is None:
        raise PolicyError(f"{file}:1: {what} is empty")
    builder = _Builder(file)
    data = builder.build(root)
    if builder.errors:
        raise PolicyError([f"{file}:{line}: {msg}" for line, msg in sorted(builder.errors)])
    if not isinstance(data, dict):
        raise PolicyError(f"{file}:{root.start_mark.line + 1}: {what} must be a mapping of keys to values")
    return data, builder.lines


# --------------------------------------------------------------------------- validation errors


def _line_for(lines: dict[Loc, int], loc: Loc) -> int:
    """The line of the deepest known prefix of `loc`; parts pydantic adds (union tags, `[key]`) are skipped."""
    best: Loc = ()
    for part in loc:
        if (*best, part) in lines:
            best = (*best, part)
    return lines.get(best, 1)


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            inner = [a for a in get_args(tp) if a is not type(None)]
            tp = inner[0] if len(inner) == 1 else tp
            if len(inner) != 1:
                return tp
        else:
            return tp


def _keys_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the model accepts at `loc`, to suggest a correction for a typo."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {f.alias or n: f for n, f in tp.model_fields.items()}
            if part not in fields:
                return []
            tp = fields[part].annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) in (list, tuple, frozenset):
            tp = get_args(tp)[0]
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items()]
    return []


def _describe(model: type[BaseModel], err: Any) -> str:
    loc: Loc = tuple(p for p in err["loc"] if isinstance(p, int) or not str(p).startswith(("function-", "[")))
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        close = difflib.get_close_matches(key, _keys_at(model, loc[:-1]), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown key '{_dotted(loc)}'{hint}" if len(loc) > 1 else f"unknown key '{key}'{hint}"
    if kind == "missing":
        return f"missing required key '{_dotted(loc)}'"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{_dotted(loc)}: {msg}" if loc else msg


def _validate(model: type[M], data: Any, lines: dict[Loc, int], file: str, extra: list[tuple[int, str]]) -> M:
    errors = list(extra)
    result: M | None = None
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        errors += [(_line_for(lines, tuple(e["loc"])), _describe(model, e)) for e in exc.errors()]
    if errors or result is None:
        raise PolicyError([f"{file}:{line}: {msg}" for line, msg in sorted(errors, key=lambda e: e[0])])
    return result
