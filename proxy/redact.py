"""Secrets never reach a log line: not ours, not a library's, at any level.

With `-v` the HTTP client (httpx2, httpcore2) and the MCP SDK log every request, and they log
the upstream URL as configured, query string included. A policy that puts a key in the URL
(`url: https://host/mcp?api_key=${KEY}`) or a token in a header would otherwise write it to
stderr on every request. Three things are removed from every log record before any handler
formats it:

1. Registered secrets: every value `${VAR}` interpolation put into a loaded policy
   (`register_secret`, called by proxy.policy), and every client Authorization value the proxy
   forwards upstream in passthrough mode (`register_client_secret`, a bounded LRU because each
   client brings its own). Their URL-encoded, JSON- and repr-escaped forms go too, and URL
   components are percent-decoded before they are compared, so any encoding is caught.
   A value of `MIN_ANYWHERE` (6) or more characters is removed wherever it occurs, even inside
   a longer word. A shorter value is removed wherever it stands alone: not touching a letter or
   digit on either side, which is how it appears as a query value, a header value, a path
   segment or userinfo. Removing a 3-character value from inside every word would make the log
   unreadable and still could not hide it (the marker itself contains letters), and a value
   that short is no secret against guessing anyway.
2. URL userinfo (`https://user:pass@host`) and the values of query or fragment parameters whose
   names suggest a secret (`api_key`, `token`, `client_secret`, `sig`, `code`, ...), in any URL,
   and `name=value` / `name='value'` / `'name': 'value'` pairs with such names anywhere.
3. Credential headers (`Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`,
   `X-Api-Key`, ...) as `Name: value` lines or as Python/JSON pairs such as
   `(b'authorization', b'Bearer abc')`, and every `Bearer xxx` / `Basic xxx` token.

`proxy.logs` applies this to every log record (and escapes what would act on a terminal).
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote, unquote_plus

MARKER = "[REDACTED]"
WITHHELD = "[REDACTED: log line withheld, redaction failed]"
MIN_ANYWHERE = 6
MAX_CLIENT_SECRETS = 4096
# Up to this many long forms a line is searched form by form (fast C searches); beyond it, by an
# index of their first MIN_ANYWHERE characters, so thousands of passthrough tokens stay cheap.
_SCAN_LIMIT = 64
# A replacement can complete a secret across the marker's edge ("...TED]" + rest); passes repeat
# until none is left, and a line that still holds one after this many is withheld.
_PASSES = 3

# Words that make a parameter or key name a secret's name, as whole parts of the name
# (api_key -> api, key; accessToken -> access, Token).
_SECRET_WORDS = frozenset(
    {
        "key",
        "apikey",
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "sig",
        "signature",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "cookie",
        "jwt",
    }
)
_SECRET_SUFFIXES = ("token", "secret", "password", "passwd", "apikey")
# "code" alone would hit status_code and error codes; only OAuth's code parameters are secrets.
_SECRET_EXACT = frozenset({"code", "auth_code", "authorization_code", "device_code", "user_code", "otp"})
_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-access-token",
        "private-token",
    }
)
# Every secret name, header name and auth scheme above contains one of these (lower case).
_HINTS = tuple("key token secret pass pwd sig auth cred cookie jwt code otp bearer basic".split())
_NAME_PARTS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>\\`]+")
_URL_PARTS = re.compile(
    r"(?P<scheme>[^:]+://)(?P<authority>[^/?#]*)(?P<path>[^?#]*)(?:\?(?P<query>[^#]*))?(?:#(?P<fragment>.*))?",
    re.S,
)
_NAME = r"[A-Za-z_][\w.\-]{0,63}"
# 'name': 'value', "name": "value", (b'name', b'value'), and the same with \" inside a JSON string.
_QUOTED_PAIR = re.compile(
    rf"(?P<q1>\\?['\"])(?P<name>{_NAME})(?P=q1)\s*[:,]\s*b?(?P<q2>\\?['\"])(?P<value>(?:\\.|(?!(?P=q2)).)*?)(?P=q2)"
)
_KW_QUOTED = re.compile(rf"(?<![\w.\-])(?P<name>{_NAME})=b?(?P<q>['\"])(?P<value>(?:\\.|(?!(?P=q)).)*)(?P=q)")
_KW = re.compile(rf"(?<![\w.\-])(?P<name>{_NAME})=(?!b?['\"])(?P<value>[^&\s'\"<>#\\]*)")
_HEADER_LINE = re.compile(rf"(?<![\w\-])(?P<name>{_NAME})[ \t]*:[ \t]*(?P<value>[^\r\n]+)")
_SCHEME_TOKEN = re.compile(r"\b(?P<scheme>bearer|basic)(?P<sp>\s+)(?P<value>[^\s'\"\\]+)", re.I)


def secret_name(name: str) -> bool:
    """Whether a parameter, key or header name says its value is a credential."""
    low = name.lower()
    if low in _HEADERS or low in _SECRET_EXACT or low.endswith(_SECRET_SUFFIXES):
        return True
    return any(part.lower() in _SECRET_WORDS for part in _NAME_PARTS.findall(name))


def _header_name(name: str) -> bool:
    # An unquoted "Name: rest of line" is taken as a header only for names that look like one:
    # a bare word such as "TokenError: ..." in an exception message stays readable.
    low = name.lower()
    return low in _HEADERS or (("-" in low or "_" in low) and secret_name(low))


def _forms(secret: str) -> set[str]:
    """The ways a value can be written into a log line: raw, URL-encoded, JSON- and repr-escaped."""
    makers: list[Callable[[str], str]] = [
        str,
        lambda s: quote(s, safe=""),
        quote_plus,
        quote,
        lambda s: quote(s, safe="!$&'()*+,;=:@/?~"),
        lambda s: json.dumps(s)[1:-1],
        lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
        lambda s: repr(s)[1:-1],
        lambda s: repr(s)[1:-1].replace("'", "\\'"),
        lambda s: repr(s)[1:-1].replace('"', '\\"'),
        lambda s: repr(s.encode("utf-8", "backslashreplace"))[2:-1],
    ]
    forms: set[str] = set()
    for make in makers:
        try:
            forms.add(make(secret))
        except (UnicodeError, ValueError):
            continue
    return {f for f in forms if f.strip()}


@dataclass(frozen=True)
class _Matcher:
    """An immutable snapshot of the registered forms, shared by logging threads without a lock."""

    long: tuple[str, ...]
    index: dict[str, tuple[str, ...]] | None
    short: re.Pattern[str] | None

    @classmethod
    def build(cls, secrets: Iterable[str]) -> _Matcher:
        long: set[str] = set()
        short: set[str] = set()
        for secret in secrets:
            (long if len(secret) >= MIN_ANYWHERE else short).update(_forms(secret))
        index: dict[str, tuple[str, ...]] | None = None
        if len(long) > _SCAN_LIMIT:
            buckets: dict[str, list[str]] = {}
            for form in long:
                buckets.setdefault(form[:MIN_ANYWHERE], []).append(form)
            index = {k: tuple(v) for k, v in buckets.items()}
        pattern = None
        if short:
            alternatives = "|".join(re.escape(f) for f in sorted(short, key=len, reverse=True))
            # A lookahead per start position, so overlapping occurrences are all found.
            pattern = re.compile(rf"(?<![A-Za-z0-9])(?=((?:{alternatives}))(?![A-Za-z0-9]))")
        return cls(tuple(sorted(long, key=len, reverse=True)), index, pattern)

    def spans(self, text: str) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        if self.index is None:
            candidates: Iterable[str] = [f for f in self.long if f in text]
        else:
            index = self.index
            hits: set[str] = set()
            for i in range(len(text) - MIN_ANYWHERE + 1):
                bucket = index.get(text[i : i + MIN_ANYWHERE])
                if bucket is not None:
                    hits.update(f for f in bucket if text.startswith(f, i))
            candidates = hits
        for form in candidates:
            at = text.find(form)
            while at >= 0:
                found.append((at, at + len(form)))
                at = text.find(form, at + 1)
        if self.short is not None:
            found.extend(m.span(1) for m in self.short.finditer(text))
        return found

    def hit(self, component: str) -> bool:
        """Whether a URL component holds a secret once percent-decoded, however it was encoded."""
        return bool(self.spans(component) or self.spans(unquote(component)) or self.spans(unquote_plus(component)))


_EMPTY = _Matcher((), None, None)


def _replace_spans(text: str, spans: list[tuple[int, int]], marker: str = MARKER) -> str:
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    pos = 0
    start, end = spans[0]
    for s, e in spans[1:]:
        if s <= end:  # overlapping or touching forms become one marker
            end = max(end, e)
            continue
        out += [text[pos:start], marker]
        pos = end
        start, end = s, e
    out += [text[pos:start], marker, text[end:]]
    return "".join(out)


class SecretRegistry:
    """The values to remove from log lines: policy secrets for the process's life, client ones in an LRU."""

    def __init__(self, max_clients: int = MAX_CLIENT_SECRETS) -> None:
        self._lock = threading.Lock()
        self._policy: dict[str, None] = {}
        self._clients: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._max_clients = max_clients
        self._matcher: _Matcher | None = _EMPTY

    def add(self, value: str) -> None:
        """A value from `${VAR}` interpolation; kept for the life of the process."""
        if not value.strip():
            return  # whitespace cannot be hidden and hides nothing
        with self._lock:
            if value not in self._policy:
                self._policy[value] = None
                self._matcher = None

    def add_client(self, authorization: str) -> None:
        """An Authorization value a client sent that the proxy forwards; the least recently seen go first.

        `UpstreamPool` calls this on every forwarded request, so a client that is still active is
        never evicted; its upstream connection is dropped long before (at 256 connections).
        """
        if not authorization.strip():
            return
        with self._lock:
            if authorization in self._clients:
                self._clients.move_to_end(authorization)
                return
            _scheme, _, credential = authorization.strip().partition(" ")
            values = (authorization, credential.strip()) if credential.strip() else (authorization,)
            self._clients[authorization] = values
            while len(self._clients) > self._max_clients:
                self._clients.popitem(last=False)
            self._matcher = None

    def knows(self, value: str) -> bool:
        with self._lock:
            return value in self._policy or value in self._clients

    def matcher(self) -> _Matcher:
        matcher = self._matcher
        if matcher is not None:
            return matcher
        with self._lock:
            if self._matcher is None:
                values = [*self._policy, *(v for vs in self._clients.values() for v in vs if v.strip())]
                self._matcher = _Matcher.build(values)
            return self._matcher

    def redact(self, text: str) -> str:
        """`text` with every secret replaced by MARKER; WITHHELD if that cannot be done."""
        try:
            matcher = self.matcher()
            for _ in range(_PASSES):
                text = _structural(_replace_spans(text, matcher.spans(text)), matcher)
                if not matcher.spans(text):
                    return text
        except Exception:  # a bug here must cost the line, never leak it
            return WITHHELD
        return WITHHELD


