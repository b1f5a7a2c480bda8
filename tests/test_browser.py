"""The scripted browser (tests/browser.py) against a tiny real site on loopback.

Two Starlette apps, each on its own ephemeral port in this process, play a login site: a
consent page behind a relative redirect that sets a session cookie, a form with hidden fields and
approve/deny buttons, and redirects back to a client's loopback callback or custom scheme,
which the browser must report without fetching.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from proxy.netutil import base_url, bind, serve_asgi
from tests.browser import Browser, BrowserError, Form, Page, loopback_or_custom_scheme, parse_forms, stops_at

pytestmark = pytest.mark.anyio

CONSENT = """<!doctype html><html><body>
<form id="search" action="/search" method="get"><input name="q" value="sms"><button>Search</button></form>
<form action="decide?step=1" method="POST">
  <input type="hidden" name="csrf" value="tok&amp;en">
  <input type="hidden" name="state" value="{state}">
  <input type="text" name="note" value="hi">
  <input type="checkbox" name="remember" checked>
  <input type="checkbox" name="spam">
  <textarea name="why">
because</textarea>
  <select name="lang"><option value="pl">Polski</option><option value="en" selected>English</option></select>
  <button type="button" name="help">?</button>
  <button type="submit" name="decision" value="approve">Approve</button>
  <input type="submit" name="decision" value="deny">
</form></body></html>"""
SECURE = {"Content-Security-Policy": "frame-ancestors 'none'", "Cache-Control": "no-store"}


def site(seen: list[str], other: list[str]) -> Starlette:
    """`other[0]` is the second site's base URL, known once both sockets are bound."""

    async def login(request: Request) -> Response:
        seen.append(f"login {request.url.query}")
        return RedirectResponse(f"consent?state={request.query_params['state']}", status_code=302)

    async def consent(request: Request) -> Response:
        seen.append("consent")
        response = HTMLResponse(CONSENT.format(state=request.query_params["state"]), headers=SECURE)
        response.set_cookie("sid", "s3cret", httponly=True, samesite="lax")
        return response

    async def decide(request: Request) -> Response:
        form = dict(await request.form())
        seen.append(f"decide {request.cookies.get('sid')} {request.url.query} {sorted(form.items())}")
        if request.cookies.get("sid") != "s3cret" or form.get("csrf") != "tok&en":
            return Response("forbidden", status_code=403)
        state = form["state"]
        if form.get("decision") == "approve":
            # A port nothing listens on: fetching it would fail the test.
            return RedirectResponse(f"http://127.0.0.1:9/callback?code=c0de&state={state}", status_code=303)
        return RedirectResponse(f"cursor://anysphere.cursor-mcp/oauth/callback?error=access_denied&state={state}")

    async def search(request: Request) -> Response:
        return JSONResponse(dict(request.query_params))

    async def hop(request: Request) -> Response:
        n = int(request.path_params["n"])
        seen.append(f"hop {n}")
        if n == 0:
            return RedirectResponse(f"{other[0]}/landing", status_code=307)  # to the other origin
        return RedirectResponse(f"../hop/{n - 1}" if n % 2 else f"/hop/{n - 1}", status_code=302)

    async def landing(request: Request) -> Response:
        return JSONResponse({"method": request.method, "body": (await request.body()).decode()})

    async def loop(request: Request) -> Response:
        return RedirectResponse("/loop")

    routes = [
        Route("/login", login),
        Route("/consent", consent),
        Route("/decide", decide, methods=["POST"]),
        Route("/search", search),
        Route("/hop/{n}", hop, methods=["GET", "POST"]),
        Route("/landing", landing, methods=["GET", "POST"]),
        Route("/loop", loop),
    ]
    return Starlette(routes=routes)


@asynccontextmanager
async def sites() -> AsyncIterator[tuple[str, str, list[str]]]:
    """Two origins of the same site on loopback, served in this event loop until the block ends."""
    seen: list[str] = []
    other: list[str] = []
    socks: list[socket.socket] = [bind("127.0.0.1", 0), bind("127.0.0.1", 0)]
    other.append(base_url(socks[1]))
    async with anyio.create_task_group() as tg:
        for sock in socks:
            # The sockets listen already: requests queue until uvicorn accepts, no wait needed.
            tg.start_soon(serve_asgi, site(seen, other), sock)
        try:
            yield base_url(socks[0]), other[0], seen
        finally:
            tg.cancel_scope.cancel()
    for sock in socks:
        sock.close()


