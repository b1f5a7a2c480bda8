"""Pinning against rug pulls: what each upstream's tools, prompts and resource templates looked like
when a person approved them.

The lockfile (committed beside the policy) holds, per upstream and entry, a sha256 of the canonical
JSON of the fields that reach the model or the client or decide the gate (for a tool: name, title,
description, inputSchema, outputSchema, annotations, execution, _meta) and a readable copy of that
definition, so a review sees the diff. An entry whose definition no longer matches its pin has
*drifted*; one the lockfile does not know is *unpinned*. The policy decides what either means
(hidden and refused, or a warning).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from proxy.logs import printable

LOCK_VERSION = 1
Kind = Literal["tools", "prompts", "resource_templates"]
KINDS: tuple[Kind, ...] = ("tools", "prompts", "resource_templates")
# What reaches the model or the client, or decides the gate, per kind: every field a listing passes
# on. `_meta` and a tool's `execution` are passed to the client, which acts on them (an MCP Apps host
# renders the UI its `ui.resourceUri` names, a client calls as `execution` says): a change there is a
# rug pull too. Icons are never passed on, so they are not pinned.
PINNED_FIELDS: dict[Kind, tuple[str, ...]] = {
    "tools": ("name", "title", "description", "inputSchema", "outputSchema", "annotations", "execution", "_meta"),
    "prompts": ("name", "title", "description", "arguments", "_meta"),
    "resource_templates": ("name", "title", "uriTemplate", "description", "mimeType", "annotations", "_meta"),
}
# `_meta` keys of the protocol's own describe the upstream's hop and are never passed on (untrusted_text).
RESERVED_META = "io.modelcontextprotocol/"
NOUN: dict[Kind, str] = {"tools": "tool", "prompts": "prompt", "resource_templates": "resource template"}
Status = Literal["pinned", "drifted", "unpinned"]
MAX_SEEN = 100_000  # definitions remembered for reporting each drift once


class LockError(Exception):
    """The lockfile cannot be read or written; the message names the file and why."""


class Pin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    definition: dict[str, Any]

    @model_validator(mode="after")
    def _copy_is_what_is_pinned(self) -> Pin:
        # A reviewer reads the copy, serve enforces the digest: a lockfile where they disagree
        # (the copy edited to read "harmless") would approve something nobody read.
        if digest(self.definition) != self.sha256:
            raise ValueError(
                "the readable definition does not match its sha256 (edited by hand?); restore the file from "
                "version control, or delete it and pin again after review"
            )
        return self


class UpstreamPins(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tools: dict[str, Pin] = {}
    # A lockfile written before prompts and templates were pinned has none: they are unpinned.
    prompts: dict[str, Pin] = {}
    resource_templates: dict[str, Pin] = {}

    def of(self, kind: Kind) -> dict[str, Pin]:
        pins: dict[str, Pin] = getattr(self, kind)
        return pins


class Lockfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = LOCK_VERSION
    upstreams: dict[str, UpstreamPins] = {}


def definition(entry: BaseModel, kind: Kind = "tools") -> dict[str, Any]:
    """The pinned fields of a tool, prompt or resource template as the upstream listed them (before
    any cleaning)."""
    wire = entry.model_dump(by_alias=True, mode="json", exclude_none=True)
    if isinstance(meta := wire.get("_meta"), dict):
        # Pinned as the client gets it: without the keys that are dropped on the way (so an upstream
        # that stamps them per listing does not drift), and absent when nothing else is left.
        kept = {k: v for k, v in meta.items() if not k.startswith(RESERVED_META)}
        wire = {k: v for k, v in wire.items() if k != "_meta"} | ({"_meta": kept} if kept else {})
    return {key: wire[key] for key in PINNED_FIELDS[kind] if key in wire}


def digest(defined: Mapping[str, Any]) -> str:
    canonical = json.dumps(defined, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def pin(entry: BaseModel, kind: Kind = "tools") -> Pin:
    defined = definition(entry, kind)
    return Pin(sha256=digest(defined), definition=defined)


def read_lockfile(path: Path) -> Lockfile:
    try:
        return Lockfile.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise LockError(f"{path}: cannot read the lockfile ({exc.strerror})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        message = first["msg"].removeprefix("Value error, ")
        raise LockError(f"{path}: not a valid mcp-guard lockfile ({where}: {message})") from None


def write_lockfile(path: Path, lock: Lockfile) -> None:
    """Written whole or not at all: a reader never sees half a lockfile."""
    text = json.dumps(lock.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Pins:
    """The lockfile's pins, asked per entry: pinned, drifted or unpinned."""

    def __init__(self, lock: Lockfile) -> None:
        self._lock = lock

    def status(self, server: str, entry: Any, kind: Kind = "tools") -> Status:
        pinned = self.pinned(server, entry.name, kind)
        if pinned is None:
            return "unpinned"
        return "pinned" if pinned.sha256 == digest(definition(entry, kind)) else "drifted"

    def pinned(self, server: str, name: str, kind: Kind = "tools") -> Pin | None:
        return self._lock.upstreams.get(server, UpstreamPins()).of(kind).get(name)


