"""Team policies and upstream profiles: pydantic models and a loader that reports `FILE:LINE`.

A policy is security configuration, so the loader is strict: unknown keys, duplicate keys,
wrong types and missing `${VAR}`s are errors, and every error names the file and line. No
error ever quotes a value, because values may be secrets interpolated from the environment.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

import proxy

Leg = Literal["untrusted", "sensitive", "external"]
LEGS: tuple[Leg, ...] = ("untrusted", "sensitive", "external")

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A result path: dot-separated segments, each a key (or `*`, any key) followed by any number of `[]`.
_FIELD_PATH = re.compile(r"(?:\*|[^.\[\]*]+)?(?:\[\])*(?:\.(?:\*|[^.\[\]*]+)(?:\[\])*)*")
_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|(\{[^}]*\}?))")

_MAX_NODES = 100_000
_MAX_DEPTH = 64


class PolicyError(Exception):
    """A policy or profile that cannot be used. `str()` is one `FILE:LINE: message` per line."""

    def __init__(self, lines: list[str] | str) -> None:
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        super().__init__("\n".join(self.lines))


# --------------------------------------------------------------------------- field types


def _slug(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise ValueError("must be lowercase letters, digits, '-' or '_', starting with a letter or digit")
    return value


def _server_name(value: str) -> str:
    _slug(value)
    if "__" in value:
        raise ValueError("must not contain '__' (it separates server and tool in prefixed tool names)")
    return value


def _glob(value: str) -> str:
    if not value.strip():
        raise ValueError("a tool glob must be a non-empty string")
    return value


def _field_path(value: str) -> str:
    if not value or not _FIELD_PATH.fullmatch(value):
        raise ValueError("a result path looks like 'list[].message' ('[]' every element, '*' every key)")
    return value


def _env_value(value: Any) -> Any:
    # Environment values are strings; accept `DRY_RUN: true` rather than fail on a YAML bool.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


# The validators give readable messages; the JSON Schema still carries the patterns for editors.
Slug = Annotated[str, AfterValidator(_slug), WithJsonSchema({"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"})]
ServerName = Annotated[
    str,
    AfterValidator(_server_name),
    WithJsonSchema({"type": "string", "pattern": "^(?!.*__)[a-z0-9][a-z0-9_-]*$"}),
]
Glob = Annotated[str, AfterValidator(_glob)]
Globs = tuple[Glob, ...]
FieldPath = Annotated[str, AfterValidator(_field_path)]
EnvValue = Annotated[str, BeforeValidator(_env_value)]
Seconds = Annotated[float, Field(gt=0)]


M = TypeVar("M", bound=BaseModel)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- policy


class Upstream(_Model):
    url: str | None = None
    command: tuple[str, ...] | None = None
    builtin: Literal["sandbox"] | None = None
    transport: Literal["auto", "streamable-http", "sse"] = "auto"
    headers: dict[str, str] = Field(default_factory=dict)
    env: dict[str, EnvValue] = Field(default_factory=dict)
    cwd: str | None = None
    profile: str | None = None
    timeout_seconds: Seconds = 30.0

    @model_validator(mode="after")
    def _one_kind(self) -> Upstream:
        kinds = [k for k in ("url", "command", "builtin") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("an upstream needs exactly one of url, command or builtin")
        if self.url is not None:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError("url must start with http:// or https://")
            if self.env or self.cwd is not None:
                raise ValueError("env and cwd apply only to command upstreams")
        else:
            if self.transport != "auto":
                raise ValueError("transport applies only to url upstreams")
            if self.headers:
                raise ValueError("headers apply only to url upstreams")
        if self.builtin is not None and (self.env or self.cwd is not None):
            raise ValueError("env and cwd apply only to command upstreams")
        if self.command is not None and (not self.command or not all(self.command)):
            raise ValueError("command must be a non-empty list of non-empty strings")
        for name, value in self.headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name} must not contain a line break")
        for name in self.env:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"env name {name!r} is not a valid environment variable name")
        return self


class ToolsPolicy(_Model):
    allow: Globs = ("*",)
    deny: Globs = ()
    unlisted: Literal["hide", "allow"] = "hide"


class ConfirmPolicy(_Model):
    destructive: bool = True
    tools: Globs = ()
    skip: Globs = ()
    timeout_seconds: Seconds = 300.0
    without_elicitation: Literal["deny", "allow"] = "deny"


class OutputPolicy(_Model):
    envelope: bool = True
    strip_html: bool = True
    strip_markdown: bool = True
    max_chars: Annotated[int, Field(ge=1)] = 100_000


class TrifectaPolicy(_Model):
    action: Literal["block", "confirm", "off"] = "confirm"
    idle_seconds: Seconds = 1800.0


class LimitRule(_Model):
    """Limits for the tools matching `tools`, counted per team across all of them together.

    per_minute: at most N calls in any sliding window of `window_seconds` (default 60, so
      literally per minute; a shorter window suits tests, a longer one daily quotas).
      Only forwarded calls count; a refused one names the wait until the oldest call leaves
      the window.
    max_recipients: at most N recipients in one call, counted from the profile's
      `recipients.args` (comma-separated lists); a send to a group (`recipients.group_args`)
      has an unknown size, so it is gated for a human yes instead.
    """

    tools: Annotated[Globs, Field(min_length=1)]
    per_minute: Annotated[int, Field(ge=1)] | None = None
    window_seconds: Annotated[float, Field(ge=1)] = 60.0
    max_recipients: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _some_limit(self) -> LimitRule:
        if self.per_minute is None and self.max_recipients is None:
            raise ValueError("a limit needs per_minute or max_recipients")
        if "window_seconds" in self.model_fields_set and self.per_minute is None:
            raise ValueError("window_seconds applies only to per_minute")
        return self


class PinRule(_Model):
    tools: Annotated[Globs, Field(min_length=1)]
    values: dict[str, Any] = Field(default_factory=dict, alias="set")
    forbid: tuple[Annotated[str, Field(min_length=1)], ...] = ()

    @model_validator(mode="after")
    def _some_pin(self) -> PinRule:
        if not self.values and not self.forbid:
            raise ValueError("a pin needs set or forbid")
        both = sorted(set(self.values) & set(self.forbid))
        if both:
            raise ValueError(f"argument {both[0]!r} is both set and forbidden")
        return self


class AuthPolicy(_Model):
    mode: Literal["passthrough", "keys"] = "passthrough"
    required: bool = False


class AuditPolicy(_Model):
    path: str | None = None


class Policy(_Model):
    version: Literal[1] = 1
    team: Slug
    description: str | None = None
    upstreams: Annotated[dict[ServerName, Upstream], Field(min_length=1)]
    scopes: tuple[Annotated[str, Field(min_length=1)], ...] | None = None
    tools: ToolsPolicy = ToolsPolicy()
    confirm: ConfirmPolicy = ConfirmPolicy()
    output: OutputPolicy = OutputPolicy()
    trifecta: TrifectaPolicy = TrifectaPolicy()
    limits: tuple[LimitRule, ...] = ()
    pins: tuple[PinRule, ...] = ()
    sampling: Literal["deny", "allow"] = "deny"
    # An upstream's URL-mode elicitation sends the human to a page of its choosing: refused unless allowed.
    url_elicitation: Literal["deny", "allow"] = "deny"
    auth: AuthPolicy = AuthPolicy()
    audit: AuditPolicy = AuditPolicy()


# --------------------------------------------------------------------------- profile


class ProfileAnnotations(_Model):
    """Overrides of the upstream's MCP tool annotations, spelled as on the wire."""

    read_only_hint: bool | None = Field(None, alias="readOnlyHint")
    destructive_hint: bool | None = Field(None, alias="destructiveHint")
    idempotent_hint: bool | None = Field(None, alias="idempotentHint")
    open_world_hint: bool | None = Field(None, alias="openWorldHint")


