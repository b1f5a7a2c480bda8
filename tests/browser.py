"""A scripted browser for OAuth flows in tests: cookies, redirects step by step, HTML forms.

    async with Browser() as browser:
        page = await browser.open(authorization_url)   # GET, following redirects
        if page.forms:                                  # a consent page: press its "approve" button
            page = await browser.submit(page, "approve")
        assert page.stopped_at is not None              # the redirect back to the client ...
        code, state = page.query["code"], page.query["state"]  # ... never fetched, only read

`open(url)` and `submit(...)` follow redirects one hop at a time (at most 20; a relative Location
is resolved against the URL that sent it, and any origin is followed, as OAuth moves between
servers) until a page that is not a redirect, or a redirect whose target `stop_at(url)` accepts.
That target is not fetched: the returned `Page` is the redirect response itself, with
`stopped_at` set to the absolute target and `query` its parsed query. The default `stop_at`,
`loopback_or_custom_scheme`, accepts a custom scheme (`cursor://...`) and an http(s) URL on a
loopback host whose path ends in `/callback` (a native client's RFC 8252 redirect URI). Where a
server of the flow has such a callback of its own that must be fetched, pass
`stop_at=stops_at(the_clients_redirect_uri)` instead.

303, and 301/302 after a POST, continue with a GET (as browsers do); 307/308 repeat the method and
body. Cookies are kept in one jar across every request. `history` holds every response seen, in
order, redirects included, so tests can assert on a page's headers (say `Content-Security-Policy`
or `Cache-Control` of a consent page) after the flow has moved on.

`Page.forms` lists the page's forms, parsed with the standard library's `html.parser`: absolute
`action`, `method` (GET or POST), `fields` (hidden, text and other valued inputs, checked boxes,
textareas, selected options; one value a name) and submit `buttons` as (name, value) pairs.
`submit(page, button)` sends the form holding that button (matched by value, else by name) with
the button's own name=value, as a browser does for the button pressed; `overrides` replace or add
fields. With no button, the form at `form_index` (default 0) is sent without one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from types import TracebackType
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx2

MAX_REDIRECTS = 20
_WEB = ("http", "https")


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_or_custom_scheme(url: str) -> bool:
    """A native client's redirect URI: a custom scheme, or http(s)://<loopback>[:port]/.../callback."""
    parts = urlsplit(url)
    if parts.scheme not in _WEB:
        return True
    return _is_loopback(parts.hostname) and parts.path.endswith("/callback")


def stops_at(redirect_uri: str) -> Callable[[str], bool]:
    """Stop at exactly this redirect URI (scheme, host, port and path), whatever its query."""
    want = urlsplit(redirect_uri)

    def matches(url: str) -> bool:
        got = urlsplit(url)
        return (got.scheme, got.netloc, got.path) == (want.scheme, want.netloc, want.path)

    return matches


class BrowserError(Exception):
    """The flow went somewhere a browser would give up: too many redirects, a missing form or button."""


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)

    def button(self, wanted: str) -> tuple[str, str] | None:
        by_value = [b for b in self.buttons if b[1] == wanted]
        by_name = [b for b in self.buttons if b[0] == wanted]
        return (by_value or by_name or [None])[0]


@dataclass
class Page:
    url: str
    status: int
    headers: httpx2.Headers
    text: str
    forms: list[Form]
    method: str = "GET"
    stopped_at: str | None = None

    @property
    def query(self) -> dict[str, str]:
        """The query of the URL the browser stopped at (first value of each name); empty if it did not stop."""
        if self.stopped_at is None:
            return {}
        pairs = parse_qsl(urlsplit(self.stopped_at).query, keep_blank_values=True)
        return {k: v for k, v in reversed(pairs)}

    @property
    def location(self) -> str | None:
        """Where this response redirects to, absolute; None for a page that is not a redirect."""
        target = self.headers.get("location")
        return urljoin(self.url, target) if target is not None and 300 <= self.status < 400 else None


