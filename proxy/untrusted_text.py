"""Untrusted text, wherever it sits: the string half of the output shield (SPEC §5).

`TextShield` cleans one string (`clean`), one result's strings with one parser budget and JSON text
inside a string read as JSON (`result_clean`), any JSON value and `_meta`, and wraps model-visible
text in the envelope. It remembers what it has cleaned (short strings, verdicts on whole slices) so
the strings a result repeats cost one check. `untrusted.OutputShield` builds on it and knows where
text sits in each MCP shape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import partial
from typing import Any

from proxy import credentials
from proxy.envelope import envelope
from proxy.json_clean import Verbatim, clean_json_text, dump_json, escape_json_text, sanitize_json
from proxy.pinning import RESERVED_META
from proxy.policy import OutputPolicy
from proxy.sanitize import ParserBudget, all_unchanged, sanitize_text

Clean = Callable[[str], str]
JSON = dict[str, Any]

JSON_START = re.compile(r"\s*[\[{\"]")
_JSON_LINE = re.compile(r'(?m)^\s*[\[{"]')
# JSON text inside a string inside JSON text ... : past this depth it is removed, not trusted.
_MAX_JSON_DEPTH = 8
_NESTED_TOO_DEEP = "[mcp-guard removed JSON text nested in strings more than 8 levels deep]"
_SHORT = 64
_SHORT_KEPT = 8192
_VERDICT_CHARS = 4_000_000  # the most text `unchanged` remembers verdicts on


class TextShield:
    def __init__(self, output: OutputPolicy) -> None:
        self.cfg = output
        self._short: dict[str, str] = {}  # short strings already cleaned: the same function, any result
        self._verdicts: dict[tuple[str, ...], bool] = {}  # see `unchanged`
        self._verdict_chars = 0
        self._credentials = credentials.version()

    # -- strings ---------------------------------------------------------------------------------

    def clean(self, text: str, budget: ParserBudget | None = None) -> str:
        cleaned = sanitize_text(
            credentials.withhold(text),  # before max_chars could cut one in half
            strip_html=self.cfg.strip_html,
            strip_markdown=self.cfg.strip_markdown,
            max_chars=self.cfg.max_chars,
            parser_budget=budget,
        )
        # After sanitising: removing an invisible character can join a credential's two halves.
        return credentials.withhold(cleaned)

    def _fresh(self) -> None:
        """Forget remembered verdicts once a credential was registered since: they may let it through."""
        if self._credentials != credentials.version():
            self._credentials = credentials.version()
            self._short.clear()
            self._verdicts.clear()
            self._verdict_chars = 0

    def result_clean(self) -> Clean:
        """`clean` for the strings of one result: one markdown parser budget, JSON text inside a
        string parsed and cleaned as JSON, each string cleaned once."""
        self._fresh()
        plain = partial(self.clean, budget=ParserBudget())
        seen: dict[str, str] = {}
        short = self._short

        def at(depth: int) -> Clean:
            def clean(text: str) -> str:
                out = seen.get(text) or short.get(text)
                if out is None:
                    out = seen[text] = self._json_or_text(text, plain, depth, at)
                    if len(text) <= _SHORT and len(short) < _SHORT_KEPT:
                        short[text] = out  # keys and statuses repeat across every result of a tool
                return out

            return clean

        return at(0)

    def _json_or_text(self, text: str, plain: Clean, depth: int, at: Callable[[int], Clean]) -> str:
        if not JSON_START.match(text):
            out = plain(text)
            # Cleaning can bare JSON text (a control before "{" dropped): a reader decodes it then.
            if out != text and JSON_START.match(out) and depth < _MAX_JSON_DEPTH:
                return self._json_or_text(out, plain, depth + 1, at)
            return out
        if text[:1].isspace() and (stripped := text.strip()) != text:
            text = stripped  # blanks a lenient reader skips but json.loads does not
        # A renderer decodes JSON text, so "\u003cscript\u003e" inside it is markup like "<script>".
        if depth >= _MAX_JSON_DEPTH:
            return _NESTED_TOO_DEEP if json_value(text) is not None else plain(text)
        inner = at(depth + 1)
        out = clean_json_text(text, inner, self.unchanged)
        if out is not None:
            return out
        value = json_value(text)
        if isinstance(value, str):  # a JSON string literal: its decoded text is what a reader sees
            cleaned = inner(value)
            return dump_json(cleaned) if cleaned != value else escape_json_text(text)
        return plain(text)

    def unchanged(self, texts: list[str]) -> bool:
        """True if cleaning would leave every one of `texts` as it is (asked once per many values).

        Recent verdicts are remembered by their texts: a result's text block usually repeats its
        structuredContent, whose strings are then asked about again, slice by slice, in the same order.
        """
        self._fresh()
        key = tuple(texts)
        verdict = self._verdicts.get(key)
        if verdict is not None:
            return verdict
        verdict = all_unchanged(texts, self.cfg.max_chars, reject=_JSON_LINE) and not any(map(credentials.holds, texts))
        size = sum(map(len, key))
        if self._verdict_chars + size > _VERDICT_CHARS:
            self._verdicts.clear()
            self._verdict_chars = 0
        if size <= _VERDICT_CHARS:
            self._verdicts[key] = verdict
            self._verdict_chars += size
        return verdict

    def wrap(self, body: str, source: str) -> str:
        if not self.cfg.envelope:
            return body
        return envelope(body, source)

    def text(self, text: str, source: str, clean: Clean | None = None, verbatim: Verbatim | None = None) -> str:
        """One model-visible text, enveloped: JSON keeps its shape with every string cleaned."""
        clean = clean or self.result_clean()
        cleaned = clean_json_text(text, clean, self.unchanged, verbatim) if JSON_START.match(text) else None
        return self.wrap(clean(text) if cleaned is None else cleaned, source)

    def json(self, value: Any, clean: Clean | None = None) -> Any:
        """Any JSON value (a `_meta`, a log's data): every string and key cleaned."""
        return sanitize_json(value, clean or self.result_clean(), self.unchanged)

    def meta(self, value: Any, clean: Clean | None = None) -> JSON | None:
        """An upstream's `_meta`, cleaned; the protocol's own keys (`io.modelcontextprotocol/...`, such as
        the serverInfo stamp) describe the upstream's hop, not the client's, and are dropped."""
        if not isinstance(value, dict):
            return None
        kept = {k: v for k, v in value.items() if not (isinstance(k, str) and k.startswith(RESERVED_META))}
        return self.json(kept, clean) if kept else None


def json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None
