"""A slow reference sanitiser: the oracle for `proxy.sanitize.sanitize_text` (issue 13).

Obviously correct rather than fast: no quick paths, budgets, memos or hand-written tokenisers.
One round is: NFC -> drop controls, ANSI sequences and invisible format characters -> decode
entities once -> nh3 removes every tag, comment and script/style body -> markdown-it parses and the
token stream is written back as plain text (images removed, links "text (url)", every marker gone)
-> drop controls again and NFC. Rounds repeat until the text stops changing (decoding or flattening
can expose new markup: "&amp;lt;b&amp;gt;", a code span holding "*x*"); text that has not settled
after `_MAX_ROUNDS` loses every character that can form markup. The settled text T is escaped so
that decoding entities once gives T back exactly and no raw "<" or ">" remains.

It does not try to keep ordinary text byte-identical (it drops list numbers, emoji ZWJs and escapes
every "&"); it is only the yardstick for "the fast sanitiser's output passes every check the
reference's passes" (tests/test_reference_oracle.py).
"""

from __future__ import annotations

import html
import re
import unicodedata

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

__all__ = ["reference_sanitize"]

_MAX_ROUNDS = 16
_ANSI = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?|[ -/]*[0-~]?)"
    r"|\x9b[0-?]*[ -/]*[@-~]|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
)
# The visible format characters SPEC-conforming text keeps (the same list as tests/invariants.py).
_VISIBLE_CF = frozenset(
    [*range(0x0600, 0x0606), 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2, 0x110BD, 0x110CD, *range(0x13430, 0x13440)]
)
_MARKUP_CHARS = re.compile(r"[<>&*_`\[\]\\|~#=!-]")


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.validateLink = lambda url: True  # type: ignore[method-assign]  # javascript:/data: links are links too
    md.normalizeLink = lambda url: url  # type: ignore[method-assign]  # show the destination as written
    md.normalizeLinkText = lambda url: url  # type: ignore[method-assign]
    return md


_MD = _markdown()


def reference_sanitize(text: str) -> str:
    for _ in range(_MAX_ROUNDS):
        nxt = _round(text)
        if nxt == text:
            break
        text = nxt
    else:
        text = _strict(text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _round(text: str) -> str:
    text = _drop_hidden(text)
    text = html.unescape(text)
    text = _drop_hidden(text)  # a decoded "&#27;" or "&#8238;" is a hidden character again
    text = _strip_html(text)
    text = _markdown_to_text(text)
    return _drop_hidden(text)


def _drop_hidden(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    text = _ANSI.sub("", text)
    kept = []
    for ch in text:
        cp = ord(ch)
        if ch in "\n\t":
            kept.append(ch)
        elif cp < 0x20 or 0x7F <= cp <= 0x9F or 0xD800 <= cp <= 0xDFFF or 0xE0000 <= cp <= 0xE007F:
            continue
        elif unicodedata.category(ch) == "Cf" and cp not in _VISIBLE_CF:
            continue
        else:
            kept.append(ch)
    return unicodedata.normalize("NFC", "".join(kept))


def _strip_html(text: str) -> str:
    # Every "&" here is literal (entities were decoded just before), so it goes to html5ever escaped;
    # nh3's output is HTML, whose text unescapes back to exactly the characters outside the tags.
    cleaned = nh3.clean(
        text.replace("&", "&amp;"),
        tags=set(),
        clean_content_tags={"script", "style"},
        attributes={},
        strip_comments=True,
        link_rel=None,
    )
    return html.unescape(cleaned)


def _markdown_to_text(text: str) -> str:
    tokens = _MD.parse(text)
    blocks = _blocks(tokens, 0, len(tokens))
    out = "\n\n".join(block for block in blocks if block)
    # Plain text needs no indentation and no trailing blanks; left in, they would make code blocks
    # and hard breaks when the next round parses the text again.
    return "\n".join(line.strip(" \t") for line in out.split("\n")).strip("\n")


def _closing(tokens: list[Token], i: int) -> int:
    depth = 0
    for j in range(i, len(tokens)):
        depth += tokens[j].nesting
        if depth == 0:
            return j
    return len(tokens) - 1


def _blocks(tokens: list[Token], start: int, stop: int) -> list[str]:
    blocks: list[str] = []
    i = start
    while i < stop:
        token = tokens[i]
        if token.nesting == 1:
            end = _closing(tokens, i)
            inner = _blocks(tokens, i + 1, end)
            if token.type in ("tr_open", "bullet_list_open", "ordered_list_open", "table_open"):
                sep = " " if token.type == "tr_open" else "\n"
                blocks.append(sep.join(b for b in inner if b))
            else:
                blocks.extend(inner)
            i = end + 1
            continue
        if token.type == "inline":
            blocks.append(_inline(token.children or []))
        elif token.type in ("fence", "code_block"):
            blocks.append(token.content.rstrip("\n"))
        # hr, html_block (html is off, so none) and anything else carry no text
        i += 1
    return blocks


def _inline(children: list[Token]) -> str:
    parts: list[str] = []
    links: list[tuple[str, int]] = []
    for token in children:
        if token.type == "image":
            continue  # images go whole: their URL is the exfiltration channel, their alt text a decoy
        if token.type in ("text", "text_special", "code_inline"):
            parts.append(token.content)
        elif token.type in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif token.type == "link_open":
            links.append((str(token.attrGet("href") or ""), len(parts)))
        elif token.type == "link_close" and links:
            href, at = links.pop()
            label = "".join(parts[at:])
            del parts[at:]
            parts.append(label if not href or href == label else f"{label} ({href})" if label else href)
        # em/strong/s markers and inline html simply vanish
    return "".join(parts)


def _strict(text: str) -> str:
    text = _MARKUP_CHARS.sub("", _drop_hidden(text))
    return "\n".join(line.strip() for line in text.split("\n")).strip()