REGISTRY = SecretRegistry()


def register_secret(value: str) -> None:
    REGISTRY.add(value)


def register_client_secret(authorization: str) -> None:
    REGISTRY.add_client(authorization)


def redact(text: str, registry: SecretRegistry | None = None) -> str:
    return (registry or REGISTRY).redact(text)


# --------------------------------------------------------------------------- structural rules


def _clean_url(url: str, matcher: _Matcher) -> str:
    m = _URL_PARTS.fullmatch(url)
    if m is None:
        return MARKER if matcher.hit(url) else url
    authority = m["authority"]
    if "@" in authority:
        authority = MARKER + "@" + authority.rsplit("@", 1)[1]
    if matcher.hit(authority):
        authority = MARKER
    path = "/".join(MARKER if seg and matcher.hit(seg) else seg for seg in m["path"].split("/"))
    out = m["scheme"] + authority + path
    if m["query"] is not None:
        out += "?" + _clean_params(m["query"], matcher)
    if m["fragment"] is not None:
        out += "#" + _clean_params(m["fragment"], matcher)
    # Belt and braces: a secret split across components is still there once the whole is decoded.
    return MARKER if matcher.hit(out) else out


def _clean_params(params: str, matcher: _Matcher) -> str:
    cleaned: list[str] = []
    for pair in params.split("&"):
        name, sep, value = pair.partition("=")
        if not sep:
            cleaned.append(MARKER if matcher.hit(name) else name)
        elif secret_name(unquote_plus(name)) or matcher.hit(value):
            cleaned.append(name + "=" + MARKER)
        else:
            cleaned.append(pair)
    return "&".join(cleaned)


