"""SPEC §5 E1 and E2, checked on anything a real `mcp.Client` receives.

`violations(obj)` walks a pydantic model (dumped the way it travels: `mode="json", by_alias=True,
exclude_none=True`), an exception, or plain JSON, and names every path where E1 or E2 is broken.
`text_violations(s)` is the same check for one model-visible string.

How a string is judged (E2 says: "as a renderer sees it, after JSON decoding and decoding HTML
entities once"):
- an envelope (text holding the proxy's PREAMBLE) is split into the proxy's own frame, which is
  exempt, and the body, which gets E1 (no raw "<" or ">", the proxy's close tag once and last, no
  look-alike close tag) and then E2 like any other string; text around an envelope (mcp-guard's own
  words, e.g. "upstream 'x' refused the call:") is checked too;
- a string that is JSON text (an object or array) is parsed, and every key and string inside is
  judged in turn (recursively: JSON in a string in JSON...); the JSON punctuation itself is not
  rendered text;
- any other string is decoded once with `html.unescape` and then must hold no HTML tag, comment,
  doctype or processing instruction (`<` followed by a letter, "/", "!" or "?"), nothing markdown-it
  (CommonMark plus tables and strikethrough, every link destination accepted, as a lax renderer
  would) parses as a construct other than paragraphs, plain text and line breaks, no image or link
  written `![..](..)` / `[..](..)`, no heading, blockquote or table delimiter line, no C0/C1/DEL
  control except newline and tab, no invisible format character, and must be NFC.

Deliberately NOT violations, because they are ordinary text (E3): a lone "<" or ">" that starts no
tag ("a < b", "<3" arrives as "&lt;3"), "5 * 3", "snake_case", URLs, e-mail addresses, phone
numbers, "#hashtag", "C#", and lists ("1. first" / "- item"): SPEC §5 names emphasis, heading, code,
table and quote markers, not list markers, and a numbered list carries numbers the reader needs.
A ZWJ between two emoji ("👩‍💻") is part of the emoji, not hidden text. Variation selectors are
not "zero-width, bidi-control or tag characters" in the SPEC's sense and are not checked.

Exemptions (kept minimal; everything else, keys included, is checked):
- base64 payloads: `data` of an image/audio block and `blob` of a blob resource must be base64
  and are then not parsed as text (base64 cannot carry markup; markdown-it on megabytes is slow);
- `jsonrpc` and `id` at the top of a raw JSON-RPC message (`wire_violations`): the client's own
  request ids and the protocol's version tag, never upstream text;
- the envelope frame: PREAMBLE, the `<tool_output ...>` opening line and the final `</tool_output>`.
Numbers, booleans and null are never text.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from markdown_it import MarkdownIt
from pydantic import BaseModel

from proxy.envelope import PREAMBLE

__all__ = ["CLOSE", "PREAMBLE", "envelope_body", "is_envelope", "text_violations", "violations", "wire_violations"]

CLOSE = "</tool_output>"
# The proxy's opening tag: attribute values are quoted and can hold no "<", ">" or line break.
_OPENING = re.compile(r'<tool_output(?: [A-Za-z_][A-Za-z0-9_-]*="[^"<>\n]*")*>')
_MAX_DEPTH = 24  # JSON-in-string-in-JSON nesting followed before giving up (reported, never silently)
_PARSE_LIMIT = 200_000  # markdown-it is pure Python; longer texts get the regular-expression checks only
_SNIPPET = 80

# --- character rules ------------------------------------------------------------------------------

# Format (Cf) characters that are visible and part of ordinary text, kept by the sanitiser on purpose
# (`_INVISIBLE` in proxy/sanitize.py): Arabic/Syriac number marks and the Egyptian hieroglyph format
# controls. Every other Cf character hides, reorders or smuggles text.
_VISIBLE_CF = frozenset(
    [*range(0x0600, 0x0606), 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2, 0x110BD, 0x110CD, *range(0x13430, 0x13440)]
)
_ZWJ = "\u200d"
_KEYCAP = "\u20e3"
_VS16 = "\ufe0f"


def _is_emoji(ch: str) -> bool:
    # Symbols (So) cover the emoji blocks; skin-tone modifiers are Sk.
    return unicodedata.category(ch) == "So" or 0x1F3FB <= ord(ch) <= 0x1F3FF


def _emoji_zwj(text: str, i: int) -> bool:
    """A ZWJ joining two emoji, as in 👩‍💻 or 🏳️‍🌈 (VS16 or a keycap may sit on its left)."""
    left = text[i - 1] if i > 0 else ""
    if left in (_VS16, _KEYCAP) and i > 1:
        left = text[i - 2]
    right = text[i + 1] if i + 1 < len(text) else ""
    return bool(left) and bool(right) and _is_emoji(left) and _is_emoji(right)


# Unicode's Default_Ignorable_Code_Point, unassigned ones included (DerivedCoreProperties.txt).
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
    (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip


def _default_ignorable(cp: int) -> bool:
    return any(low <= cp <= high for low, high in _DEFAULT_IGNORABLE)


def _kept_joiner(text: str, i: int) -> bool:
    """ZWJ between emoji, or one VS15/VS16 after a visible character (it picks emoji or text style):
    a single selector carries no hidden text, a run of them or any other selector could."""
    ch = text[i]
    if ch == _ZWJ:
        return _emoji_zwj(text, i)
    if ch in "\ufe0e\ufe0f" and i > 0:
        before = ord(text[i - 1])
        return not _default_ignorable(before) and not text[i - 1].isspace()
    return False


def _char_problems(text: str) -> Iterator[str]:
    for i, ch in enumerate(text):
        cp = ord(ch)
        if (cp < 0x20 and ch not in "\n\t") or 0x7F <= cp <= 0x9F:
            yield f"E2 control character U+{cp:04X}"
        elif 0xE0000 <= cp <= 0xE007F:
            yield f"E2 Unicode tag character U+{cp:04X}"
        elif _default_ignorable(cp) and not _kept_joiner(text, i):
            yield f"E2 default-ignorable (invisible) character U+{cp:04X}"
        elif 0xD800 <= cp <= 0xDFFF:
            yield f"E2 lone surrogate U+{cp:04X}"
        elif unicodedata.category(ch) == "Cf" and cp not in _VISIBLE_CF and not (ch == _ZWJ and _emoji_zwj(text, i)):
            yield f"E2 invisible/bidi format character U+{cp:04X} {unicodedata.name(ch, '?')}"


# --- markup rules ------------------------------------------------------------------------------------

_TAG = re.compile(r"<[A-Za-z/!?]")
# Images and links as every renderer reads them: a destination without blanks (or with a quoted title).
_IMAGE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)")
_LINK = re.compile(r"\[[^\]\n]*\]\([^)\s]*(?:\s+\"[^\"\n]*\")?\)")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]|$)", re.MULTILINE)
_QUOTE = re.compile(r"^ {0,3}>", re.MULTILINE)
_CELL = r"[ \t]*:?-+:?[ \t]*"
_DELIMITER_ROW = re.compile(rf"^[ \t]*(?:\|{_CELL}(?:\|{_CELL})*\|?|{_CELL}(?:\|{_CELL})+\|?)[ \t]*$", re.MULTILINE)
# E1's intent: no close tag a model could mistake for the proxy's, spelt with look-alike brackets.
_LOOK_OPEN = "<\u00ab\u02c2\u1438\u2039\u2329\u276c\u276e\u2770\u27e8\u27ea\u29fc\u3008\ufe64\uff1c"
_LOOK_TOOL_TAG = re.compile(rf"[{_LOOK_OPEN}]\s*[/\u2044\u2215\u29f8\uff0f]?\s*tool[\s_\-\u2010-\u2015]?output")

_ALLOWED_BLOCKS = frozenset(
    {
        "paragraph_open",
        "paragraph_close",
        "inline",
        # Lists are ordinary text (see the module docstring).
        "bullet_list_open",
        "bullet_list_close",
        "ordered_list_open",
        "ordered_list_close",
        "list_item_open",
        "list_item_close",
    }
)
_ALLOWED_INLINE = frozenset({"text", "text_special", "softbreak", "hardbreak"})


def _renderer() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": True, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    # markdown-it refuses javascript:/data: destinations and leaves them as text; a laxer renderer
    # links them, so every destination is accepted here.
    md.validateLink = lambda url: True  # type: ignore[method-assign]
    return md


_MD = _renderer()


def _markdown_problems(seen: str) -> Iterator[str]:
    covered: set[str] = set()  # token kinds a regular expression already reported (one line per problem)
    if m := _TAG.search(seen):
        covered |= {"html_inline", "html_block"}
        yield f"E2 HTML tag/comment/doctype {_around(seen, m)}"
    if m := _IMAGE.search(seen):
        covered |= {"image"}
        yield f"E2 markdown image {_around(seen, m)}"
    elif m := _LINK.search(seen):
        covered |= {"link_open", "link_close"}
        yield f"E2 markdown link {_around(seen, m)}"
    if m := _HEADING.search(seen):
        covered |= {"heading_open", "heading_close"}
        yield f"E2 markdown heading line {_around(seen, m)}"
    if m := _QUOTE.search(seen):
        covered |= {"blockquote_open", "blockquote_close"}
        yield f"E2 markdown blockquote line {_around(seen, m)}"
    if m := _DELIMITER_ROW.search(seen):
        covered |= {"table_open", "table_close", "thead_open", "thead_close", "tbody_open", "tbody_close"}
        covered |= {"tr_open", "tr_close", "th_open", "th_close", "td_open", "td_close"}
        yield f"E2 markdown table delimiter row {_around(seen, m)}"
    if len(seen) > _PARSE_LIMIT:
        return
    env: dict[str, Any] = {}
    tokens = _MD.parse(seen, env)
    if env.get("references"):
        yield f"E2 markdown link reference definition (hides its line) {sorted(env['references'])[:3]!a}"
    kinds: set[str] = set()
    for token in tokens:
        if token.type not in _ALLOWED_BLOCKS:
            kinds.add(token.type)
        for child in token.children or []:
            if child.type not in _ALLOWED_INLINE:
                kinds.add(child.type)
    kinds = {kind.removesuffix("_open").removesuffix("_close") for kind in kinds - covered}
    if kinds:
        yield f"E2 renders as markdown {sorted(kinds)} in {_snip(seen)}"


# --- strings -------------------------------------------------------------------------------------------


def _snip(text: str) -> str:
    return ascii(text[:_SNIPPET] + ("..." if len(text) > _SNIPPET else ""))


def _around(text: str, match: re.Match[str] | None) -> str:
    if match is None:
        return _snip(text)
    start = max(0, match.start() - 20)
    return ascii(text[start : match.end() + 20])


def _json_container(text: str) -> Any:
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict | list) else None


def is_envelope(text: str) -> bool:
    """True if `text` is exactly one envelope (PREAMBLE, opening line, body, close tag last)."""
    return text.startswith(PREAMBLE + "\n") and envelope_body(text) is not None and text.count(PREAMBLE) == 1


def envelope_body(text: str) -> str | None:
    """The body of the envelope `text` is, or None when it is none (or a broken one)."""
    if not text.startswith(PREAMBLE + "\n") or not text.endswith("\n" + CLOSE):
        return None
    rest = text[len(PREAMBLE) + 1 : -len(CLOSE) - 1]
    opening, sep, body = rest.partition("\n")
    if not _OPENING.fullmatch(opening):
        return None
    return body if sep else ""


def _check_string(text: str, path: str, out: list[str], depth: int) -> None:
    if PREAMBLE in text:
        _check_with_envelopes(text, path, out, depth)
        return
    _check_untrusted(text, path, out, depth)


def _check_with_envelopes(text: str, path: str, out: list[str], depth: int) -> None:
    starts = [m.start() for m in re.finditer(re.escape(PREAMBLE), text)]
    head = text[: starts[0]]
    if head:
        _check_untrusted(head, f"{path}<before envelope>", out, depth)
    for n, start in enumerate(starts):
        stop = starts[n + 1] if n + 1 < len(starts) else len(text)
        chunk = text[start + len(PREAMBLE) : stop]
        where = f"{path}<envelope {n}>"
        opening, sep, rest = chunk.removeprefix("\n").partition("\n")
        if not chunk.startswith("\n") or not _OPENING.fullmatch(opening):
            out.append(f"{where}: E1 malformed opening line {_snip(opening)}")
        close = rest.rfind("\n" + CLOSE) if sep else -1
        if close < 0:
            out.append(f"{where}: E1 envelope has no closing {CLOSE}")
            body, trailing = rest, ""
        else:
            body, trailing = rest[:close], rest[close + 1 + len(CLOSE) :]
        if "<" in body or ">" in body:
            at = min(i for i in (body.find("<"), body.find(">")) if i >= 0)
            out.append(f"{where}: E1 raw '<' or '>' in the body {body[max(0, at - 30) : at + 30]!a}")
        if CLOSE in body:
            out.append(f"{where}: E1 {CLOSE} inside the body")
        if m := _LOOK_TOOL_TAG.search(unicodedata.normalize("NFKC", html.unescape(body)).casefold()):
            out.append(f"{where}: E1 look-alike tool_output tag in the body {_around(m.string, m)}")
        _check_untrusted(body, f"{where}.body", out, depth)
        if trailing:
            _check_untrusted(trailing, f"{where}<after>", out, depth)


def _check_untrusted(text: str, path: str, out: list[str], depth: int) -> None:
    parsed = _json_container(text)
    if parsed is not None:
        if depth >= _MAX_DEPTH:
            out.append(f"{path}: JSON nested deeper than {_MAX_DEPTH} strings; not checked further")
            return
        _walk(parsed, f"{path}<json>", out, depth + 1, top=False)
        return
    seen = html.unescape(text)
    problems = list(_char_problems(seen))
    if not unicodedata.is_normalized("NFC", seen) or not unicodedata.is_normalized("NFC", text):
        problems.append(f"E2 not NFC {_snip(seen)}")
    problems += _markdown_problems(seen)
    out.extend(f"{path}: {problem}" for problem in dict.fromkeys(problems))


# --- structure -----------------------------------------------------------------------------------------

_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _base64_slot(obj: dict[str, Any], key: str) -> bool:
    if key == "data":
        return obj.get("type") in ("image", "audio")
    return key == "blob" and "uri" in obj


# mcp-guard's own sealed request state: opaque to client and model alike, so judged as a token (it may
# hold "_", which a renderer could take for emphasis, but never text of anyone's choosing).
_OPAQUE_STATE = re.compile(r"[A-Za-z0-9._~-]{1,65536}")


def _walk(value: Any, path: str, out: list[str], depth: int, top: bool) -> None:
    if isinstance(value, str):
        _check_string(value, path, out, depth)
    elif isinstance(value, dict):
        for key, item in value.items():
            if top and key in ("jsonrpc", "id"):
                continue
            where = (
                f"{path}.{key}"
                if isinstance(key, str) and re.fullmatch(r"[A-Za-z_$][\w$-]*", key)
                else (f"{path}[{key!a}]")
            )
            if isinstance(key, str):
                _check_string(key, f"{path}{{key {_snip(key)}}}", out, depth)
            if key == "requestState" and isinstance(item, str):
                if not _OPAQUE_STATE.fullmatch(item):
                    out.append(f"{where}: request state is not an opaque token {_snip(item)}")
                continue
            if isinstance(item, str) and _base64_slot(value, key):
                if not _BASE64.fullmatch(item):
                    out.append(f"{where}: base64 payload is not base64 {_snip(item)}")
                    _check_string(item, where, out, depth)
                continue
            _walk(item, where, out, depth, top=False)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]", out, depth, top=False)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(obj, BaseException):
        error = getattr(obj, "error", None)  # MCPError carries the JSON-RPC ErrorData
        return _jsonable(error) if isinstance(error, BaseModel) else str(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def violations(obj: Any, root: str = "$") -> list[str]:
    """Every E1/E2 violation in `obj` (a pydantic model, an exception, JSON), as "path: rule detail"."""
    out: list[str] = []
    _walk(_jsonable(obj), root, out, 0, top=False)
    return out


def wire_violations(message: dict[str, Any], root: str = "wire") -> list[str]:
    """`violations` for one raw JSON-RPC message; its own `jsonrpc` and `id` are not upstream text."""
    out: list[str] = []
    _walk(_jsonable(message), root, out, 0, top=True)
    return out


def text_violations(text: str, path: str = "$") -> list[str]:
    """E1/E2 violations of one string, judged as anything else a client receives."""
    out: list[str] = []
    _check_string(text, path, out, 0)
    return out
