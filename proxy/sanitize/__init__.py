"""Sanitise untrusted text before it goes into a <tool_output> envelope (SPEC §5, E1-E3).

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

This package is the public API, the fixpoint loop and truncation (which re-runs the loop on what
it cut).  The steps are modules of their own: `chars` (controls, invisibles, ANSI escapes, NFC),
`escapes` (character references and JSON escapes in, escaping out), `tags` (HTML tag stripping:
nh3 and the regular expressions that spare most text from it), `markdown` and `inert` (flattening
markdown with markdown-it-py and without it), `forgery` (look-alike envelope tags and forged
"SYSTEM:" lines), and `quiet` (the check that lets ordinary text skip every step).  The private
names that tests and `proxy.guards.prompt` still import from `proxy.sanitize`, from when it was one
module, are re-exported here (`import _X as _X`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from proxy.sanitize.chars import _CONTROL as _CONTROL
from proxy.sanitize.chars import _EMOJI as _EMOJI
from proxy.sanitize.chars import _INVISIBLE as _INVISIBLE
from proxy.sanitize.chars import _LINE_BREAKS as _LINE_BREAKS
from proxy.sanitize.chars import _VARIATION as _VARIATION
from proxy.sanitize.chars import _nfc, _strip_controls
from proxy.sanitize.escapes import _decode_entities, _decode_json_escapes, _escape
from proxy.sanitize.forgery import (
    _LOOK_CLOSE,
    _LOOK_OPEN,
    _NEAR_TAG,
    _defang_lookalike_tags,
    _defang_system_lines,
    _without_bracket,
)
from proxy.sanitize.forgery import _S_LIKE as _S_LIKE
from proxy.sanitize.inert import _BLANK_LINES
from proxy.sanitize.inert import _INERT_LEAD as _INERT_LEAD
from proxy.sanitize.inert import _LEAD_MARKERS as _LEAD_MARKERS
from proxy.sanitize.inert import _RULE_LINE as _RULE_LINE
from proxy.sanitize.inert import _at_line_start as _at_line_start
from proxy.sanitize.inert import _inert as _inert
from proxy.sanitize.inert import _inert_lines as _inert_lines
from proxy.sanitize.inert import _sub_line_starts as _sub_line_starts
from proxy.sanitize.markdown import _MD as _MD
from proxy.sanitize.markdown import _MD_CHARS, _flatten_markdown
from proxy.sanitize.markdown import _MD_TEXT as _MD_TEXT
from proxy.sanitize.markdown import _MD_TEXT_LIMIT as _MD_TEXT_LIMIT
from proxy.sanitize.quiet import _INTRAWORD_UNDERSCORE as _INTRAWORD_UNDERSCORE
from proxy.sanitize.quiet import _TRIGGER_CHAR as _TRIGGER_CHAR
from proxy.sanitize.quiet import _is_quiet
from proxy.sanitize.quiet import _is_quiet_unicode as _is_quiet_unicode
from proxy.sanitize.tags import _TAG_START, _strip_tags
from proxy.sanitize.tags import _split_plain_prefix as _split_plain_prefix
from proxy.sanitize.tags import _strip_plain_markup as _strip_plain_markup
from proxy.sanitize.tags import _strip_tags_nh3 as _strip_tags_nh3

__all__ = ["ParserBudget", "all_unchanged", "sanitize_text", "truncate"]

_MAX_PASSES = 8
# On short texts one quiet check is cheaper than a pass of steps; on long ones the steps' own cheap
# tests are, and a remembered flattening skips the rest.
_QUIET_CHECK_LIMIT = 4096

_STRICT_DROP = re.compile(f"[<>&{_MD_CHARS}#=+\\-{_LOOK_OPEN}{_LOOK_CLOSE}]")
_LEADING_SPACE = re.compile(r"^[^\S\n]+", re.MULTILINE)
_TRAILING_SPACE = re.compile(r"[^\S\n]+$", re.MULTILINE)
_LEADING_NUMBER = re.compile(r"^[\d.)]+", re.MULTILINE)

_MARKER = re.compile(r"(?:\A|\n\n)\(\.\.\. truncated by mcp-guard: (\d+) characters omitted\)\Z")


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