def relock(
    lock: Lockfile, server: str, entries: Iterable[Any], only: set[str] | None = None, kind: Kind = "tools"
) -> Lockfile:
    """`lock` with `server`'s entries of `kind` pinned as listed now: all of them, or only those named
    in `only`. A full pin forgets entries the upstream no longer lists."""
    listed = {entry.name: pin(entry, kind) for entry in entries}
    current = lock.upstreams.get(server, UpstreamPins())
    kept = dict(current.of(kind))
    if only is None:
        kept = listed
    else:
        kept.update({name: listed[name] for name in only if name in listed})
    updated = current.model_copy(update={kind: dict(sorted(kept.items()))})
    upstreams = {**lock.upstreams, server: updated}
    return Lockfile(upstreams=dict(sorted(upstreams.items())))


# -- what changed ---------------------------------------------------------------------------------


def describe_drift(old: Mapping[str, Any], new: Mapping[str, Any], kind: Kind = "tools") -> list[str]:
    """Per field, what changed: words for texts, JSON paths for schemas, old → new for annotations."""
    lines: list[str] = []
    for field in PINNED_FIELDS[kind]:
        before, after = old.get(field), new.get(field)
        if before == after:
            continue
        if field in ("description", "title") and (isinstance(before, str) or isinstance(after, str)):
            lines.append(f"{field}: {_word_diff(before or '', after or '')}")
        elif field == "annotations":
            keys = sorted(set(before or {}) | set(after or {}))
            changes = [
                f"{k} {_show((before or {}).get(k))} → {_show((after or {}).get(k))}"
                for k in keys
                if (before or {}).get(k) != (after or {}).get(k)
            ]
            lines.append(f"annotations: {'; '.join(changes)}")
        else:
            for path, was, now in _json_changes(before, after, "$"):
                lines.append(f"{field} {path}: {_show(was)} → {_show(now)}")
    # The upstream wrote these words: an escape sequence or a bidi control must not reach a terminal.
    return [printable(line) for line in lines]


def _word_diff(before: str, after: str) -> str:
    old, new = before.split(), after.split()
    parts: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op == "equal":
            words = old[i1:i2]
            parts.append(" ".join(words if len(words) <= 6 else [*words[:3], "…", *words[-3:]]))
        if op in ("delete", "replace"):
            parts.append("[-" + " ".join(old[i1:i2]) + "-]")
        if op in ("insert", "replace"):
            parts.append("{+" + " ".join(new[j1:j2]) + "+}")
    return " ".join(parts)


_ABSENT = object()


def _json_changes(before: Any, after: Any, path: str) -> list[tuple[str, Any, Any]]:
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(before) | set(after)):
            out += _json_changes(before.get(key, _ABSENT), after.get(key, _ABSENT), f"{path}.{key}")
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        pairs = enumerate(zip(before, after, strict=True))
        return [change for i, (b, a) in pairs for change in _json_changes(b, a, f"{path}[{i}]")]
    return [] if before == after else [(path, before, after)]