class RecipientSpec(_Model):
    args: tuple[str, ...] = ()
    group_args: tuple[str, ...] = ()


def _format(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"a verbatim format must be a regular expression ({exc.msg})") from None
    return value


Format = Annotated[str, AfterValidator(_format)]


class ProfileTool(_Model):
    scope: str | None = None
    legs: frozenset[Leg] | None = None
    # Paths into the JSON result whose values pass byte-exact when the whole value matches the format
    # (and holds no character that could carry markup); every other value is cleaned (SPEC §5).
    verbatim: dict[FieldPath, Format] = Field(default_factory=dict)
    # Removed in favour of cleaning every field; still read so old profiles load, and `check` says
    # it is ignored (it could only ever narrow what was cleaned).
    untrusted_fields: tuple[FieldPath, ...] | None = None
    annotations: ProfileAnnotations | None = None
    recipients: RecipientSpec | None = None

    def verbatim_formats(self) -> dict[str, re.Pattern[str]] | None:
        return {path: re.compile(fmt) for path, fmt in self.verbatim.items()} or None


class ProfileContent(_Model):
    """How a profile classifies what resources/read or prompts/get return (untrusted by default)."""

    legs: frozenset[Leg] = frozenset({"untrusted"})


class Profile(_Model):
    version: Literal[1] = 1
    name: Slug
    description: str | None = None
    groups: dict[Slug, tuple[str, ...]] = Field(default_factory=dict)
    tools: dict[str, ProfileTool] = Field(default_factory=dict)
    resources: ProfileContent = ProfileContent()
    prompts: ProfileContent = ProfileContent()

    def scopes(self) -> set[str]:
        return {t.scope for t in self.tools.values() if t.scope is not None}


# --------------------------------------------------------------------------- loaded result


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    path: Path
    profiles: dict[str, Profile | None]
    missing_env: list[str] = field(default_factory=list)
    # Dotted key path -> the string as written, for every value that referenced ${VAR}:
    # lets `check` show where a value comes from without ever showing the value.
    env_templates: dict[str, str] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def audit_path(self) -> Path | None:
        p = self.policy.audit.path
        return None if p is None else self.base_dir / p