class _FormParser(HTMLParser):
    """Forms, their valued controls and submit buttons; enough of HTML for consent and login pages."""

    def __init__(self, base: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base = base
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._textarea: tuple[str, list[str]] | None = None
        self._select: str | None = None
        self._first_option: str | None = None
        self._selected = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            method = a.get("method", "get").upper()
            self._form = Form(urljoin(self.base, a.get("action") or self.base), "POST" if method == "POST" else "GET")
            self.forms.append(self._form)
        form = self._form
        if form is None or tag not in ("input", "button", "textarea", "select", "option"):
            return
        name, kind = a.get("name", ""), a.get("type", "submit" if tag == "button" else "text").lower()
        if tag == "button" or (tag == "input" and kind == "submit"):
            if kind == "submit" and "disabled" not in a:
                form.buttons.append((name, a.get("value", "")))
        elif tag == "input" and name and "disabled" not in a and kind not in ("reset", "button", "image", "file"):
            if kind not in ("checkbox", "radio") or "checked" in a:
                form.fields[name] = a.get("value", "on" if kind in ("checkbox", "radio") else "")
        elif tag == "textarea" and name:
            self._textarea = (name, [])
        elif tag == "select" and name:
            self._select, self._first_option, self._selected = name, None, False
        elif tag == "option" and self._select is not None:
            value = a.get("value", "")
            if self._first_option is None:
                self._first_option = value
            if "selected" in a and not self._selected:
                form.fields[self._select], self._selected = value, True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "textarea" and self._textarea is not None and self._form is not None:
            name, text = self._textarea
            self._form.fields[name] = "".join(text).removeprefix("\n")
            self._textarea = None
        elif tag == "select" and self._select is not None and self._form is not None:
            if not self._selected and self._first_option is not None:
                self._form.fields[self._select] = self._first_option
            self._select = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea[1].append(data)


def parse_forms(html: str, base: str) -> list[Form]:
    parser = _FormParser(base)
    parser.feed(html)
    parser.close()
    return parser.forms


class Browser:
    def __init__(self, *, stop_at: Callable[[str], bool] = loopback_or_custom_scheme, timeout: float = 30) -> None:
        self.stop_at = stop_at
        self.history: list[Page] = []
        self.http = httpx2.AsyncClient(follow_redirects=False, timeout=timeout)

    @property
    def cookies(self) -> httpx2.Cookies:
        return self.http.cookies

    async def open(self, url: str) -> Page:
        """GET `url`, then follow its redirects (see the module docstring)."""
        return await self._follow("GET", url, None)

    async def submit(
        self,
        page: Page,
        button: str | None = None,
        *,
        form_index: int | None = None,
        overrides: dict[str, str] | None = None,
    ) -> Page:
        """Submit a form of `page` as if `button` (a submit button's value or name) were pressed."""
        forms = page.forms if form_index is None else page.forms[form_index : form_index + 1]
        if button is None:
            form, pressed = (forms[0] if forms else None), None
        else:
            form = next((f for f in forms if f.button(button) is not None), None)
            pressed = form.button(button) if form is not None else None
        if form is None:
            raise BrowserError(f"no form{'' if button is None else f' with a button {button!r}'} on {page.url}")
        data = {**form.fields, **(overrides or {})}
        if pressed is not None and pressed[0]:
            data[pressed[0]] = pressed[1]
        if form.method == "POST":
            return await self._follow("POST", form.action, urlencode(data).encode())
        parts = urlsplit(form.action)
        return await self._follow("GET", urlunsplit(parts._replace(query=urlencode(data), fragment="")), None)

    async def _follow(self, method: str, url: str, body: bytes | None) -> Page:
        for _ in range(MAX_REDIRECTS + 1):
            page = await self._fetch(method, url, body)
            target = page.location
            if target is None:
                return page
            if self.stop_at(target) or urlsplit(target).scheme not in _WEB:
                page.stopped_at = target
                return page
            if page.status == 303 or (page.status in (301, 302) and method == "POST"):
                method, body = "GET", None
            url = target
        raise BrowserError(f"more than {MAX_REDIRECTS} redirects, the last to {url}")

    async def _fetch(self, method: str, url: str, body: bytes | None) -> Page:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        response = await self.http.request(
            method, urlunsplit(urlsplit(url)._replace(fragment="")), content=body, headers=headers
        )
        text = response.text
        is_html = "html" in response.headers.get("content-type", "")
        forms = parse_forms(text, str(response.url)) if is_html else []
        page = Page(str(response.url), response.status_code, response.headers, text, forms, method)
        self.history.append(page)
        return page

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()
