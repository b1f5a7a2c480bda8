"""The credentials mcp-guard presents upstream never come back down (SPEC §8, §13).

A team's upstream credential (a `headers:` value, a secret in the upstream URL, a command
upstream's secret environment, an OAuth client secret or grant token) is mcp-guard's, not the
client's and not the model's. An upstream that reflects it (a debug tool that echoes request
headers, a verbose error quoting the request) would otherwise hand it to whoever is on the other
side. Every string the output shield lets through is searched for these values, in the forms a
log or JSON could hold them (raw, URL-encoded, JSON- and repr-escaped), and each is replaced by
`WITHHELD`; a name (of a tool, prompt or resource) holding one is not a plain name.

Only values of `MIN_CHARS` or more are registered: a credential shorter than that is no secret
against guessing, and withholding every "48" or "true" from results would garble them.
"""

from __future__ import annotations

from proxy.redact import SecretRegistry, _replace_spans

WITHHELD = "[mcp-guard withheld a credential]"
MIN_CHARS = 8
_PASSES = 3


class Credentials:
    """The registered values, and the one operation on output: withhold them."""

    def __init__(self) -> None:
        self._registry = SecretRegistry()
        self.version = 0  # changes whenever one is registered: caches of cleaned text are stale then

    def register(self, value: str | None, *, lasting: bool = True) -> None:
        """A value mcp-guard sends upstream as a credential. `lasting=False` for tokens that rotate
        (OAuth grants): those are kept in a bounded most-recently-used set instead."""
        if value is None or len(value.strip()) < MIN_CHARS:
            return
        known = self._registry.knows(value)
        self._registry.add(value) if lasting else self._registry.add_client(value)  # a token kept recent
        if not known:
            self.version += 1  # only news makes the shield forget what it cleaned (a grant is read per call)

    def holds(self, text: str) -> bool:
        return self.version > 0 and bool(self._registry.matcher().spans(text))

    def withhold(self, text: str) -> str:
        """`text` with every registered credential replaced by `WITHHELD`; only `WITHHELD` if one
        survives (a replacement completing another occurrence across its own edge)."""
        if self.version == 0:
            return text
        matcher = self._registry.matcher()
        for _ in range(_PASSES):
            spans = matcher.spans(text)
            if not spans:
                return text
            text = _replace_spans(text, spans, WITHHELD)
        return text if not matcher.spans(text) else WITHHELD


CREDENTIALS = Credentials()
register = CREDENTIALS.register
holds = CREDENTIALS.holds
withhold = CREDENTIALS.withhold


def version() -> int:
    return CREDENTIALS.version
