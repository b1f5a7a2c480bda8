r"""Character references and JSON escapes: decoding them once per pass, and escaping the output.

Markup spelled as references ("&lt;b&gt;", "&#60;") is markup to a renderer that decodes them, and
"\u003c" is a "<" to a reader that decodes JSON, so each pass decodes them once and the steps after
it see the characters.  The output goes the other way: `_escape` writes "<" and ">" as references,
and every "&" a lenient renderer (html.unescape) would still decode as "&amp;", so that decoding the
output once gives back exactly the fixpoint the loop reached.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from html.entities import html5 as _HTML5

# Entities are decoded by the HTML attribute rule: always with ";", and a legacy name without ";"
# ("&copy", "&lt") only when no letter, digit or "=" follows, so "?a=1&copy=2" survives.
_LEGACY = "|".join(sorted((name for name in _HTML5 if not name.endswith(";")), key=len, reverse=True))
_DECODABLE = re.compile(
    rf"&(?:#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z][A-Za-z0-9]{{0,31}};|(?:{_LEGACY})(?![A-Za-z0-9=]))"
)
# What html.unescape (a lenient renderer) would decode: any legacy-name prefix, any number.
_RENDERER_REF = re.compile(rf"&(?:#[0-9]|#[xX][0-9a-fA-F]|{_LEGACY}|[A-Za-z][A-Za-z0-9]{{0,31}};)")


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