def policies_dir() -> Path:
    """Shipped policies: inside the package in a wheel, beside it in a source checkout."""
    packaged = Path(proxy.__file__).parent / "policies"
    return packaged if packaged.is_dir() else Path(proxy.__file__).parent.parent / "policies"


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
        text = path.read_text(encoding="utf-8")
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


# --------------------------------------------------------------------------- ${VAR}


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


# --------------------------------------------------------------------------- profiles


def _shipped_profiles() -> list[str]:
    return sorted(p.stem for p in (policies_dir() / "profiles").glob("*.yaml"))


def _profile_path(ref: str, base_dir: Path) -> Path:
    """A profile reference is a path when it looks like one, otherwise a shipped profile name."""
    if "/" in ref or "\\" in ref or ref.endswith((".yaml", ".yml")):
        path = base_dir / ref
        if not path.is_file():
            raise ValueError(f"profile file {ref} not found (relative to {base_dir})")
        return path
    path = policies_dir() / "profiles" / f"{ref}.yaml"
    if not _SLUG.fullmatch(ref) or not path.is_file():
        shipped = _shipped_profiles()
        close = difflib.get_close_matches(ref, shipped, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown profile '{ref}'{hint}; shipped profiles: {', '.join(shipped) or 'none'}")
    return path


def _read_profile(path: Path) -> Profile:
    data, lines = _read_yaml(path, "profile")
    profile = _validate(Profile, data, lines, str(path), [])
    errors = [
        (lines.get(("groups", group, i), 1), f"group '{group}' lists '{name}', which is not under tools")
        for group, names in profile.groups.items()
        for i, name in enumerate(names)
        if name not in profile.tools
    ]
    if errors:
        raise PolicyError([f"{path}:{line}: {msg}" for line, msg in errors])
    return profile


def load_profile(path_or_name: str | Path, *, base_dir: Path | str) -> Profile:
    """A shipped profile by name, or a profile file by path (relative to `base_dir`)."""
    try:
        path = _profile_path(str(path_or_name), Path(base_dir))
    except ValueError as exc:
        raise PolicyError(f"{path_or_name}:1: {exc}") from None
    return _read_profile(path)


# --------------------------------------------------------------------------- policies


def load_policy(path: str | Path, *, env: Mapping[str, str] | None = None, require_env: bool = True) -> LoadedPolicy:
    """Load and validate a team policy with its profiles; raise `PolicyError` on any problem."""
    path = Path(path)
    file = str(path)
    data, lines = _read_yaml(path, "policy")
    interp = _interpolate(data, lines, os.environ if env is None else env, require_env)
    policy = _validate(Policy, data, lines, file, interp.errors)
    profiles = _load_profiles(policy, lines, path)
    _check_scopes(policy, profiles, lines, file)
    return LoadedPolicy(
        policy=_resolve_cwds(policy, path.parent),
        path=path,
        profiles=profiles,
        missing_env=interp.missing,
        env_templates=interp.templates,
    )


def _load_profiles(policy: Policy, lines: dict[Loc, int], path: Path) -> dict[str, Profile | None]:
    profiles: dict[str, Profile | None] = {}
    for name, upstream in policy.upstreams.items():
        if upstream.profile is None:
            profiles[name] = None
            continue
        try:
            ref_path = _profile_path(upstream.profile, path.parent)
        except ValueError as exc:
            line = _line_for(lines, ("upstreams", name, "profile"))
            raise PolicyError(f"{path}:{line}: upstreams.{name}.profile: {exc}") from None
        profiles[name] = _read_profile(ref_path)
    return profiles


def _check_scopes(policy: Policy, profiles: dict[str, Profile | None], lines: dict[Loc, int], file: str) -> None:
    profiled = [name for name, p in profiles.items() if p is not None]
    if not profiled:
        return
    if policy.scopes is None:
        line = _line_for(lines, ("upstreams", profiled[0], "profile"))
        raise PolicyError(
            f"{file}:{line}: scopes is required when an upstream has a profile "
            f"(upstreams.{profiled[0]}.profile); list the scopes this team is granted, e.g. scopes: [sms]"
        )
    known = sorted(set().union(*(p.scopes() for p in profiles.values() if p is not None)))
    errors = []
    for i, scope in enumerate(policy.scopes):
        if scope not in known:
            close = difflib.get_close_matches(scope, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            errors.append(
                f"{file}:{_line_for(lines, ('scopes', i))}: unknown scope '{scope}'{hint}; "
                f"the profiles know: {', '.join(known) or 'no scopes'}"
            )
    if errors:
        raise PolicyError(errors)


def _resolve_cwds(policy: Policy, base_dir: Path) -> Policy:
    # A relative cwd means relative to the policy file, like every other path in it.
    upstreams = {
        name: up.model_copy(update={"cwd": str(base_dir / up.cwd)}) if up.cwd and not Path(up.cwd).is_absolute() else up
        for name, up in policy.upstreams.items()
    }
    return policy.model_copy(update={"upstreams": upstreams})
