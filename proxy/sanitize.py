"""Sanitise untrusted text before it goes into a <tool_output> envelope (SPEC §5, E1-E3).

HTML stripper: nh3, not bleach.  Measured on this 2-core machine (Python 3.11, nh3 0.3.8,
bleach 6.4.0, no tags allowed, comments stripped, best of 3, 1 MB of tag-heavy HTML):
nh3 50 ms, bleach 987 ms.  bleach alone is 20x over the 50 ms budget for sanitise + envelope of
1 MB; nh3 (ammonia on html5ever) parses the way browsers do, which the E2 "as a renderer sees
it" rule needs anyway.  nh3 still costs 45-75 ns per character however little markup there is,
so plain markup (ordinary tags, comments, whole <script>/<style> elements) is removed by
`_strip_plain_markup`, regular expressions that follow the HTML tokenizer exactly and are
differentially tested against nh3; nh3 sees the text only from the first construct whose
tree-building rules move or re-read text (tables, <textarea>, <svg>, ...).

Design.  `_step` is one pass of: decode entities once -> turn look-alike <tool_output> brackets
into ASCII -> strip tags -> flatten markdown (markdown-it-py, block by block) -> defang forged
"SYSTEM:" lines.  `_settle` drops controls and invisibles and applies NFC, then repeats `_step`
(re-cleaning after every change) until the text stops changing, at most _MAX_PASSES times.
That fixpoint T is what a renderer must see.  The output is `_escape(T)`: "<" and ">" become
&lt;/&gt;, and an "&" that html.unescape would still decode becomes &amp;, so decoding the output
once gives back exactly T, and sanitising the output again decodes to T and stops: idempotent.
If the loop does not converge, `_strict` removes every character that could carry markup; its
result is a fixpoint by construction, so safety and idempotency never depend on convergence.

Speed comes from skipping: text with no character any step reacts to is returned as it is, and
each step first runs a cheap test (a substring search, or one regex that starts with a literal).
markdown-it-py, being pure Python, costs about 2 us per character of dense markdown: it sees
texts up to _MD_TEXT_LIMIT, and at most a ParserBudget's worth of one result; the rest is flattened
by `_inert` (see there), which reaches the same fixpoints.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html.entities import html5 as _HTML5

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

__all__ = ["ParserBudget", "all_unchanged", "sanitize_text", "truncate"]

_MAX_PASSES = 8
# markdown-it-py is pure Python: 2-20 us per character that opens a link, image, emphasis or code
# span, and about 1.5 us per character of any text with many lines.  Text longer than this is
# flattened by `_inert` (regular expressions, no parser) instead, so one hostile result cannot
# stall the proxy for seconds: the parser never sees more than 16 KB at once, which takes 25-30 ms
# at the densest; a ParserBudget bounds what it reads across all the texts of one result.  The
# parser's output is flattened by `_inert` too, so both ways reach the same fixpoints: sanitising
# the output again gives it back whichever way each pass went (the property tests check both ways),
# and neither leaves a markdown construct.
_MD_TEXT_LIMIT = 16_384
# On short texts one quiet check is cheaper than a pass of steps; on long ones the steps' own cheap
# tests are, and a remembered flattening skips the rest.
_QUIET_CHECK_LIMIT = 4096

# --- character classes ------------------------------------------------------------------

_EMOJI = (
    "\u00a9\u00ae\u203c\u2049\u2122\u2139\u2194-\u2199\u21a9\u21aa\u231a\u231b\u2328\u23cf"
    "\u23e9-\u23f3\u23f8-\u23fa\u24c2\u25aa\u25ab\u25b6\u25c0\u25fb-\u25fe\u2600-\u27bf"
    "\u2934\u2935\u2b05-\u2b07\u2b1b\u2b1c\u2b50\u2b55\u3030\u303d\u3297\u3299"
    "\U0001f000-\U0001fffd"
)
_VARIATION = "\ufe00-\ufe0f\U000e0100-\U000e01ef"
# Default-ignorable and format characters that hide or reorder text.  Deliberately kept: the
# visible Arabic/Syriac number marks (U+0600-0605, 06DD, 070F, 0890-0891, 08E2, 110BD, 110CD)
# and the Egyptian hieroglyph format controls (U+13430-1343F): they are part of ordinary text.
_INVISIBLE_BMP = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200e\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\u3164\ufeff\uffa0\ufff9-\ufffb\ud800-\udfff"
)
_INVISIBLE = _INVISIBLE_BMP + "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e007f"
_CONTROL = "\x00-\x08\x0b-\x1f\x7f-\x9f"
_LINE_BREAKS = "\r\x0b\x0c\x85\u2028\u2029"
_LOOK_OPEN = "\u00ab\u02c2\u1438\u2039\u2329\u276c\u276e\u2770\u27e8\u27ea\u29fc\u3008\ufe64\uff1c"
_LOOK_CLOSE = "\u00bb\u02c3\u1433\u203a\u232a\u276d\u276f\u2771\u27e9\u27eb\u29fd\u3009\ufe65\uff1e"
_LOOK_SLASH = "/\u2044\u2215\u29f8\uff0f"
_MD_CHARS = r"*_`\[\]\\|~"
_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f\u2800"


def _s_lookalikes() -> str:
    # Characters whose NFKC+casefold starts with "s" ("ſ", "ｓ", "𝐒", "Ⓢ", ...) can start a forged
    # "SYSTEM:" line.  They all live in these blocks (tests check every code point).
    blocks = [(0x80, 0x2FF), (0x1D00, 0x1EFF), (0x2000, 0x33FF), (0xFB00, 0xFFEF), (0x1D400, 0x1D7FF)]
    blocks.append((0x1F100, 0x1F1FF))
    found = []
    for start, end in blocks:
        for cp in range(start, end + 1):
            if unicodedata.normalize("NFKC", chr(cp)).casefold().startswith("s"):
                found.append(chr(cp))
    return "".join(found)


_S_LIKE = _s_lookalikes()
_LEAD = rf"[^\S\n]|[{_MARKS}]"
_SYSTEM_HINT = rf"(?:{_LEAD})*(?:[sS](?:[yY]|[^\x00-\x7f])|[{_S_LIKE}])"
_MD_LINE = r"[ \t]*(?:[#>=+\-]|\d{1,9}[.)])| {4}| {0,3}\t"
# For the quiet check only: a line start that could open a block.  "+", "-", "=" and "#" open one
# only before a blank, the line's end or (for rules and headings) their own kind, so a phone
# number "+48 600...", a negative number "-5" or an amount "0.16" at a line start leaves it quiet.
_QUIET_MD_LINE = (
    r"[ \t]*(?:>|[+](?=[ \t\n]|\Z)|-(?=[ \t\n-]|\Z)|=(?=[= \t\n]|\Z)|#(?=[# \t\n]|\Z)"
    r"|\d{1,9}[.)](?=[ \t\n]|\Z))| {4}| {0,3}\t"
)

# Any of these means the text may need work; text with none of them (and already NFC, with no
# lone ZWJ and no "&" a renderer would decode) is returned untouched, which keeps ordinary text and
# the common no-markup case fast.
# (Its non-BMP characters are given as two wide ranges: with a character outside the BMP in it, a
# class is tested range by range, and fewer ranges scan a megabyte 3 ms faster.  The extra code
# points, Duployan and musical symbols and unassigned ones, only cost their texts a pass.)
_TRIGGER_CHAR = re.compile(
    f"[{_CONTROL}{_LINE_BREAKS}{_INVISIBLE_BMP}\ufe00-\ufe0f<>{_MD_CHARS}"
    f"{_LOOK_OPEN}{_LOOK_CLOSE}\U0001bca0-\U0001d17a\U000e0000-\U000e01ef]"
)
_TRIGGER_LINE_START = re.compile(f"(?:{_QUIET_MD_LINE}|{_SYSTEM_HINT})")
_TRIGGER_LINE = re.compile(f"\n(?:{_QUIET_MD_LINE}|{_SYSTEM_HINT})")
# The same tests for ASCII text, where most untrusted text is and where they can be cheaper: the
# characters are deleted from the bytes (a C loop, no regular expression), and a line start needs
# no look-alike class (every look-alike "s" and combining mark is non-ASCII).
_ASCII_CONTROLS = bytes([*range(0x09), *range(0x0B, 0x20), 0x7F])
_ASCII_TRIGGERS = _ASCII_CONTROLS + b"<>*_`[]\\|~"
_ASCII_SYSTEM_HINT = r"[\t\x0b\x0c\r\x1c-\x1f ]*[sS][yY]"
_ASCII_TRIGGER_LINE_START = re.compile(f"(?:{_QUIET_MD_LINE}|{_ASCII_SYSTEM_HINT})")
_ASCII_TRIGGER_LINE = re.compile(f"\n(?:{_QUIET_MD_LINE}|{_ASCII_SYSTEM_HINT})")

# Patterns that begin with a literal character are scanned for with a fast substring search;
# the others cost about 10 ms per MB, so each is run only when a cheap test says it can match.
_ANSI_ESC = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, erase
    r"|[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC (incl. OSC-8 hyperlinks), DCS, SOS, PM, APC
    r"|[ -/]*[0-~]?)"  # any other escape
)
_ANSI_C1 = re.compile(r"\x9b[0-?]*[ -/]*[@-~]|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?")
_C1_START = re.compile(r"[\x90\x98\x9b\x9d\x9e\x9f]")
_HARD = re.compile(f"[{_CONTROL}{_LINE_BREAKS}{_INVISIBLE}]")
_HARD_OR_VS = re.compile(f"[{_CONTROL}{_LINE_BREAKS}{_INVISIBLE}{_VARIATION}]")
_LINE_BREAK = re.compile(f"[{_LINE_BREAKS}]")
_DROP = re.compile(f"[{_CONTROL}{_INVISIBLE}]")
# ZWJ joins emoji (👩‍👩‍👧); anywhere else it only hides things.  The left neighbour may be VS16
# or a keycap mark ("🏳️‍🌈").
_LONE_ZWJ = re.compile(f"\u200d(?:(?<![{_EMOJI}\ufe0f\u20e3]\u200d)|(?![{_EMOJI}]))")
# Keep a variation selector after an emoji, or before the keycap mark in "1️⃣".
_LONE_VS = re.compile(f"[{_VARIATION}](?<![{_EMOJI}][{_VARIATION}])(?!\u20e3)")

# Entities are decoded by the HTML attribute rule: always with ";", and a legacy name without ";"
# ("&copy", "&lt") only when no letter, digit or "=" follows, so "?a=1&copy=2" survives.
_LEGACY = "|".join(sorted((name for name in _HTML5 if not name.endswith(";")), key=len, reverse=True))
_DECODABLE = re.compile(
    rf"&(?:#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z][A-Za-z0-9]{{0,31}};|(?:{_LEGACY})(?![A-Za-z0-9=]))"
)
# What html.unescape (a lenient renderer) would decode: any legacy-name prefix, any number.
_RENDERER_REF = re.compile(rf"&(?:#[0-9]|#[xX][0-9a-fA-F]|{_LEGACY}|[A-Za-z][A-Za-z0-9]{{0,31}};)")
_TAG_START = re.compile(r"<[A-Za-z!/?]")

_LOOK_START = re.compile(f"[{_LOOK_OPEN}]")
_LOOK_SPAN = re.compile(f"[{_LOOK_OPEN}][^\n{_LOOK_OPEN}>{_LOOK_CLOSE}]{{0,254}}[>{_LOOK_CLOSE}]?")
_LOOK_TAG = re.compile(rf"[<{_LOOK_OPEN}][{_LOOK_SLASH}]?tool[_\-\u2010-\u2015\u2017\ufe4d-\ufe4f]?output")
_LOOK_TO_ASCII = str.maketrans(dict.fromkeys(_LOOK_OPEN, "<") | dict.fromkeys(_LOOK_CLOSE, ">"))
_WHITESPACE = re.compile(r"\s+")

_SYSTEM_LINE = re.compile(f"^{_SYSTEM_HINT}", re.MULTILINE)
_SYSTEM_START = re.compile(_SYSTEM_HINT)
_SYSTEM_NL = re.compile(f"\n{_SYSTEM_HINT}")
# A line can start a forged "SYSTEM:" only with a blank, "s", "S" or a non-ASCII character: one
# character test per line rules out most texts before the full pattern runs.
_SYSTEM_NL_CHEAP = re.compile("\n[\t\x0b\x0c\r \x1c-\x1fSs\x80-\U0010ffff]")
_SYSTEM_WORD = re.compile(r"system\s*:")
_SYSTEM_LEAD = re.compile(rf"[\s{_MARKS}]*")
_FORGED_PREFIX = "(untrusted) "

_MD_INLINE = re.compile(f"[{_MD_CHARS}<]")
_MD_LINE_START = re.compile(f"(?:{_MD_LINE})")
_MD_LINE_ANY = re.compile(f"\n(?:{_MD_LINE})")
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")
_LINE_EDGE_SPACE = re.compile(r"^[ \t]+|[ \t]+$", re.MULTILINE)

_INERT_IMAGE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)")
_INERT_LINK_OPEN = re.compile(r"\[(?=[^\]\n]*\]\([^)\s]*\))")
_INERT_LINK_CLOSE = re.compile(r"\]\((?=[^)\s]*\))")


# Patterns for line starts come in pairs, (at the start of the text, after a newline): one that
# begins with a literal "\n" lets the regex engine skip ahead instead of trying every position.
def _at_line_start(body: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    return re.compile(rf"\A(?:{body})"), re.compile(rf"\n(?:{body})")


_EOL = r"(?=\n|\Z)"
# A table's delimiter row: cells of dashes (colons for alignment) with at least one "|".
_CELL = r"[ \t]*:?-+:?[ \t]*"
_INERT_DELIMITER_ROW = _at_line_start(rf"[ \t]*(?:\|{_CELL}(?:\|{_CELL})*\|?|{_CELL}(?:\|{_CELL})+\|?)[ \t]*{_EOL}")
# A "*" run stays only between blanks (where CommonMark lets it neither open nor close), a "_" run
# also inside a word (snake_case); every other run goes.  Runs are matched whole.  Each pattern
# starts with its literal character and looks behind only after it, which keeps the scan fast.
_INERT_STARS = re.compile(r"\*(?<!\*\*)(?:(?<=\S\*)\**|\**(?=[^\s*]))")
_INERT_UNDERSCORES = re.compile(r"_(?<!__)(?:(?<=[^\s\w]_)_*|_*(?=[^\s\w])|(?<!\S_)_*(?=[^\W_])|(?<=[^\W_]_)_*(?!\S))")
# Emphasis with "_" needs a run that can open it: one not preceded by a letter or digit and
# followed by a non-blank (CommonMark's flanking rules).  A text without one keeps every "_"
# ("Python_(language)", "file_name_.txt"); with one, the runs above go.
_UNDERSCORE_OPENER = re.compile(r"(?<![^\W_])_+(?=\S)")
_TRAILING_BLANKS = re.compile(r"[ \t]+\n")
_BLOCK_EDGE_SPACE = re.compile(r"(?:\A|(?<=\n\n))[^\S\n]+|[^\S\n]+(?=\n\n|\Z)")
# The same inside the text, found from its literal "\n\n" (the pattern above tries every position).
_BLOCK_EDGE_GATE = re.compile(r"\n\n(?:[^\S\n]|(?<=[^\S\n]\n\n))")
_INERT_ESCAPE = re.compile(r"\\(?=[!-/:-@\[-`{-~\n])")
_INERT_TILDES = re.compile(r"~~+")
# Line starts that open a block: indentation, blockquote, heading and list markers (a list item
# could hold any of the others), and thematic breaks and setext underlines, whole.  One scan clears
# them so that a second finds nothing (the flattener relies on that): a rule behind markers
# ("> ---") goes with them.  The markers before a rule are taken possessively: "- - - x" is then
# never re-split, which keeps the scan linear.
_LEAD_MARKERS = r"(?:[ \t]+|>|#{1,6}(?=[ \t\n]|\Z)|[-+*](?=[ \t\n]|\Z))"
_RULE_LINE = rf"(?:(?:[*_-][ \t]*){{3,}}|=+[ \t]*|-+[ \t]*){_EOL}"
# Markers, then a rule if one follows.  (The first lookahead fails most lines, which start with a
# letter or digit, at one character test; the others say which characters can start a marker or a
# rule, so that a failing try costs one test instead of every alternative: a third faster on dense
# markdown.  Where nothing matches, the bare "\n" is put back unchanged.)
_INERT_LEAD = _at_line_start(rf"(?=[ \t>#*_=+-])(?:(?=[ \t>#*+-]){_LEAD_MARKERS})*+(?:(?=[*_=-]){_RULE_LINE})?")
_BLANK_AT_LINE_START = _at_line_start(r"[^\S\n]")
_INERT_NUMBER = _at_line_start(r"(\d{1,9})[.)](?=[ \t\n]|\Z)")
_STRICT_DROP = re.compile(f"[<>&{_MD_CHARS}#=+\\-{_LOOK_OPEN}{_LOOK_CLOSE}]")
_LEADING_SPACE = re.compile(r"^[^\S\n]+", re.MULTILINE)
_TRAILING_SPACE = re.compile(r"[^\S\n]+$", re.MULTILINE)
_LEADING_NUMBER = re.compile(r"^[\d.)]+", re.MULTILINE)

_MARKER = re.compile(r"(?:\A|\n\n)\(\.\.\. truncated by mcp-guard: (\d+) characters omitted\)\Z")

# The HTML tokenizer (WHATWG HTML §13.2.5) as regular expressions, for `_strip_plain_markup`.
# Once "<" and an ASCII letter start a tag, the tag runs to the first ">" outside a quoted value, or
# to the end of the text (where the tokenizer drops it).  Inside, a quote opens a value only right
# after "=" (and blanks); anywhere else it is part of a name.  Every construct below ends the way
# the tokenizer ends it, so each alternative either matches what the tokenizer reads or does not
# start: nothing is scanned twice, and the substitution stays linear on any input.
_HTML_WS = r"[\t\n\f\r ]"
_NAME_END = r"(?=[\t\n\f\r />]|\Z)"
_TAG_NAME = r"[A-Za-z][^\t\n\f\r />]*"
_VALUE = r"""(?:"[^"]*(?:"|\Z)|'[^']*(?:'|\Z)|[^\t\n\f\r >"'][^\t\n\f\r >]*)"""
_ATTRIBUTE = rf"[^\t\n\f\r />][^\t\n\f\r />=]*(?:{_HTML_WS}*={_HTML_WS}*{_VALUE}?)?"
# Atomic: a tag has one reading, and backtracking into it (when what follows a <script> start tag
# does not match) would try every way of splitting its attribute names.
_TAG_REST = rf"(?>(?:{_HTML_WS}|/|{_ATTRIBUTE})*)(?:>|\Z)"


def _ascii_ci(word: str) -> str:
    # Not re.IGNORECASE: in a str pattern it also lets "ſ" match "s" and "K" (Kelvin) match "k".
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


def _whole_element(name: str) -> str:
    # The element with its content, which nh3 removes.  Script data has escaped states ("<!--",
    # then "<script" inside it) in which "</script>" does not end the element; content holding a
    # "<script" start is therefore not matched here, and such a text goes to nh3.
    tag = f"{_ascii_ci(name)}{_NAME_END}"
    inner = f"/?{tag}" if name == "script" else f"/{tag}"
    return f"{tag}{_TAG_REST}[^<]*+(?:<(?!{inner})[^<]*+)*+(?:</{tag}{_TAG_REST}|\\Z)"


# Start tags of elements whose tree-building or tokenizer rules do more than open and close: text
# moved out of tables, dropped in <select>, re-read in <textarea>/<title>, raw in <xmp>/<iframe>/...,
# foreign in <svg>/<math>, a leading newline eaten by <pre>; <html>/<head>/<frameset> change modes.
# (Their end tags alone change no text: a stray one is ignored or, like </p> and </br>, adds an
# empty element.)  Script and style are taken whole, with their content, as nh3 removes them.
_SPECIAL_ELEMENTS = (
    "script style template noscript xmp iframe noembed noframes title textarea plaintext pre listing table "
    "caption colgroup col tbody thead tfoot tr td th select option optgroup svg math frameset frame head body "
    "html isindex"
).split()


def _name_trie(names: list[str]) -> str:
    # One character test per level instead of trying every name in turn: this runs at every tag.
    heads: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        heads.setdefault(name[0], []).append(name[1:])
    branches = []
    for head, tails in heads.items():
        rest = [tail for tail in tails if tail]
        below = f"(?:{_name_trie(rest)})" + ("?" if "" in tails else "") if rest else ""
        branches.append(_ascii_ci(head) + below)
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


_SPECIAL_START = f"{_name_trie(_SPECIAL_ELEMENTS)}{_NAME_END}"
_PLAIN_MARKUP_BODY = (
    "<(?:"
    + rf"(?!{_SPECIAL_START}){_TAG_NAME}{_TAG_REST}"  # start tag
    + rf"|/{_TAG_NAME}{_TAG_REST}"  # end tag (its attributes are read, then ignored)
    + "|" + _whole_element("script")
    + "|" + _whole_element("style")
    + r"|!--(?:>|->|[\s\S]*?--!?>|[\s\S]*\Z)"  # comment, including "<!-->", "<!--->" and one left open
    + r"|!(?!--)[^>]*(?:>|\Z)|\?[^>]*(?:>|\Z)"  # doctype and bogus comments: up to the first ">"
    + r"|/(?:>|[^A-Za-z>][^>]*(?:>|\Z))"  # "</>" is nothing, "</ x>" a bogus comment; "</" at the end is text
    + ")"
)  # fmt: skip
_PLAIN_MARKUP = re.compile(_PLAIN_MARKUP_BODY)
# What _PLAIN_MARKUP leaves of a hard construct: a special start tag, or a script it could not take.
_HARD_LEFT = re.compile(f"<{_SPECIAL_START}")
_PLAIN_PREFIX = re.compile(f"(?:[^<]+|<(?![A-Za-z!/?])|{_PLAIN_MARKUP_BODY})*")

_NH3_KWARGS = {
    "tags": set(),
    "clean_content_tags": {"script", "style", "template", "noscript", "xmp", "iframe", "noembed", "noframes"},
    "attributes": {},
    "strip_comments": True,
    "link_rel": None,
}


def _markdown_parser(allow_html: bool) -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": allow_html, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    # markdown-it leaves javascript:/data: links and images as literal markdown text; a laxer
    # renderer downstream would still render them, so every destination is parsed (and then dropped
    # or spelled out) here.
    md.validateLink = lambda url: True  # type: ignore[method-assign]
    md.normalizeLink = lambda url: url  # type: ignore[method-assign]
    md.normalizeLinkText = lambda url: url  # type: ignore[method-assign]
    return md


_MD = _markdown_parser(allow_html=True)
# With strip_html off, kept markup reaches the client escaped ("&lt;script&gt;"), and a markdown
# renderer sees no HTML block there, only text; markdown inside or beside it must be flattened as
# text too, or an image next to a kept tag would survive.
_MD_TEXT = _markdown_parser(allow_html=False)


# --- public API ---------------------------------------------------------------------------


class ParserBudget:
    """How many characters markdown-it-py may still read for one result.

    The parser is pure Python, about 2 us per character of dense markdown, and a result can hold
    thousands of short untrusted strings.  Once a result's budget is spent its remaining texts are
    flattened without the parser (`_inert`); both flatteners reach the same fixpoints, so the
    output stays sanitised and idempotent whichever ran.  (With strip_html off the parser is used
    throughout, as that mode's output differs between the two.)  2 KB covers the markup of a
    typical small result (a few messages or contacts) and costs at most about 4 ms.
    """

    def __init__(self, chars: int = 2048) -> None:
        self.chars = chars


def sanitize_text(
    text: str,
    *,
    strip_html: bool = True,
    strip_markdown: bool = True,
    max_chars: int | None = None,
    parser_budget: ParserBudget | None = None,
) -> str:
    """Return `text` safe to place inside a <tool_output> envelope (E1-E3); idempotent.

    `parser_budget`, shared by the texts of one result, bounds the time markdown-it-py spends on them.
    """
    omitted = 0
    if max_chars is not None and len(text) > _work_cap(max_chars):
        omitted = len(text) - _work_cap(max_chars)
        text = text[: _work_cap(max_chars)]
    if not omitted and _is_quiet(text):
        return text if max_chars is None else _limit(text, max_chars, 0, strip_html, strip_markdown)
    out = _escape(_settle(text, strip_html, strip_markdown, parser_budget))
    if max_chars is None:
        return out
    return _limit(out, max_chars, omitted, strip_html, strip_markdown)


def all_unchanged(texts: Sequence[str], max_chars: int | None = None, reject: re.Pattern[str] | None = None) -> bool:
    """True if sanitize_text (any switches, this max_chars) would return every one of `texts` as is.

    One scan of them all, joined by newlines, instead of one call each; False may be wrong, True
    never is.  The join hides nothing: every trigger of `_is_quiet` is a character, a reference or a
    line start, a line start stays one after a newline, and NFC does not compose across a newline.
    """
    if max_chars is not None and any(len(text) > max_chars for text in texts):
        return False
    joined = "\n".join(texts)
    if reject is not None and reject.search(joined):
        return False  # the caller's own reason to look at them one by one
    return _is_quiet(joined)


def truncate(text: str, max_chars: int) -> str:
    """Cut `text` to `max_chars` characters and append a visible marker saying how much was cut."""
    if len(text) <= max_chars:
        return text
    keep = _cut(text, max(max_chars, 0))
    return keep + _marker(len(text) - len(keep), bool(keep))


# --- the fixpoint loop ----------------------------------------------------------------------


def _settle(text: str, strip_html: bool, strip_markdown: bool, budget: ParserBudget | None = None) -> str:
    text = _nfc(_strip_controls(text))
    # Remembered across passes: a pass then only flattens blocks that changed.
    memo = _Memo()
    for done in range(_MAX_PASSES):
        # (Before the first pass the caller has just found the text not quiet.)
        if done and len(text) <= _QUIET_CHECK_LIMIT and _is_quiet(text):
            return text  # no step reacts to any character here: a fixpoint without running them
        nxt = _step(text, strip_html, strip_markdown, memo, budget)
        if nxt == text:
            return text if _is_settled(text, strip_html) else _strict(text)
        # Controls and NFC are redone only after a change: decoding "&#27;" can bring back an ESC,
        # removing a tag can put a combining mark next to a letter.
        text = _nfc(_strip_controls(nxt))
    return _strict(text)


@dataclass
class _Memo:
    """What earlier passes over one text already worked out, so a later pass need not redo it."""

    blocks: dict[str, str] = field(default_factory=dict)  # block -> its flattening by the parser
    inert: dict[str, str] = field(default_factory=dict)  # whole text -> its flattening without it
    defanged: str = ""  # the last text _defang_system_lines returned (it is its own fixpoint)


def _step(text: str, strip_html: bool, strip_markdown: bool, memo: _Memo, budget: ParserBudget | None) -> str:
    text = _decode_json_escapes(_decode_entities(text))
    text = _defang_lookalike_tags(text)
    if strip_html:
        text = _strip_tags(text)
    if "<" in text and _NEAR_TAG.search(text):
        text = _NEAR_TAG.sub(_without_bracket, text)
    if strip_markdown:
        text = _flatten_markdown(text, not strip_html, memo, budget)
    if text != memo.defanged:
        text = memo.defanged = _defang_system_lines(text)
    return text


def _is_settled(text: str, strip_html: bool) -> bool:
    # The loop already guarantees these; checking them keeps E2 and idempotency true even if some
    # step interaction were missed (the result then goes through _strict instead).
    if "&" in text and _decode_entities(text) != text:
        return False
    if "\\u" in text and _decode_json_escapes(text) != text:
        return False
    return not strip_html or "<" not in text or not _TAG_START.search(text)


def _strict(text: str) -> str:
    """Remove everything that could form markup; the result is a fixpoint of `_step`."""
    text = _nfc(_strip_controls(text))
    text = _STRICT_DROP.sub("", text)
    # Blanks at line edges and extra blank lines go, as a parser drops them; dropping a list number's
    # "." can bare a blank at a line start, hence the loop (each round only shortens).
    while (nxt := _LEADING_NUMBER.sub(_digits_only, _LEADING_SPACE.sub("", _TRAILING_SPACE.sub("", text)))) != text:
        text = nxt
    text = _BLANK_LINES.sub("\n\n", text).strip("\n")
    return _defang_system_lines(_nfc(text))


def _digits_only(match: re.Match[str]) -> str:
    return "".join(ch for ch in match.group() if ch.isdigit())


# An underscore between two letters or digits can neither open nor close emphasis (CommonMark's
# flanking rules), so "first_name" or "jon_doe@example.com" is quiet; it stands in as a letter.
_INTRAWORD_UNDERSCORE = re.compile(r"(?<=[^\W_])_(?=[^\W_])")


def _is_quiet(text: str) -> bool:
    """True when no step can change `text`, so it already is its own sanitised form."""
    if "_" in text:
        text = _INTRAWORD_UNDERSCORE.sub("a", text)
    if text.isascii():
        # ASCII text is NFC and holds no ZWJ; `test_ascii_quiet_check_agrees` checks this path.
        if len(text.encode("ascii").translate(None, _ASCII_TRIGGERS)) != len(text):
            return False
        if _ASCII_TRIGGER_LINE_START.match(text) or _ASCII_TRIGGER_LINE.search(text):
            return False
        return "&" not in text or not _RENDERER_REF.search(text)
    return _is_quiet_unicode(text)


def _is_quiet_unicode(text: str) -> bool:
    if _TRIGGER_CHAR.search(text) or _TRIGGER_LINE_START.match(text) or _TRIGGER_LINE.search(text):
        return False
    if "&" in text and _RENDERER_REF.search(text):
        return False
    if "\u200d" in text and _LONE_ZWJ.search(text):
        return False
    return unicodedata.is_normalized("NFC", text)


# --- individual steps ---------------------------------------------------------------------


def _strip_controls(text: str) -> str:
    if text.isascii():
        # Deleting the controls from the bytes and comparing lengths is twice as fast as a search.
        clean = len(text.encode("ascii").translate(None, _ASCII_CONTROLS)) == len(text)
        return text if clean else _drop_hard(text)
    found = _HARD_OR_VS.search(text)
    if found and _HARD.search(text, found.start()):
        text = _drop_hard(text)
    if found:
        text = _LONE_VS.sub("", text)
    if "\u200d" in text:
        text = _LONE_ZWJ.sub("", text)
    return text


def _drop_hard(text: str) -> str:
    if "\x1b" in text:
        text = _ANSI_ESC.sub("", text)
    if not text.isascii() and _C1_START.search(text):
        text = _ANSI_C1.sub("", text)
    text = _LINE_BREAK.sub("\n", text.replace("\r\n", "\n"))
    return _DROP.sub("", text)


def _nfc(text: str) -> str:
    if text.isascii() or unicodedata.is_normalized("NFC", text):
        return text
    return unicodedata.normalize("NFC", text)


def _decode_entities(text: str) -> str:
    if "&" not in text:
        return text
    # The commonest references first, without a call per match; what they decode to holds no "&",
    # so nothing is decoded twice.
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
    if "&" not in text:
        return text
    return _DECODABLE.sub(_decode_ref, text)


# A JSON escape ("\u003c") is what a reader that decodes JSON sees as the character: one that
# spells markup or a hidden character is decoded, and the steps after it deal with the character.
# Escapes of ordinary characters stay as the upstream wrote them.
_JSON_ESCAPE = re.compile(r"\\u([0-9A-Fa-f]{4})(?:\\u([dD][c-fC-F][0-9A-Fa-f]{2}))?")
_DECODED_ESCAPES = frozenset("<>&`*_[]()!#|~\\")


def _decode_json_escapes(text: str) -> str:
    if "\\u" not in text:
        return text
    return _JSON_ESCAPE.sub(_json_unescape, text)


def _json_unescape(match: re.Match[str]) -> str:
    code = int(match.group(1), 16)
    low = match.group(2)
    if low is not None and 0xD800 <= code <= 0xDBFF:
        char = chr(0x10000 + ((code - 0xD800) << 10) + (int(low, 16) - 0xDC00))
        rest = ""
    else:
        char = chr(code)
        rest = match.group()[6:]  # a second escape that was no low surrogate: judged on its own next pass
    if char in _DECODED_ESCAPES or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
        return char + rest
    return match.group()


def _decode_ref(match: re.Match[str]) -> str:
    return _decoded(match.group())


@functools.lru_cache(maxsize=4096)
def _decoded(ref: str) -> str:
    # Hostile HTML repeats a few references thousands of times; decoding each once saves a third
    # of this step on a megabyte.
    if ref[1] == "#":
        return html.unescape(ref)
    return _HTML5.get(ref[1:], ref)


# "< /tool_output>" is no tag to a parser (a blank after "<"), so it survives as text; a reader
# could still take it for the envelope's end: its "<" goes.
_NEAR_TAG = re.compile(r"<[\s/]*tool_output", re.IGNORECASE)


def _without_bracket(match: re.Match[str]) -> str:
    return match.group()[1:]


def _defang_lookalike_tags(text: str) -> str:
    """Turn "＜/ｔｏｏｌ＿output＞"-style look-alikes into the ASCII tag, so they meet the same fate."""
    if text.isascii() or not _LOOK_START.search(text):  # every look-alike bracket is non-ASCII
        return text
    return _LOOK_SPAN.sub(_lookalike_span, text)


def _lookalike_span(match: re.Match[str]) -> str:
    span = match.group()
    folded = unicodedata.normalize("NFKC", span)
    if not _LOOK_TAG.match(_WHITESPACE.sub("", folded.casefold())):
        return span
    return folded.translate(_LOOK_TO_ASCII)


def _strip_tags(text: str) -> str:
    if "<" not in text:
        return text
    fast = _strip_plain_markup(text)
    if fast is not None:
        return fast
    # Only the part from the first hard construct on needs nh3: before it the tokenizer met nothing
    # but plain tags, so it is in its data state there, with only ordinary elements open.
    cut = _split_plain_prefix(text)
    head = _strip_plain_markup(text[:cut])
    if head is None:  # cannot happen: the prefix holds plain markup only; nh3 judges the whole then
        return _strip_tags_nh3(text)
    return head + _strip_tags_nh3(text[cut:])


def _strip_plain_markup(text: str) -> str | None:
    """What nh3 would return, for text whose markup is plain; None when nh3 has to judge.

    nh3 costs 45-75 ns per character whether there is one tag or ten thousand, and a megabyte
    holds the whole budget.  Plain markup means: well-formed tags with quoted or simple
    attributes, comments, doctypes, bogus comments, and whole <script>/<style> elements, none of
    them an element whose parsing rules move, drop or re-read text (tables, forms' select,
    raw-text and RCDATA elements other than script/style, foreign content, templates, <pre>).
    For those the html5ever tokenizer and tree builder keep exactly the text between the tags,
    in order, and drop script/style content, so removing each construct where it stands gives
    nh3's output; `test_plain_markup_path_agrees_with_nh3` checks that on generated tag soup.
    Anything else that could start markup is left behind, is seen by the check below, and the
    whole text goes to nh3.
    """
    if "\x00" in text:
        return None
    out = _PLAIN_MARKUP.sub("", text)
    if "<" in out and _HARD_LEFT.search(out):
        return None
    return out


def _split_plain_prefix(text: str) -> int:
    """Where the first markup that is not plain starts: everything before it is plain markup or text."""
    return _PLAIN_PREFIX.match(text).end()  # type: ignore[union-attr]


def _strip_tags_nh3(text: str) -> str:
    # Every "&" left here is literal (entities were decoded once already), so html5ever must not
    # decode a second time: "&copy=2" has to stay "&copy=2".
    cleaned = nh3.clean(text.replace("&", "&amp;"), **_NH3_KWARGS)
    return cleaned.replace("&lt;", "<").replace("&gt;", ">").replace("&nbsp;", "\xa0").replace("&amp;", "&")


def _defang_system_lines(text: str) -> str:
    if not (_SYSTEM_START.match(text) or (_SYSTEM_NL_CHEAP.search(text) and _SYSTEM_NL.search(text))):
        return text
    return _SYSTEM_LINE.sub(_mark_forged_system, text)


def _mark_forged_system(match: re.Match[str]) -> str:
    head = match.string[match.start() : match.end() + 48].split("\n", 1)[0]
    folded = unicodedata.normalize("NFKC", head).casefold()
    folded = folded[_SYSTEM_LEAD.match(folded).end() :]  # type: ignore[union-attr]
    if _SYSTEM_WORD.match(folded):
        return _FORGED_PREFIX + match.group()
    return match.group()


# --- markdown -------------------------------------------------------------------------------


def _has_markdown(text: str) -> bool:
    return bool(_MD_INLINE.search(text) or _MD_LINE_START.match(text) or _MD_LINE_ANY.search(text))


def _flatten_markdown(text: str, keep_html: bool, memo: _Memo, budget: ParserBudget | None) -> str:
    """Render markdown to plain text: images gone, links as "text (url)", all markers removed."""
    if text in memo.inert:
        return memo.inert[text]
    if not _has_markdown(text):
        return text
    if len(text) > _MD_TEXT_LIMIT or (budget is not None and not keep_html and budget.chars < len(text)):
        flat = _inert(text, keep_html)
        # `_inert` runs to its own fixpoint: when the next pass brings this text back unchanged,
        # it need not be scanned again.
        memo.inert[text] = memo.inert[flat] = flat
        return flat
    # Blocks separated by blank lines are flattened one by one: no inline construct spans a blank
    # line, only plain text is skipped, and one huge block cannot hold up the others.
    out = []
    for block in _BLANK_LINES.split(text):
        if block not in memo.blocks:
            if budget is not None and not keep_html:
                budget.chars -= len(block)
            memo.blocks[block] = _flatten_block(block, keep_html)
        out.append(memo.blocks[block])
    flat = "\n\n".join(out)
    # What the parser leaves goes through the parser-free flattener too, so that both reach the same
    # fixpoints: a text sanitised with the parser is unchanged when sanitised without it, and the
    # other way round, which lets a parser budget choose either.  (With HTML kept, `_inert` drops the
    # escaped tags the parser keeps; that weaker mode keeps the parser and has no budget.)
    return flat if keep_html else _inert(flat, keep_html)


def _flatten_block(block: str, keep_html: bool) -> str:
    if not _has_markdown(block):
        return block
    tokens = (_MD_TEXT if keep_html else _MD).parse(block)
    return "\n\n".join(_render_blocks(tokens, 0, len(tokens), keep_html))


def _inert(text: str, keep_html: bool) -> str:
    """Flatten without a parser: remove only what could still form markdown, keep ordinary text.

    Images go, links become "text (url)"; a "*" or "_" stays only where CommonMark says it can
    neither open nor close emphasis (between spaces, or "_" inside a word as in snake_case);
    brackets and pipes stay unless a link, reference or table delimiter row could use them; block
    markers at line starts go (an ordered list keeps its number).  Every round that changes
    something makes the text shorter, so the loop ends.
    """
    starts_clean = False
    while (nxt := _inert_round(text, keep_html, starts_clean))[0] != text:
        # A round ends with its line starts cleared, unless removing blanks bared one (below): the
        # next needs to clear them again only after a change of its own.
        text, starts_clean = nxt
    return text


def _inert_round(text: str, keep_html: bool, starts_clean: bool = False) -> tuple[str, bool]:
    """One round, and whether it left every line start cleared."""
    # Each substitution runs only when a cheap substring test says it can match: on a megabyte
    # every regular-expression scan costs milliseconds.
    before = text
    if "![" in text:
        text = _INERT_IMAGE.sub("", text)
    if "](" in text:
        # "[text](url)" reads "text (url)", in two substitutions without a function call per link.
        text = _INERT_LINK_CLOSE.sub(" (", _INERT_LINK_OPEN.sub("", text))
    if "](" in text or "][" in text or "]:" in text:
        text = text.replace("[", "").replace("]", "")  # what is left may belong to a link or reference
    if "|" in text and "-" in text and _has_delimiter_row(text):
        text = text.replace("|", "")
    if "`" in text:
        text = text.replace("`", "")
    if "~~" in text:
        text = _INERT_TILDES.sub("", text)
    if keep_html:
        text = text.replace("<", "").replace(">", "")
    if "*" in text:
        text = _INERT_STARS.sub("", text)
    if "_" in text and _UNDERSCORE_OPENER.search(text):
        text = _INERT_UNDERSCORES.sub("", text)
    if "\\" in text:
        text = _INERT_ESCAPE.sub("", text)  # a backslash escape is markup too: a parser would drop it
    if starts_clean and text == before:
        return text, True  # the round before left line starts, blanks and blank lines as below already
    # Block markers last, once: removing an inline marker or a pipe can bare one at a line start.
    text = _inert_lines(text)
    # What still starts a line with a blank starts it with one the scan keeps (no-break space and
    # the like), which a paragraph's edge loses below: "\xa0*" becomes "*", a list marker.
    first, rest = _BLANK_AT_LINE_START
    cleared = not (first.match(text) or rest.search(text))
    # Blanks and blank lines as a parser leaves them, so that flattened text reads the same to the
    # parser when a later pass hands it there: none at line ends, none of any kind at either end of
    # a paragraph, one blank line between paragraphs.
    text = _drop_trailing_blanks(text)
    if _BLOCK_EDGE_GATE.search(text):
        text = _BLOCK_EDGE_SPACE.sub("", text)
    if "\n\n\n" in text or "\n\n " in text or "\n\n\t" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip(), cleared


def _drop_trailing_blanks(text: str) -> str:
    # A few plain replacements (fast substring scans) strip the usual one or two blanks; a long run
    # falls to the regular expression, which tries every blank in the text and so costs more.
    for _ in range(3):
        if " \n" not in text and "\t\n" not in text:
            break
        text = text.replace(" \n", "\n").replace("\t\n", "\n")
    else:
        text = _TRAILING_BLANKS.sub("\n", text)
    return text.rstrip(" \t") if text.endswith((" ", "\t")) else text


def _inert_lines(text: str) -> str:
    text = _sub_line_starts(_INERT_LEAD, "", text)
    if "." in text or ")" in text:
        text = _sub_line_starts(_INERT_NUMBER, _number_only, text)
    return text


def _sub_line_starts(
    patterns: tuple[re.Pattern[str], re.Pattern[str]], repl: str | Callable[[re.Match[str]], str], text: str
) -> str:
    first, rest = patterns
    if isinstance(repl, str):
        return rest.sub("\n" + repl, first.sub(repl, text, count=1))
    return rest.sub(lambda match: "\n" + repl(match), first.sub(repl, text, count=1))


# A function, not a "\1" template: Python 3.11 expands a template in Python code for every match.
def _number_only(match: re.Match[str]) -> str:
    return match.group(1)


def _has_delimiter_row(text: str) -> bool:
    first, rest = _INERT_DELIMITER_ROW
    return first.match(text) is not None or rest.search(text) is not None


def _render_blocks(tokens: list[Token], start: int, stop: int, keep_html: bool) -> list[str]:
    blocks: list[str] = []
    i = start
    while i < stop:
        token = tokens[i]
        if token.nesting == 1:
            end = _closing(tokens, i)
            blocks.extend(_render_container(tokens, i, end, keep_html))
            i = end + 1
            continue
        text = _render_leaf(token, keep_html)
        if text:
            blocks.append(text)
        i += 1
    return blocks


def _closing(tokens: list[Token], i: int) -> int:
    level = tokens[i].level
    for j in range(i + 1, len(tokens)):
        if tokens[j].nesting == -1 and tokens[j].level == level:
            return j
    return len(tokens) - 1


def _render_container(tokens: list[Token], i: int, end: int, keep_html: bool) -> list[str]:
    kind = tokens[i].type
    if kind in ("bullet_list_open", "ordered_list_open"):
        return ["\n".join(_render_items(tokens, i + 1, end, keep_html))]
    if kind == "tr_open":
        return ["\t".join(_render_cells(tokens, i + 1, end, keep_html))]
    inner = _render_blocks(tokens, i + 1, end, keep_html)
    if kind == "table_open":
        return ["\n".join(inner)]
    if kind in ("thead_open", "tbody_open"):
        return inner
    if kind in ("paragraph_open", "heading_open", "th_open", "td_open"):
        # A removed image or tag leaves blanks at line edges; markdown ignores them there anyway,
        # and left in place they take an extra pass to disappear (or start a code block).
        text = _LINE_EDGE_SPACE.sub("", "".join(inner))
        return [text] if text else []
    return inner


def _render_items(tokens: list[Token], start: int, stop: int, keep_html: bool) -> list[str]:
    # List markers stay: "1." carries a number the reader needs, and a marker re-parses to itself.
    items = []
    i = start
    while i < stop:
        end = _closing(tokens, i)
        marker = tokens[i].info + tokens[i].markup
        body = "\n\n".join(_render_blocks(tokens, i + 1, end, keep_html))
        indent = " " * (len(marker) + 1)
        items.append(f"{marker} {body.replace(chr(10), chr(10) + indent)}" if body else marker)
        i = end + 1
    return items


def _render_cells(tokens: list[Token], start: int, stop: int, keep_html: bool) -> list[str]:
    cells = []
    i = start
    while i < stop:
        end = _closing(tokens, i)
        cells.append("".join(_render_blocks(tokens, i + 1, end, keep_html)).strip())
        i = end + 1
    return cells


def _render_leaf(token: Token, keep_html: bool) -> str:
    if token.type == "inline":
        return _render_inline(token.children or [], keep_html)
    if token.type in ("fence", "code_block"):
        return token.content.rstrip("\n")
    if token.type == "html_block":
        return token.content.rstrip("\n") if keep_html else ""
    if token.type == "hr":
        return ""
    return token.content


def _render_inline(children: list[Token], keep_html: bool) -> str:
    parts: list[str] = []
    links: list[tuple[str, int, bool]] = []
    for token in children:
        kind = token.type
        if kind in ("text", "text_special", "code_inline"):
            parts.append(token.content)
        elif kind in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif kind == "html_inline" and keep_html:
            parts.append(token.content)
        elif kind == "link_open":
            links.append((str(token.attrGet("href") or ""), len(parts), token.markup == "autolink"))
        elif kind == "link_close" and links:
            _close_link(parts, *links.pop())
        # images are dropped whole (their URL is the exfiltration channel); emphasis and
        # strikethrough markers simply vanish.
    return "".join(parts)


def _close_link(parts: list[str], href: str, start: int, autolink: bool) -> None:
    label = "".join(parts[start:])
    del parts[start:]
    if autolink or not href or href == label:
        parts.append(label or href)
    elif label.strip():
        parts.append(f"{label} ({href})")
    else:
        parts.append(href)


# --- output -----------------------------------------------------------------------------------


def _escape(text: str) -> str:
    """Escape so that decoding entities once yields `text` exactly, with no raw "<" or ">"."""
    if "&" in text:
        text = _RENDERER_REF.sub(_escape_ref, text)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _escape_ref(match: re.Match[str]) -> str:
    ref = match.group()
    if ref[-1] == ";" and ref[1:] not in _HTML5:
        return ref  # "&word;" that is no entity: a renderer shows it as written
    return "&amp;" + ref[1:]


# --- truncation -------------------------------------------------------------------------------


def _work_cap(max_chars: int) -> int:
    # Escaping grows text at most 4x, so more input than this can never fit into max_chars.
    return 4 * max(max_chars, 0) + 4096


def _limit(out: str, max_chars: int, omitted: int, strip_html: bool, strip_markdown: bool) -> str:
    body, earlier = _split_marker(out)
    if len(body) <= max_chars and not omitted:
        return out
    max_chars = max(max_chars, 0)
    keep = _cut(body, max_chars)
    omitted += earlier + len(body) - len(keep)
    return _settle_prefix(keep, max_chars, strip_html, strip_markdown) + _marker(omitted, bool(keep))


def _settle_prefix(keep: str, max_chars: int, strip_html: bool, strip_markdown: bool) -> str:
    """Make a cut-off prefix its own sanitised form again, with no trailing blank.

    Cutting can leave half a construct (a dangling ZWJ, "#" alone on a line).  The marker goes
    into a paragraph of its own, and blocks are flattened one by one, so once the prefix is a
    fixpoint, prefix + marker is one too.
    """
    for _ in range(4):
        settled = _escape(_settle(keep, strip_html, strip_markdown)).rstrip()
        if settled == keep and len(keep) <= max_chars:
            return keep
        keep = settled
    keep = _strict(html.unescape(keep))[:max_chars]
    while (nxt := _strict(keep.rstrip())) != keep:  # each round only shortens
        keep = nxt
    return keep


def _split_marker(out: str) -> tuple[str, int]:
    match = _MARKER.search(out)
    if not match:
        return out, 0
    return out[: match.start()], int(match.group(1))


def _cut(text: str, size: int) -> str:
    keep = text[:size]
    amp = keep.rfind("&", max(0, size - 8))
    if amp != -1 and ";" not in keep[amp:]:
        keep = keep[:amp]  # never split an escape such as "&lt;" or "&amp;copy"
    return keep.rstrip()


def _marker(omitted: int, after_text: bool) -> str:
    # Parentheses, not brackets, and a paragraph of its own: neither the marker nor its position
    # may look like markup, or sanitising the truncated text again would change it.
    separator = "\n\n" if after_text else ""
    return f"{separator}(... truncated by mcp-guard: {omitted} characters omitted)"
