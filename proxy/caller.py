"""Who is asking: what the transport established about a request, handed to the team's pipeline."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    """Who is asking, as the transport established it. Never holds a secret except `authorization`,
    which is only forwarded upstream in passthrough mode and never logged."""

    team: str
    principal: str
    session: str
    authorization: str | None = None
    group: str | None = None
    # True for the sessionless 2026-07-28 era over HTTP, whose trifecta record ends after an idle
    # window; every other session (stdio, handshake-era HTTP) never expires, which fails closed.
    sessionless: bool = False
    # auth.mode oauth: the login whose upstream grant serves this caller, and the scopes it was granted
    # (None: the team's scopes decide alone).
    grant: str | None = None
    scopes: frozenset[str] | None = None
