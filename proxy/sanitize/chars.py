"""Characters that hide, reorder or control text; their removal (`_strip_controls`), and NFC.

Invisible and default-ignorable characters, bidi controls, C0/C1 controls and ANSI escape sequences
let an upstream show a reader (or a terminal) something other than what the model reads.  They go
before the first pass and again after every pass that changed the text, since a later step can
bring one back (decoding "&#27;" gives an ESC).  Line separators other than a newline become one,
so that every line start a renderer sees is a line start to the steps.  ZWJ and variation
selectors stay where they build an emoji.
"""

from __future__ import annotations

import re
import unicodedata

_EMOJI = (
    "\u00a9\u00ae\u203c\u2049\u2122\u2139\u2194-\u2199\u21a9\u21aa\u231a\u231b\u2328\u23cf"
    "\u23e9-\u23f3\u23f8-\u23fa\u24c2\u25aa\u25ab\u25b6\u25c0\u25fb-\u25fe\u2600-\u27bf"
    "\u2934\u2935\u2b05-\u2b07\u2b1b\u2b1c\u2b50\u2b55\u3030\u303d\u3297\u3299"
    "\U0001f000-\U0001fffd"
)
# Variation selectors.  Only VS15/VS16 right after an emoji (or VS16 before a keycap mark) mean
# anything a reader sees; VS1-14 there, and VS17-256 anywhere (U+E0100-E01EF, in the invisible
# block below), would let each emoji carry a hidden byte.
_VARIATION = "\ufe00-\ufe0f"
# Default-ignorable and format characters that hide or reorder text: every Default_Ignorable_Code_Point
# of Unicode (the unassigned ones too, which a later version may give a meaning) but ZWJ and the
# variation selectors, which stay where they build an emoji.  Deliberately kept: the
# visible Arabic/Syriac number marks (U+0600-0605, 06DD, 070F, 0890-0891, 08E2, 110BD, 110CD)
# and the Egyptian hieroglyph format controls (U+13430-1343F): they are part of ordinary text.
_INVISIBLE_BMP = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b\u200c\u200e\u200f"
    "\u202a-\u202e\u2060-\u206f\u3164\ufeff\uffa0\ufff0-\ufffb\ud800-\udfff"
)
_INVISIBLE = _INVISIBLE_BMP + "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
_CONTROL = "\x00-\x08\x0b-\x1f\x7f-\x9f"
_LINE_BREAKS = "\r\x0b\x0c\x85\u2028\u2029"
# The same controls as bytes, for ASCII text: deleting them with bytes.translate is a C loop.
_ASCII_CONTROLS = bytes([*range(0x09), *range(0x0B, 0x20), 0x7F])

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
# Keep VS15/VS16 right after an emoji, or before the keycap mark in "1️⃣"; drop every other one.
_LONE_VS = re.compile(f"[{_VARIATION}](?<![{_EMOJI}][\ufe0e\ufe0f])(?!(?<=[\ufe0e\ufe0f])\u20e3)")


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
