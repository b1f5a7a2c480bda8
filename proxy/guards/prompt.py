"""The confirmation prompt: what the human reads is, character for character, what is sent (SPEC §6).

Every argument is shown as a JSON literal of the raw value, inside a fenced code block, so a
markdown renderer shows it literally and a plain-text client shows plain JSON. On top of the
JSON escapes the rendering escapes, still as valid JSON, every character that a person could
not see or that a renderer could take for markup:

- controls, format, bidi, tag, private-use, unassigned, separator and other invisible
  characters (`_hidden`) become `\\uXXXX` (a surrogate pair above U+FFFF); newline and tab
  stay the familiar `\\n` and `\\t`;
- `<`, `>`, `&` and the backtick become `\\u003c`, `\\u003e`, `\\u0026` and `\\u0060`, so no HTML
  renderer meets a tag, comment or entity and no value can close the fence.

So `json.loads` of a shown value gives back the raw value exactly. A value too long to show is
cut between two characters (never inside an escape), a cut string is closed, and the line ends
with how many raw characters are not shown. An argument holding markup or hidden characters gets
its own warning line outside the fence, written only with characters a renderer leaves alone;
an argument whose name could be read as markup is named there by its position instead.
"""

from __future__ import annotations

import html
import json
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# One definition of "emoji" for the project: the sanitiser keeps a variation selector after these too.
from proxy.sanitize import _EMOJI, ParserBudget, sanitize_text

FENCE = "```"
SHOWN_CHARS = 500  # rendered characters of one value; enough for an SMS, short enough to read
NAME_CHARS = 120  # rendered characters of one argument name
# After a cut value, outside its JSON string: a whole value's line never ends with this.
TRUNCATED = "… ({n} more characters not shown)"
# Said once, below the fence, when any argument shows an escape beyond plain JSON's own.
LEGEND = (
    "The arguments are JSON, exactly as they will be sent: \\u003c is a less-than sign, \\u003e a greater-than "
    "sign, \\u0026 an ampersand, \\u0060 a backtick; any other \\uXXXX is a character that would otherwise be "
    "invisible."
)

# Invisible or blank although Python counts them printable (letters, marks, a symbol): Hangul and
# braille fillers, the grapheme joiner, Khmer inherent vowels, Mongolian and Unicode variation
# selectors. Everything Python counts unprintable (categories C* and Z* but the space) is hidden too.
_INVISIBLE_PRINTABLE = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\uffa0\ufe00-\ufe0e\U000e0100-\U000e01ef]"
)
_VS16 = "\ufe0f"
_KEYCAP = "\u20e3"
_EMOJI_CHAR = re.compile(f"[{_EMOJI}]")
_MARKUP_CHARS = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "`": "\\u0060"}
_JSON_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}
# One token of json.dumps output: an escape it wrote, or one character.
_JSON_TOKEN = re.compile(r'\\u[0-9a-fA-F]{4}|\\["\\/bfnrt]|.', re.S)
_JSON_SYNTAX = {'"', "\\"}  # a quote or backslash alone in json.dumps output is JSON syntax, not text

_TAG = re.compile(r"<[A-Za-z!/?]")
_MD_LINK = re.compile(r"!\[|\]\(|\]\[|^\s{0,3}\[[^\]\n]*\]:", re.M)
_SPACE = re.compile(r"\s+")
_FORGED = "(untrusted)"  # sanitize_text's mark on a "SYSTEM:"-like line: a prompt-injection defence, no markup
# An argument name safe to write outside the fence: no markdown can start in it (an underscore
# between word characters never opens emphasis), no autolink, no escape to read.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


# --- characters -------------------------------------------------------------------------------


def _hidden(text: str, i: int) -> bool:
    """True if `text[i]` is a character a person would not see (newline and tab included)."""
    c = text[i]
    if c == _VS16:
        # Emoji presentation after an emoji (❤️, 1️⃣) shows as the emoji itself: kept, so ordinary
        # messages raise no alarm. Anywhere else it carries nothing a person sees.
        prev = text[i - 1] if i else ""
        keycap = prev != "" and prev in "0123456789#*" and text[i + 1 : i + 2] == _KEYCAP
        return not (_EMOJI_CHAR.match(prev) or keycap)
    return not c.isprintable() or _INVISIBLE_PRINTABLE.match(c) is not None


