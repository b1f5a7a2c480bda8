"""Markdown flattening with markdown-it-py: images gone, links as "text (url)", all markers removed.

A renderer downstream would turn markdown in untrusted text into live links, images (whose URLs
carry data out) and formatting, and E2 allows none of it in what a renderer sees.  The parser reads
the text the way such a renderer does, and the tokens are rendered back as plain text, block by
block (blocks split at blank lines), remembered across passes in the caller's `_Memo`.  Long texts,
and texts past their result's `ParserBudget`, go to the parser-free flattener in `inert.py` instead.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from markdown_it import MarkdownIt
from markdown_it.token import Token

from proxy.sanitize.inert import _BLANK_LINES, _inert

if TYPE_CHECKING:
    from proxy.sanitize import ParserBudget, _Memo

# markdown-it-py is pure Python: 2-20 us per character that opens a link, image, emphasis or code
# span, and about 1.5 us per character of any text with many lines.  Text longer than this is
# flattened by `_inert` (regular expressions, no parser) instead, so one hostile result cannot
# stall the proxy for seconds: the parser never sees more than 16 KB at once, which takes 25-30 ms
# at the densest; a ParserBudget bounds what it reads across all the texts of one result.  The
# parser's output is flattened by `_inert` too, so both ways reach the same fixpoints: sanitising
# the output again gives it back whichever way each pass went (the property tests check both ways),
# and neither leaves a markdown construct.
_MD_TEXT_LIMIT = 16_384

# Characters that can make inline markdown; the quiet check and `_strict` react to them too.
_MD_CHARS = r"*_`\[\]\\|~"
_MD_LINE = r"[ \t]*(?:[#>=+\-]|\d{1,9}[.)])| {4}| {0,3}\t"
_MD_INLINE = re.compile(f"[{_MD_CHARS}<]")
_MD_LINE_START = re.compile(f"(?:{_MD_LINE})")
_MD_LINE_ANY = re.compile(f"\n(?:{_MD_LINE})")
_LINE_EDGE_SPACE = re.compile(r"^[ \t]+|[ \t]+$", re.MULTILINE)


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
