"""The parser-free markdown flattener, `_inert`: regular expressions instead of markdown-it-py.

markdown-it-py is pure Python, and one hostile result could keep it busy for seconds, so text longer
than `_MD_TEXT_LIMIT`, or past its result's ParserBudget, is flattened here instead.  What the parser
leaves goes through here too, so both ways reach the same fixpoints and a budget may send a text
either way.  Only what could still form markdown is removed; ordinary text ("snake_case", "3 * 4",
"[INFO]", a URL) stays as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Paragraph breaks: the parser-based flattener splits text at them, and `_strict` squeezes them too.
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")

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