def _u_escape(c: str) -> str:
    code = ord(c)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _escape_at(text: str, i: int) -> str:
    """`text[i]` as it appears inside a shown JSON string."""
    c = text[i]
    if c in _JSON_SHORT:
        return _JSON_SHORT[c]
    if c in _MARKUP_CHARS:
        return _MARKUP_CHARS[c]
    return _u_escape(c) if _hidden(text, i) else c


def has_hidden(text: str) -> bool:
    """Does `text` hold a character the prompt shows as a \\u escape because it is invisible?"""
    if not text.replace("\n", "").replace("\t", "").isprintable() or _INVISIBLE_PRINTABLE.search(text):
        return True
    at = text.find(_VS16)
    while at >= 0:
        if _hidden(text, at):
            return True
        at = text.find(_VS16, at + 1)
    return False


def markup_kinds(text: str, budget: ParserBudget | None = None) -> list[str]:
    """The kinds of markup in `text` that a renderer would hide, change or follow; [] if none.

    `budget`, shared by the texts of one prompt, bounds the markdown parser's time as it does for a
    result: a call's arguments can hold a thousand texts of dense markdown, read before anyone is asked.
    """
    kinds = []
    if _TAG.search(text):
        kinds.append("an HTML tag or comment")
    if "&" in text and html.unescape(text) != text:
        kinds.append("an HTML entity")
    if _MD_LINK.search(text):
        kinds.append("a markdown image or link")
    if not kinds and _changed_by_sanitizer(text, budget):
        kinds.append("markdown or other formatting")
    return kinds


def _changed_by_sanitizer(text: str, budget: ParserBudget | None = None) -> bool:
    """Would the output sanitiser, the project's model of a renderer, change more than whitespace?"""
    # Its output is entity-escaped once; decode to compare.
    cleaned = html.unescape(sanitize_text(text, parser_budget=budget))
    return _comparable(cleaned) != _comparable(text)


def _comparable(text: str) -> str:
    visible = "".join(c for i, c in enumerate(text) if not _hidden(text, i)) if has_hidden(text) else text
    return _SPACE.sub("", unicodedata.normalize("NFC", visible)).replace(_FORGED, "")


# --- values -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """A value as the prompt shows it; `omitted` raw characters are cut off (0: shown whole, reversible)."""

    text: str
    omitted: int

    def line_part(self) -> str:
        return self.text + TRUNCATED.format(n=self.omitted) if self.omitted else self.text


def _string_pieces(text: str) -> Iterator[tuple[str, int]]:
    """(shown text, raw characters it stands for) of a JSON string literal of `text`."""
    yield '"', 0
    for i in range(len(text)):
        yield _escape_at(text, i), 1
    yield '"', 0


def _json_pieces(text: str) -> Iterator[tuple[str, int]]:
    """The same for the JSON text of a number, boolean, null, object or array.

    json.dumps leaves `<>&` and the backtick, invisible characters, DEL and C1 controls, U+2028/9
    as they are; they can only stand inside its strings, so escaping them keeps the JSON valid.
    """
    for m in _JSON_TOKEN.finditer(text):
        piece = m.group()
        if len(piece) == 1 and piece not in _JSON_SYNTAX:
            piece = _MARKUP_CHARS.get(piece) or (_u_escape(piece) if _hidden(text, m.start()) else piece)
        yield piece, len(m.group())


def _take(pieces: Iterator[tuple[str, int]], total: int, limit: int, close: str = "") -> Shown:
    """The pieces up to `limit` shown characters; a cut string is closed by `close`, so the marker after
    it stands outside the JSON string, where no value can write it."""
    out: list[str] = []
    used = taken = 0
    for piece, raw in pieces:
        # A piece standing for no raw character (a closing quote) always fits: cutting it would
        # make a whole value look cut.
        if raw and used + len(piece) > limit:
            return Shown("".join(out) + close, total - taken)
        out.append(piece)
        used += len(piece)
        taken += raw
    return Shown("".join(out), 0)


