"""Cleaning JSON from an upstream: every string and every key, at any depth (SPEC §5, E4).

No I/O, no policy: the caller passes `clean` (one string in, its sanitised form out).  Nothing
is trusted by where it sits.  A profile may name `verbatim` paths, each with a format: a value
there passes byte-exact only if the whole value matches its format *and* is made of characters
that cannot carry markup or hide text (`_VERBATIM_SAFE`); any other value is cleaned like the rest.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy import credentials

__all__ = ["Verbatim", "clean_json_text", "dump_json", "escape_json_text", "sanitize_json"]

Clean = Callable[[str], str]
Unchanged = Callable[[list[str]], bool]
Verbatim = Mapping[str, "re.Pattern[str]"]

# Characters json.dumps(ensure_ascii=False) leaves raw although they end or hide text in the
# places the JSON travels: line separators (they end JavaScript strings), C1 controls, bidi
# controls, lone surrogates (unencodable as UTF-8) and Unicode tag characters.
_JSON_HIDDEN = re.compile(
    "[\x7f-\x9f\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff\U000e0000-\U000e007f]"
)
# What a verbatim value may hold even when its format allows more: no markup character
# (< > & * _ ` [ ] ( ) ! # | ~), no blank, no control, nothing outside ASCII.
_VERBATIM_SAFE = re.compile(r"[A-Za-z0-9.:+@/=,-]{0,1024}")


def dump_json(value: Any) -> str:
    """json.dumps(ensure_ascii=False) with no raw "<", ">" or hidden characters; same value back."""
    return escape_json_text(json.dumps(value, ensure_ascii=False))


def clean_json_text(
    text: str, clean: Clean, unchanged: Unchanged | None = None, verbatim: Verbatim | None = None
) -> str | None:
    """JSON text with every string and key cleaned and no raw "<" or ">"; None if `text` is no JSON
    object or array.

    When cleaning changes nothing the upstream's own text is kept, escaped as `dump_json` escapes:
    values stay exactly as they were spelt (E4), and re-serialising, half the time of a large
    result, is skipped.  Not when an object repeats a key: a JSON reader keeps the last value, so
    the text would carry one the walk never saw.
    """
    # Repeated keys are only looked for when the text may be kept (looking costs a Python call per
    # object); a text with markup in it will almost surely be written anew, and if not, it is
    # parsed a second time.
    look = not any(sign in text for sign in _CHANGE_SIGNS)
    loaded = _load(text, look)
    if loaded is None:
        return None
    value, repeats = loaded
    walker = _Walker(clean, unchanged)
    result = walker.run(value, _root(verbatim))
    if not walker.changed and not look:
        repeats = _load(text, True)[1]  # type: ignore[index]
    if walker.changed or repeats:
        return dump_json(result)
    # Outside strings a JSON text holds only blanks, tabs, newlines and carriage returns (strict
    # parsing refuses raw controls inside them); a carriage return is dropped, as it could redraw a
    # terminal line, and no token needs it to stay apart from the next.
    return escape_json_text(text.replace("\r", "") if "\r" in text else text)


def sanitize_json(
    value: Any, clean: Clean, unchanged: Unchanged | None = None, verbatim: Verbatim | None = None
) -> Any:
    """A copy of `value` with `clean` applied to every string and every object key.

    `verbatim` maps paths to formats: a path is object keys joined by ".", with "[]" for every
    element of a list and "*" for every key of an object ("list[].id", "[].custom.*").

    `unchanged`, when given, is asked once about many values together; True means `clean` would
    return each as it is, and saves a call per value (a result of ten thousand short messages is
    mostly ordinary text).  It must never answer True wrongly.
    """
    return _Walker(clean, unchanged).run(value, _root(verbatim))


def _load(text: str, look_for_repeats: bool) -> tuple[Any, bool] | None:
    stripped = text.lstrip()
    if not stripped or stripped[0] not in "{[":
        return None
    repeats: list[bool] = []

    def pairs_to_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            repeats.append(True)
        return obj

    try:
        value = json.loads(text, object_pairs_hook=pairs_to_dict if look_for_repeats else None)
    except (ValueError, RecursionError):
        return None  # not JSON, or nested deeper than the parser goes: the caller cleans it as text
    return (value, bool(repeats)) if isinstance(value, dict | list) else None


# Any of these in a JSON text means cleaning will very likely change one of its strings (single
# characters: a longer sign takes a millisecond to look for in a megabyte of non-ASCII text).
_CHANGE_SIGNS = ("<", "*", "`")


def escape_json_text(text: str) -> str:
    """JSON text with "<", ">" and hidden characters inside its strings escaped; the same value."""
    # In JSON text "<" and ">" can only occur inside strings, where \u003c is an equivalent spelling.
    text = text.replace("<", "\\u003c").replace(">", "\\u003e")
    if ("\x7f" in text) if text.isascii() else _JSON_HIDDEN.search(text):  # DEL is the only ASCII one
        text = _JSON_HIDDEN.sub(_json_escape, text)
    return text


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


# --- verbatim paths -----------------------------------------------------------------------------


@dataclass(eq=False)  # compared and hashed by identity: tries are cached and never mutated once built
class _PathNode:
    children: dict[str, _PathNode] = field(default_factory=dict)
    format: re.Pattern[str] | None = None


_Nodes = tuple[_PathNode, ...]
_NONE: _Nodes = ()


def _root(verbatim: Verbatim | None) -> _Nodes:
    if not verbatim:
        return _NONE
    return (_path_trie(tuple(verbatim.items())),)


@functools.lru_cache(maxsize=512)
def _path_trie(paths: tuple[tuple[str, re.Pattern[str]], ...]) -> _PathNode:
    # Cached: the same profile paths come with every result of a tool; the trie is never mutated.
    root = _PathNode()
    for path, fmt in paths:
        node = root
        for segment in _segments(path):
            node = node.children.setdefault(segment, _PathNode())
        node.format = fmt
    return root


def _segments(path: str) -> Iterator[str]:
    for part in path.split("."):
        name = part
        lists = 0
        while name.endswith("[]"):
            name = name[:-2]
            lists += 1
        if name:
            yield name
        yield from ["[]"] * lists


def _verbatim(nodes: _Nodes, value: str) -> bool:
    for node in nodes:
        if node.format is not None and node.format.fullmatch(value) and _VERBATIM_SAFE.fullmatch(value):
            return not credentials.holds(value)  # trusted by its place, but never as a carrier of ours
    return False


def _step_nodes(nodes: _Nodes, key: str) -> _Nodes:
    found = []
    for node in nodes:
        for name in (key, "*"):
            if name in node.children:
                found.append(node.children[name])
    return tuple(found)


# --- the walk -----------------------------------------------------------------------------------

_ASK_SLICE = 128
_LATER = object()  # stands in for a value whose cleaning is decided once the walk is over
_Frame = tuple[Any, Any, _Nodes]


class _Walker:
    """Copies a JSON value with an explicit stack: parsed JSON may nest deeper than the recursion limit."""

    def __init__(self, clean: Clean, unchanged: Unchanged | None = None) -> None:
        self.clean = clean
        self.unchanged = unchanged
        self.stack: list[_Frame] = []
        self.later: list[str] = []  # string values (not keys) in walk order, when `unchanged` is given
        self.slots: list[tuple[Any, Any]] = []  # where each of them goes: (container, key or index)
        self.changed = False  # whether cleaning changed any string or key
        self.steps: dict[tuple[_Nodes, str], _Nodes] = {}  # a list of a thousand objects steps alike

    def run(self, value: Any, root: _Nodes) -> Any:
        result = self.child(value, root)
        if result is _LATER:
            return self.cleaned(value)
        while self.stack:
            source, target, nodes = self.stack.pop()
            if isinstance(target, dict):
                self.fill_object(source, target, nodes)
            else:
                self.fill_array(source, target, nodes)
        if self.later and self.unchanged is not None:
            # Asked in slices: one hostile message then costs a call per value of its slice only.
            values: list[str] = []
            for start in range(0, len(self.later), _ASK_SLICE):
                part = self.later[start : start + _ASK_SLICE]
                values.extend(part if self.unchanged(part) else [self.cleaned(text) for text in part])
            for (container, key), text in zip(self.slots, values, strict=True):
                container[key] = text
        return result

    def cleaned(self, text: str) -> str:
        out = self.clean(text)
        if out != text:
            self.changed = True
        return out

    def place(self, container: Any, key: Any, value: Any) -> None:
        container[key] = value
        if value is _LATER:
            self.slots.append((container, key))

    def child(self, value: Any, nodes: _Nodes) -> Any:
        if isinstance(value, str):
            if nodes and _verbatim(nodes, value):
                return value
            if self.unchanged is None:
                return self.cleaned(value)
            self.later.append(value)
            return _LATER
        if isinstance(value, dict):
            target: dict[Any, Any] = {}
        elif isinstance(value, list | tuple):
            target = []  # type: ignore[assignment]
        else:
            return value
        self.stack.append((value, target, nodes))
        return target

    def fill_object(self, source: dict[Any, Any], target: dict[Any, Any], nodes: _Nodes) -> None:
        for key, item in source.items():
            if isinstance(key, str):
                below = self.step(nodes, key) if nodes else _NONE
                new_key = _unique(self.clean(key), target)
                if new_key != key:  # cleaned or renamed
                    self.changed = True
            else:
                below, new_key = _NONE, key
            self.place(target, new_key, self.child(item, below))

    def step(self, nodes: _Nodes, key: str) -> _Nodes:
        below = self.steps.get((nodes, key))
        if below is None:
            below = self.steps[nodes, key] = _step_nodes(nodes, key)
        return below

    def fill_array(self, source: Any, target: list[Any], nodes: _Nodes) -> None:
        below = tuple(node.children["[]"] for node in nodes if "[]" in node.children) if nodes else _NONE
        for item in source:
            target.append(None)
            self.place(target, len(target) - 1, self.child(item, below))


def _unique(key: str, target: dict[Any, Any]) -> str:
    # Two keys may clean to the same text; keep both values rather than drop one.
    if key not in target:
        return key
    n = 2
    while f"{key} ({n})" in target:
        n += 1
    return f"{key} ({n})"