def _value_if(test: Callable[[str], bool]) -> Callable[[re.Match[str]], str]:
    def replace(m: re.Match[str]) -> str:
        if not test(m["name"]):
            return m.group()
        start, end = m.span("value")
        if start == end:
            return m.group()
        base = m.start()
        return m.group()[: start - base] + MARKER + m.group()[end - base :]

    return replace


_SECRET_VALUE = _value_if(secret_name)
_HEADER_VALUE = _value_if(_header_name)


def _structural(text: str, matcher: _Matcher) -> str:
    if "://" in text:
        text = _URL.sub(lambda m: _clean_url(m.group(), matcher), text)
    # The name rules cost milliseconds on a 100 kB SSE payload; a line naming no credential skips them.
    low = text.lower()
    if not any(word in low for word in _HINTS):
        return text
    if "'" in text or '"' in text:
        text = _QUOTED_PAIR.sub(_SECRET_VALUE, text)
    if "=" in text:
        text = _KW_QUOTED.sub(_SECRET_VALUE, text)
        text = _KW.sub(_SECRET_VALUE, text)
    if ":" in text:
        text = _HEADER_LINE.sub(_HEADER_VALUE, text)
    if "bearer" in low or "basic" in low:
        text = _SCHEME_TOKEN.sub(lambda m: m["scheme"] + m["sp"] + MARKER, text)
    return text