def _show(value: Any) -> str:
    if value is _ABSENT or value is None:
        return "(absent)"
    text = json.dumps(value, ensure_ascii=True, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


# -- at run time ------------------------------------------------------------------------------------


class PinCheck:
    """What a team's pins say about each listed tool, prompt and resource template, and which they hide.

    `report(server, kind, name, status)` is called once per definition that drifted or is unpinned, so
    each drift is audited once however often the entry is listed or called.
    """

    def __init__(
        self,
        pins: Pins,
        *,
        new_tools: Literal["hide", "allow"],
        on_drift: Literal["hide", "warn"],
        report: Any,
    ) -> None:
        self.pins = pins
        self.new_tools = new_tools
        self.on_drift = on_drift
        self._report = report
        self._seen: dict[tuple[str, Kind, str], tuple[Status, str]] = {}

    def hides(self, server: str, entry: Any, kind: Kind = "tools") -> str | None:
        """Why `entry` (a tool, prompt or resource template) is hidden and refused, or None when it may
        be listed and used."""
        defined = definition(entry, kind)
        pinned = self.pins.pinned(server, entry.name, kind)
        status: Status = "unpinned" if pinned is None else "pinned" if pinned.sha256 == digest(defined) else "drifted"
        key, now = (server, kind, entry.name), (status, digest(defined))
        if status != "pinned" and self._seen.get(key) != now:
            self._report(server, kind, entry.name, status)
        if key not in self._seen and len(self._seen) >= MAX_SEEN:
            # An upstream that keeps inventing names must not grow this without bound; a forgotten
            # entry is only reported again.
            self._seen.pop(next(iter(self._seen)))
        self._seen[key] = now
        if status == "drifted" and self.on_drift == "hide":
            return "its definition changed since it was pinned; a person reviews it with `mcp-guard pin --diff`"
        if status == "unpinned" and self.new_tools == "hide":
            return "it is not pinned in the lockfile; a person approves it with `mcp-guard pin --approve`"
        return None

    def counts(self) -> dict[str, int]:
        statuses = [status for status, _ in self._seen.values()]
        return {"drifted": statuses.count("drifted"), "unpinned": statuses.count("unpinned")}


# -- resource templates ------------------------------------------------------------------------------

_EXPRESSION = re.compile(r"\{([+#./;?&]?)([^{}]*)\}")
MAX_URI = 8192  # a longer URI is taken to match every template (no sweep over megabytes)
# Characters each kind of expansion may produce (RFC 6570, read loosely: a template that could
# describe a URI is taken to describe it).
_SEGMENT = frozenset("/?#")  # simple expansion: not across a path segment, query or fragment
_REST = frozenset("#")  # reserved, label, path, parameter and query expansions: up to a fragment
_ANYTHING: frozenset[str] = frozenset()  # fragment expansion


@lru_cache(maxsize=1024)
def _template_parts(template: str) -> tuple[str | frozenset[str], ...] | None:
    """A URI template as literals and wildcards (each wildcard: the characters it may not cross);
    None for one that is not a template (an unclosed brace)."""
    parts: list[str | frozenset[str]] = []
    at = 0
    for match in _EXPRESSION.finditer(template):
        if match.start() > at:
            parts.append(template[at : match.start()])
        operator = match.group(1)
        parts.append(_SEGMENT if operator == "" else _ANYTHING if operator == "#" else _REST)
        at = match.end()
    rest = template[at:]
    if "{" in rest or "}" in rest:
        return None
    if rest:
        parts.append(rest)
    return tuple(parts)


def uri_matches(template: str, uri: str) -> bool:
    """Whether `uri` could be an expansion of `template` (a template that cannot be read matches every
    URI, so a hidden one still refuses what it might describe).

    Matched by a sweep over the set of reachable positions, linear in the URI per template part: an
    upstream's template is no regular expression that could make a read backtrack for ever.
    """
    parts = _template_parts(template)
    if parts is None or len(uri) > MAX_URI:
        return True
    reach = {0}
    for part in parts:
        if not reach:
            return False
        if isinstance(part, str):
            reach = {p + len(part) for p in reach if uri.startswith(part, p)}
            continue
        # A wildcard: from the earliest reachable position onward, every position up to the next
        # character it may not cross (each reachable start extends the run it is in).
        extended: set[int] = set()
        for start in sorted(reach):
            if start in extended:
                continue
            p = start
            extended.add(p)
            while p < len(uri) and uri[p] not in part:
                p += 1
                extended.add(p)
        reach = extended
    return len(uri) in reach