async def test_consent_flow_keeps_the_cookie_and_stops_at_the_loopback_callback() -> None:
    async with sites() as (base, _, seen), Browser() as browser:
        page = await browser.open(f"{base}/login?state=s1")
        assert page.url == f"{base}/consent?state=s1" and page.status == 200
        assert page.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert page.headers["cache-control"] == "no-store"
        assert browser.cookies.get("sid") == "s3cret"
        done = await browser.submit(page, "approve")
    assert done.stopped_at == "http://127.0.0.1:9/callback?code=c0de&state=s1"
    assert done.query == {"code": "c0de", "state": "s1"}
    assert done.status == 303 and done.url == f"{base}/decide?step=1" and done.method == "POST"
    assert [p.status for p in browser.history] == [302, 200, 303]
    fields = [("csrf", "tok&en"), ("decision", "approve"), ("lang", "en"), ("note", "hi"), ("remember", "on")]
    fields += [("state", "s1"), ("why", "because")]
    assert seen == ["login state=s1", "consent", f"decide s3cret step=1 {sorted(fields)}"]


async def test_deny_stops_at_a_custom_scheme_and_overrides_replace_fields() -> None:
    async with sites() as (base, _, seen), Browser() as browser:
        page = await browser.open(f"{base}/login?state=s2")
        done = await browser.submit(page, "deny", overrides={"note": "no thanks"})
    assert done.stopped_at is not None and done.stopped_at.startswith("cursor://anysphere.cursor-mcp/oauth/callback?")
    assert done.query == {"error": "access_denied", "state": "s2"}
    assert "('decision', 'deny')" in seen[-1] and "('note', 'no thanks')" in seen[-1]


async def test_relative_and_cross_origin_redirects_are_followed_and_307_keeps_the_post() -> None:
    async with sites() as (base, other, seen), Browser() as browser:
        page = await browser.open(f"{base}/hop/3")
        assert page.url == f"{other}/landing" and page.status == 200
        assert page.text == '{"method":"GET","body":""}'
        assert [p.url for p in browser.history[:4]] == [f"{base}/hop/{n}" for n in (3, 2, 1, 0)]
        with pytest.raises(BrowserError, match="more than 20 redirects"):
            await browser.open(f"{base}/loop")
        assert len(browser.history) == 5 + 21
        # A form posting into the chain's last hop: its 307 repeats the POST, body and all.
        poster = Page(base, 200, httpx2.Headers(), "", [Form(f"{base}/hop/0", "POST", {"a": "1"})])
        posted = await browser.submit(poster)
        assert posted.url == f"{other}/landing" and posted.text == '{"method":"POST","body":"a=1"}'
    assert seen == ["hop 3", "hop 2", "hop 1", "hop 0", "hop 0"]


async def test_a_get_form_is_sent_as_its_query_and_form_index_picks_the_form() -> None:
    async with sites() as (base, _, _), Browser() as browser:
        page = await browser.open(f"{base}/consent?state=s3")
        found = await browser.submit(page, form_index=0, overrides={"q": "contacts"})
        assert found.url == f"{base}/search?q=contacts" and found.text == '{"q":"contacts"}'
        with pytest.raises(BrowserError, match="no form with a button 'approve'"):
            await browser.submit(page, "approve", form_index=0)
        with pytest.raises(BrowserError, match="no form with a button 'help'"):
            await browser.submit(page, "help")  # type=button: not a submit button


def test_forms_are_parsed_with_hidden_fields_and_both_buttons() -> None:
    search, consent = parse_forms(CONSENT.format(state="x&y"), "http://127.0.0.1:1234/consent?state=1")
    assert (search.action, search.method, search.fields) == ("http://127.0.0.1:1234/search", "GET", {"q": "sms"})
    assert search.buttons == [("", "")]
    assert consent.action == "http://127.0.0.1:1234/decide?step=1" and consent.method == "POST"
    expected: dict[str, Any] = {"csrf": "tok&en", "state": "x&y", "note": "hi", "remember": "on"}
    expected |= {"why": "because", "lang": "en"}
    assert consent.fields == expected
    assert consent.buttons == [("decision", "approve"), ("decision", "deny")]
    assert consent.button("deny") == ("decision", "deny") and consent.button("decision") == ("decision", "approve")


def test_the_default_stop_is_a_loopback_callback_or_a_custom_scheme() -> None:
    assert loopback_or_custom_scheme("http://127.0.0.1:8765/callback?code=1")
    assert loopback_or_custom_scheme("http://localhost:1/oauth/callback")
    assert loopback_or_custom_scheme("http://[::1]:1/callback")
    assert loopback_or_custom_scheme("cursor://anysphere.cursor-mcp/oauth/callback?code=1")
    assert not loopback_or_custom_scheme("http://127.0.0.1:8765/authorize?client_id=x")
    assert not loopback_or_custom_scheme("https://auth.example.com/callback")
    exact = stops_at("http://127.0.0.1:8765/callback")
    assert exact("http://127.0.0.1:8765/callback?code=1") and not exact("http://127.0.0.1:8766/callback?code=1")
    assert not exact("http://127.0.0.1:8765/callbacks")