def _finite(value: Any) -> Any:
    # The SDK sends NaN and ±Infinity as null (they are not JSON): shown as what is sent.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def literal(value: Any, limit: int = SHOWN_CHARS) -> Shown:
    """`value` as a JSON literal `json.loads` reads back exactly, or its first part if too long.

    A string counts its own characters; any other value counts the characters of its JSON text
    (`json.dumps(value, ensure_ascii=False)`), in the order the keys will be sent.
    """
    if isinstance(value, str):
        return _take(_string_pieces(value), len(value), limit, close='"')
    text = json.dumps(_finite(value), ensure_ascii=False)
    return _take(_json_pieces(text), len(text), limit)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# --- lines outside the fence ------------------------------------------------------------------

_HEADER_ACTIVE = set("<>&`*[]~|\\")


def inert(text: str) -> str:
    """A one-line, markup-free form of a proxy text that may carry upstream or config words (tool
    names, reasons). Not reversible, and need not be: it is the proxy's own line, not a value."""
    out = []
    for i, c in enumerate(text):
        # An underscore between word characters never starts emphasis: tool names like send_sms stay as they are.
        if c in _HEADER_ACTIVE or (c == "_" and not (text[i - 1 : i].isalnum() and text[i + 1 : i + 2].isalnum())):
            out.append(_u_escape(c))
        else:
            out.append(_escape_at(text, i) if _hidden(text, i) else c)
    return "".join(out)


@dataclass(frozen=True)
class _Argument:
    """One argument as the prompt shows it, and what it must warn about."""

    label: str  # how lines outside the fence name it
    key: Shown
    value: Shown
    markup: list[str]
    hidden: bool
    escaped: bool  # shows a \\u escape a reader needs the legend for

    @classmethod
    def of(cls, position: int, name: str, value: Any, budget: ParserBudget | None = None) -> _Argument:
        texts = [name, *_strings(value)]
        plain = _PLAIN_NAME.fullmatch(name)
        label = f'argument "{name}"' if plain else f"argument #{position} (its name is in the block above)"
        hidden = any(has_hidden(text) for text in texts)
        return cls(
            label=label,
            key=literal(name, NAME_CHARS),
            value=literal(value),
            markup=list(dict.fromkeys(kind for text in texts for kind in markup_kinds(text, budget))),
            hidden=hidden,
            escaped=hidden or any(c in text for text in texts for c in _MARKUP_CHARS),
        )

    def remarks(self) -> list[str]:
        lines = []
        if self.markup:
            lines.append(
                f"WARNING: {self.label} holds markup ({', '.join(self.markup)}) that a renderer would hide or "
                "change; read it above exactly as shown."
            )
        if self.hidden:
            lines.append(f"WARNING: {self.label} holds hidden characters (shown above as \\uXXXX escapes).")
        if self.value.omitted:
            lines.append(
                f"NOTE: {self.label} is too long to show in full: {self.value.omitted} more characters are not shown."
            )
        if self.key.omitted:
            lines.append(
                f"NOTE: the name of {self.label} is too long to show in full: {self.key.omitted} more characters "
                "are not shown."
            )
        return lines


# --- the prompt -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """The parts of a confirmation prompt; `render` writes them in a fixed order.

    `facts` are "Label: text" lines above the arguments (server, tool, why; later e.g. SMS parts),
    written by the proxy but possibly carrying upstream words, so each is made inert and one line.
    """

    intro: str
    facts: Sequence[tuple[str, str]]
    arguments: Mapping[str, Any]
    closing: str = "Confirm only if you asked for exactly this."

    def render(self) -> str:
        budget = ParserBudget()
        shown = [_Argument.of(n, str(name), value, budget) for n, (name, value) in enumerate(self.arguments.items(), 1)]
        lines = [inert(self.intro)]
        lines += [f"{label}: {inert(text)}" for label, text in self.facts]
        lines += ["Arguments:", FENCE, *_block(shown), FENCE]
        for argument in shown:
            lines += argument.remarks()
        if any(argument.escaped for argument in shown):
            lines.append(LEGEND)
        lines.append(self.closing)
        return "\n".join(lines)


def _block(shown: list[_Argument]) -> list[str]:
    """The lines inside the fence: a JSON object, one member a line; a cut value's line ends with the marker
    and no comma, so it cannot pass for a whole one."""
    if not shown:
        return ["{}"]
    rows = []
    for n, argument in enumerate(shown):
        comma = "," if n < len(shown) - 1 and not argument.value.omitted else ""
        rows.append(f"  {argument.key.line_part()}: {argument.value.line_part()}{comma}")
    return ["{", *rows, "}"]
