"""The browser half of an `auth.mode: oauth` login: mcp-guard's consent page, then the login at the
upstream's authorization server, then the code back to the client.

Every login passes the consent page, even when the upstream would approve at once (the user
consented there before): otherwise any client that registers itself could have a victim's browser
carry a code to the client's redirect URI (the confused deputy). The page binds the login to the
browser that opened it (a cookie), carries a CSRF token, cannot be framed and is never cached. The
upstream `state` is random, single-use, short-lived and bound to the same browser; `iss` is checked
when the upstream's authorization server sends or promises it.
"""

from __future__ import annotations

import hmac
import html
import logging
import secrets
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit

from mcp.client.auth.exceptions import OAuthFlowError
from mcp.client.auth.utils import validate_authorization_response_iss
from mcp.server.auth.provider import construct_redirect_uri
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from proxy import federation
from proxy.catalog import Catalog
from proxy.expiring import Expiring
from proxy.oauth_server import LOOPBACK_HOSTS, GuardAuthProvider, Pending, digest
from proxy.policy import LoadedPolicy

logger = logging.getLogger(__name__)

COOKIE = "mcpg_login"
MAX_SHOWN = 80  # characters of a client's self-chosen name shown on the consent page
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@dataclass
class _Upstream:
    pending: Pending
    browser: str
    verifier: str
    up: federation.Upstream
    asked: list[str]  # the scopes asked of the upstream: a login is never granted more


class Consent:
    """The consent page and the upstream callback of one team's logins."""

    def __init__(self, loaded: LoadedPolicy, provider: GuardAuthProvider) -> None:
        self.loaded = loaded
        self.provider = provider
        self.server = loaded.policy.federated_upstream or ""
        self.callback = f"{provider.issuer}/oauth/callback"
        self.secure = provider.issuer.startswith("https://")
        # Logins sent on to the upstream, by their `state`: single use, bound to the browser.
        self._states: Expiring[_Upstream] = Expiring(provider.login_seconds, 1000)
        self._gated = _gated_tools(loaded)

    def routes(self) -> list[Route]:
        return [
            Route("/oauth/consent", self.page, methods=["GET"]),
            Route("/oauth/consent", self.decide, methods=["POST"]),
            Route("/oauth/callback", self.upstream_callback, methods=["GET"]),
        ]

    # -- the page --------------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        ident = request.query_params.get("request", "")
        pending = self.provider.take_pending(ident)
        if pending is None:
            return _error_page("This login request is unknown or expired. Start the login again from your MCP client.")
        cookie = request.cookies.get(COOKIE)
        fresh = None
        if pending.browser is None:
            fresh = cookie or secrets.token_urlsafe(32)
            pending.browser = digest(fresh)
        elif cookie is None or not hmac.compare_digest(pending.browser, digest(cookie)):
            return _error_page("This login was opened in another browser. Start the login again from your MCP client.")
        response = HTMLResponse(self._render(ident, pending), headers=HEADERS)
        if fresh is not None:
            response.set_cookie(
                COOKIE, fresh, max_age=self.provider.login_seconds, path="/oauth", secure=self.secure,
                httponly=True, samesite="lax",
            )  # fmt: skip
        return response

    def _render(self, ident: str, pending: Pending) -> str:
        client = pending.client
        # A name that is nothing but invisible characters shows as the client's id, never as blank.
        name = html.escape(_shown(client.client_name or "") or client.client_id or "an unnamed client")
        redirect = str(pending.params.redirect_uri)
        parts = urlsplit(redirect)
        warning = ""
        if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
            warning = (
                f"<p class=warn>The login is handed to a program on <b>this computer</b> (port {parts.port or 80}). "
                "Approve only if you started this login from your MCP client just now.</p>"
            )
        elif parts.scheme not in ("http", "https"):
            warning = (
                f"<p class=warn>The login is handed to the application registered for <b>{html.escape(parts.scheme)}:"
                "</b> links on this computer.</p>"
            )
        scopes = "".join(f"<li>{html.escape(_shown(s, 200))}</li>" for s in pending.scopes) or "<li>(none)</li>"
        gated = ", ".join(html.escape(t) for t in self._gated) or "every tool marked destructive"
        return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>mcp-guard: approve a login</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}}code{{word-break:break-all}}
