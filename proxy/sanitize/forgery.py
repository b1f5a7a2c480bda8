"""Text that impersonates the envelope or the operator: look-alike tags and forged "SYSTEM:" lines.

Every "<" is escaped on the way out, so an upstream cannot close the <tool_output> envelope with a
real tag; it can try look-alikes.  "＜/ｔｏｏｌ＿output＞" spelled with bracket-like characters is
folded to the ASCII tag (`_defang_lookalike_tags`), so the tag stripper and the output escaping
treat it as the real one, and "< /tool_output>", which no parser takes for a tag but a reader
might, loses its "<" (`_NEAR_TAG`).  A line that reads "SYSTEM:" once folded (any case, behind
blanks or combining marks, with any character whose NFKC form starts with "s", spelled with
Cyrillic, Greek or Cherokee look-alike letters, accents or a look-alike colon) gets an
"(untrusted) " prefix, so it cannot pass for an instruction from the operator.
"""

from __future__ import annotations

import re
import unicodedata

_LOOK_OPEN = "\u00ab\u02c2\u1438\u2039\u2329\u276c\u276e\u2770\u27e8\u27ea\u29fc\u3008\ufe64\uff1c"
_LOOK_CLOSE = "\u00bb\u02c3\u1433\u203a\u232a\u276d\u276f\u2771\u27e9\u27eb\u29fd\u3009\ufe65\uff1e"
_LOOK_SLASH = "/\u2044\u2215\u29f8\uff0f"
# Combining marks (and the blank Braille pattern) show nothing on their own before a "SYSTEM:".
_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f\u2800"


def _s_lookalikes() -> str:
    # Characters whose NFKD+casefold starts with "s" ("ſ", "ｓ", "𝐒", "Ⓢ", "Ś", ...) can start a forged
    # "SYSTEM:" line.  They all live in these blocks (tests check every code point).
    blocks = [(0x80, 0x2FF), (0x1D00, 0x1EFF), (0x2000, 0x33FF), (0xFB00, 0xFFEF), (0x1D400, 0x1D7FF)]
    blocks.append((0x1F100, 0x1F1FF))
    found = []
    for start, end in blocks:
        for cp in range(start, end + 1):
            if unicodedata.normalize("NFKD", chr(cp)).casefold().startswith("s"):
                found.append(chr(cp))
    return "".join(found)


_S_LIKE = _s_lookalikes()
# Letters that NFKC leaves alone but a reader takes for the Latin ones of "system:" (Unicode's
# confusables for s, y, t, e, m and the colon, from the scripts a model reads: Cyrillic, Greek,
# Armenian, Cherokee, Georgian, Lisu, IPA).  Casefolded text is translated, so lower case suffices
# where casefold maps the capital onto it.
_SYSTEM_CONFUSABLES = str.maketrans(
    {
        **dict.fromkeys("\u0455\u057f\u13da\ua731\u01bd", "s"),
        **dict.fromkeys("\u0443\u04af\u03c5\u03b3\u10e7\u0263\u028f\u13a9\u1eff\uab8e", "y"),
        **dict.fromkeys("\u0442\u03c4\u13a2\uab72\u1d1b", "t"),
        **dict.fromkeys("\u0435\u04bd\u03b5\u13ac\uab7c\u1d07", "e"),
        **dict.fromkeys("\u043c\u03bc\u13b7\uabb7\u1d0d", "m"),
        **dict.fromkeys("\u2236\u02d0\u02f8\ua789\u0589\u05c3\u205a\u16ec\u2982\ua4fd\u0703\u0704", ":"),
    }
)
# Capitals of the look-alike s that casefold does not reach from the capital itself.
_S_CONFUSABLE = "\u0405\u0455\u054f\u13da\ua731\u01bd\uabaa"
_LEAD = rf"[^\S\n]|[{_MARKS}]"
_SYSTEM_HINT = rf"(?:{_LEAD})*(?:[sS{_S_CONFUSABLE}](?:[yY]|[^\x00-\x7f])|[{_S_LIKE}])"

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


def _defang_system_lines(text: str) -> str:
    if not (_SYSTEM_START.match(text) or (_SYSTEM_NL_CHEAP.search(text) and _SYSTEM_NL.search(text))):
        return text
    return _SYSTEM_LINE.sub(_mark_forged_system, text)


def _mark_forged_system(match: re.Match[str]) -> str:
    head = match.string[match.start() : match.end() + 48].split("\n", 1)[0]
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", head).casefold())
    # Accents and look-alike letters do not change what a reader takes the word for.
    folded = "".join(c for c in folded if not unicodedata.combining(c)).translate(_SYSTEM_CONFUSABLES)
    folded = folded[_SYSTEM_LEAD.match(folded).end() :]  # type: ignore[union-attr]
    if _SYSTEM_WORD.match(folded):
        return _FORGED_PREFIX + match.group()
    return match.group()
