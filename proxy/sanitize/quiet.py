"""The quiet check, `_is_quiet`: is the text already its own sanitised form, with no step to run?

Most untrusted text is ordinary (no markup, no hidden characters, already NFC), and proving that
takes a few scans instead of a pass of every step.  The check may only err one way: it may call a
text that no step changes not quiet (that costs a pass), never the other way round, so its
triggers cover every character and line start any step reacts to (the tests check that).
"""

from __future__ import annotations

import re
import unicodedata

from proxy.sanitize.chars import _ASCII_CONTROLS, _CONTROL, _INVISIBLE_BMP, _LINE_BREAKS, _LONE_ZWJ
from proxy.sanitize.escapes import _RENDERER_REF
from proxy.sanitize.forgery import _LOOK_CLOSE, _LOOK_OPEN, _SYSTEM_HINT
from proxy.sanitize.markdown import _MD_CHARS

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
    f"{_LOOK_OPEN}{_LOOK_CLOSE}\U0001bca0-\U0001d17a\U000e0000-\U000e0fff]"
)
_TRIGGER_LINE_START = re.compile(f"(?:{_QUIET_MD_LINE}|{_SYSTEM_HINT})")
_TRIGGER_LINE = re.compile(f"\n(?:{_QUIET_MD_LINE}|{_SYSTEM_HINT})")
# The same tests for ASCII text, where most untrusted text is and where they can be cheaper: the
# characters are deleted from the bytes (a C loop, no regular expression), and a line start needs
# no look-alike class (every look-alike "s" and combining mark is non-ASCII).
_ASCII_TRIGGERS = _ASCII_CONTROLS + b"<>*_`[]\\|~"
_ASCII_SYSTEM_HINT = r"[\t\x0b\x0c\r\x1c-\x1f ]*[sS][yY]"
_ASCII_TRIGGER_LINE_START = re.compile(f"(?:{_QUIET_MD_LINE}|{_ASCII_SYSTEM_HINT})")
_ASCII_TRIGGER_LINE = re.compile(f"\n(?:{_QUIET_MD_LINE}|{_ASCII_SYSTEM_HINT})")


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