.warn{{background:#fff3cd;padding:.5em}}</style></head><body>
<h1>Approve this MCP client?</h1>
<p><b><bdi>{name}</bdi></b> <i>(unverified: this is the name the client gave itself)</i> asks to use
<b>{html.escape(self.server)}</b> through mcp-guard for team <b>{html.escape(self.provider.team)}</b>.</p>
<p>After you approve, you log in at {html.escape(self.server)}; the login is then sent to:<br>
<code>{html.escape(redirect)}</code></p>{warning}
<p>Scopes:</p><ul>{scopes}</ul>
<p>Tools that will still ask you before they run: {gated}.</p>
<form method=post action="/oauth/consent">
<input type=hidden name=request value="{html.escape(ident)}">
<input type=hidden name=csrf value="{html.escape(pending.csrf)}">
<button name=action value=approve>Approve and log in</button>
<button name=action value=deny>Deny</button>
</form></body></html>"""

    # -- the decision ----------------------------------------------------------------------------

    async def decide(self, request: Request) -> Response:
        form = await request.form()
        ident, csrf, action = (str(form.get(k, "")) for k in ("request", "csrf", "action"))
        pending = self.provider.take_pending(ident)
        cookie = request.cookies.get(COOKIE)
        if pending is None:
            return _error_page("This login request is unknown or expired. Start the login again from your MCP client.")
        if not csrf or not hmac.compare_digest(csrf, pending.csrf):
            return _error_page("The form did not come from this consent page.", status=403)
        if pending.browser is None or cookie is None or not hmac.compare_digest(pending.browser, digest(cookie)):
            return _error_page("This login was opened in another browser.", status=403)
        self.provider.pending.pop(ident)  # decided once
        if action != "approve":
            return self._to_client(pending, error="access_denied", error_description="the user denied the login")
        spec = self.loaded.policy.upstreams[self.server]
        assert spec.url is not None
        try:
            metadata, resource = await federation.discover(spec.url)
            store = self.provider.store
            client = await federation.client_for(self.loaded, self.server, metadata, self.callback,
                                                 store.upstream_client)  # fmt: skip
            if spec.oauth is not None and spec.oauth.client_id is None:
                store.upstream_client = {"issuer": str(metadata.issuer), "client": client.model_dump(mode="json")}
                store.save()
        except federation.FederationError as exc:
            logger.warning("login to upstream '%s' could not start: %s", self.server, exc)
            return self._to_client(pending, error="temporarily_unavailable", error_description=str(exc))
        up = federation.Upstream(metadata=metadata, client=client, resource=resource)
        verifier, challenge = federation.pkce()
        state = secrets.token_urlsafe(32)
        scopes = [s for s in pending.scopes if spec.oauth is None or not spec.oauth.scopes or s in spec.oauth.scopes]
        self._states.put(state, _Upstream(pending, pending.browser, verifier, up, scopes))
        return RedirectResponse(federation.authorize_url(up, self.callback, state, challenge, scopes), 302,
                                headers={"Cache-Control": "no-store"})  # fmt: skip

    # -- back from the upstream ------------------------------------------------------------------

    async def upstream_callback(self, request: Request) -> Response:
        query = request.query_params
        state = query.get("state")
        if not state:
            return _error_page("The upstream's answer carries no state; it was not accepted.")
        flow = self._states.get(state)
        if flow is None:
            return _error_page("This login is unknown, expired or already finished. Start again from your MCP client.")
        cookie = request.cookies.get(COOKIE)
        if cookie is None or not hmac.compare_digest(flow.browser, digest(cookie)):
            # Another browser cannot end this login either: the state stays for its own browser.
            return _error_page("This login was started in another browser; it was not accepted.", status=403)
        self._states.pop(state)  # single use, whatever follows
        try:
            validate_authorization_response_iss(query.get("iss"), flow.up.metadata)
        except OAuthFlowError:
            logger.warning("login to upstream '%s' refused: the answer's issuer is not the one asked", self.server)
            return _error_page("The answer did not come from the upstream's authorization server.", status=403)
        if query.get("error") or not query.get("code"):
            return self._to_client(
                flow.pending, error="access_denied", error_description="the upstream login did not finish"
            )
        try:
            tokens = await federation.exchange(flow.up, query["code"], flow.verifier, self.callback)
        except federation.FederationError as exc:
            logger.warning("login to upstream '%s' failed: %s", self.server, exc)
            return self._to_client(flow.pending, error="server_error", error_description=str(exc))
        principal = secrets.token_hex(16)
        grant = self.provider.store.grant(self.server, principal)
        await grant.set_client_info(flow.up.client)
        await grant.set_tokens(tokens)
        granted = set(tokens.scope.split()) if tokens.scope else None
        # No `scope` in the answer means "as requested" (RFC 6749 §5.1): what mcp-guard asked the
        # upstream for, not what the client asked mcp-guard for.
        scopes = [s for s in flow.asked if granted is None or s in granted]
        code = self.provider.issue_code(flow.pending, principal, scopes)
        logger.info("login approved for client %s", flow.pending.client.client_id)
        return self._to_client(flow.pending, code=code)

    def _to_client(self, pending: Pending, **fields: str) -> Response:
        """Back to the client's redirect URI with its own state and mcp-guard as `iss` (RFC 9207)."""
        params = pending.params
        url = construct_redirect_uri(
            str(params.redirect_uri), state=params.state, iss=self.provider.issuer_id, **fields
        )
        return RedirectResponse(url, 302, headers={"Cache-Control": "no-store"})


def _shown(text: str, limit: int = MAX_SHOWN) -> str:
    """What a client chose to call itself (or its scopes), fit to be shown: no control, format
    (bidi overrides, zero-width) or unassigned characters, one line, and short. A name that reorders
    the text around it, hides part of itself or pushes the warning off the page misleads the user at
    the one moment they decide."""
    kept = "".join(" " if unicodedata.category(c) in ("Zl", "Zp", "Cc") else c for c in text)
    kept = "".join(c for c in kept if not unicodedata.category(c).startswith("C"))
    kept = " ".join(kept.split())
    return kept if len(kept) <= limit else kept[: limit - 1] + "\u2026"


def _error_page(text: str, status: int = 400) -> HTMLResponse:
    body = f"<!doctype html><title>mcp-guard</title><p>{html.escape(text)}</p>"
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def _gated_tools(loaded: LoadedPolicy) -> list[str]:
    """The profiled tools this team may use that ask the human first (shown on the consent page)."""
    catalog = Catalog(loaded)
    names = []
    for server, profile in loaded.profiles.items():
        if profile is None:
            continue
        for name in profile.tools:
            rule = catalog.rule(server, name, None)
            if rule.visible and rule.gated:
                names.append(rule.exposed)
    return sorted(names)
