"""The teams one process serves: each team's pipeline and upstream connections, and who calls.

`Gateway` is built by the CLI and shared by both transports (server.py for the SDK, fastpath.py
for the hot methods); `Identity` is what an HTTP request was authenticated as, and `caller_for`
turns it into the pipeline's `Caller`.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import anyio.abc
import httpx2
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR

from proxy.audit import AuditLog
from proxy.catalog import Catalog
from proxy.oauth_client import grant_store, oauth_servers, upstream_auth
from proxy.oauth_server import AuthStore
from proxy.pipeline import Caller, Pipeline
from proxy.policy import LoadedPolicy
from proxy.state import MemoryState, SharedState
from proxy.upstream_errors import UpstreamUnavailable, logged
from proxy.upstream_pool import UpstreamPool

logger = logging.getLogger("proxy.server")

IDENTITY_KEY = "mcp_guard.identity"
RELOGIN = "log in again from your MCP client (its login through mcp-guard)"


@dataclass(frozen=True)
class Identity:
    """The principal an HTTP request was authenticated as; `forward` is the credential passed upstream."""

    team: str
    principal: str
    forward: str | None = None
    grant: str | None = None  # auth.mode oauth: whose upstream grant (a login's principal id)
    scopes: frozenset[str] | None = None  # auth.mode oauth: what that login was granted


# The identity of the HTTP request being served, for what the SDK asks without a request context
# (the input schema a tools/call's `Mcp-Param-*` headers are checked against).
current_identity: ContextVar[Identity | None] = ContextVar("mcp_guard_identity", default=None)


# -- the teams one process serves ------------------------------------------------------------------


class Gateway:
    """Every team this process serves, each with its own pipeline and upstream connections."""

    def __init__(
        self,
        policies: Sequence[LoadedPolicy],
        *,
        offered: frozenset[str] | None = None,
        check_pins: bool = False,
        state: SharedState | None = None,
        state_key: bytes | None = None,
        store_key: bytes | None = None,
    ) -> None:
        self.policies = {p.policy.team: p for p in policies}
        # Rate windows, session legs and used one-time states: this process's, or shared by replicas.
        self.state: SharedState = state if state is not None else MemoryState()
        # Seals 2026-07-28 request states; replicas share it so a state minted on one opens on another.
        self.state_key = state_key
        self._store_key = store_key  # opens the encrypted OAuth grants of upstreams mcp-guard logs in to
        # What the upstreams offer (resources, subscribe, prompts, completions, logging); None: unknown.
        self.offered = offered
        self.pipelines: dict[str, Pipeline] = {}
        self.default_team = policies[0].policy.team
        self._audits: list[AuditLog] = []
        # auth.mode oauth: each team's logins (clients, hashed tokens, per-login upstream grants), read
        # now so a wrong key stops start-up.
        self.auth_stores = {
            p.policy.team: AuthStore(p, store_key)
            for p in policies
            if p.policy.auth.mode == "oauth" and store_key is not None
        }
        self._check_pins = check_pins  # list every upstream's tools at start and check them against the pins
        # Handshake-era sessions' connections by session id (weak: a closed session is forgotten).
        self.connections: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        async with anyio.create_task_group() as tg:
            try:
                for team, loaded in self.policies.items():
                    self.pipelines[team] = self._pipeline(loaded, tg)
                if not await self.state.healthy():
                    logger.warning(
                        "the %s state backend does not answer: calls that need shared state are refused until it does",
                        self.state.backend,
                    )
                if self._check_pins:
                    for pipeline in self.pipelines.values():
                        if pipeline.pin_check is not None:
                            tg.start_soon(_check_pins_now, pipeline)
                yield self
            finally:
                for pipeline in self.pipelines.values():
                    await pipeline.pool.aclose()
                for audit in self._audits:
                    audit.close()
                await self.state.aclose()
                tg.cancel_scope.cancel()

    def _pipeline(self, loaded: LoadedPolicy, tg: anyio.abc.TaskGroup) -> Pipeline:
        policy = loaded.policy
        auth = {}
        grant_auth = None
        federated = policy.federated_upstream if policy.auth.mode == "oauth" else None
        if self._store_key is not None:
            for server in oauth_servers(loaded):
                store = grant_store(loaded, server, self._store_key)
                if server != federated or store.exists():  # a federated upstream's team grant is optional
                    auth[server] = upstream_auth(loaded, server, store)
            if federated is not None:
                logins = self.auth_stores[policy.team]

                def grant_auth(server: str, principal: str) -> httpx2.Auth:
                    # A grant that can no longer be refreshed ends the login's own tokens, so its
                    # client is asked to log in again (401) instead of failing call after call.
                    return upstream_auth(
                        loaded, server, logins.grant(server, principal), relogin=RELOGIN,
                        on_login_needed=partial(logins.revoke_principal, principal),
                    )  # fmt: skip

        pool = UpstreamPool(
            policy.upstreams, tg, allow_sampling=policy.sampling == "allow", auth=auth, grant_auth=grant_auth
        )
        audit_path = loaded.audit_path
        settings = policy.audit
        audit = AuditLog(audit_path, max_bytes=settings.max_bytes, daily=settings.daily, keep=settings.keep)
        self._audits.append(audit)
        return Pipeline(loaded, pool, audit, self.state)

    def pipeline(self, team: str) -> Pipeline:
        pipeline = self.pipelines.get(team)
        if pipeline is None:
            raise MCPError(code=INTERNAL_ERROR, message="mcp-guard: no policy for this caller")
        return pipeline

    def groups(self) -> list[str]:
        names: set[str] = set()
        for loaded in self.policies.values():
            names.update(Catalog(loaded).groups())
        return sorted(names)


async def _check_pins_now(pipeline: Pipeline) -> None:
    for server in pipeline.pool.servers:
        if pipeline.opened_by_logins_only(server):
            continue
        conn = pipeline.pool.get(server)
        try:
            # Each drift is logged and audited as it is seen.
            await conn.list_all_tools()
            await conn.list_all("prompts")
            await conn.list_all("resource_templates")
        except (UpstreamUnavailable, MCPError) as exc:
            logger.warning("could not check upstream '%s' against its pins at start: %s", server, logged(exc))


def caller_for(identity: Identity, path: str, session_id: str | None, *, modern: bool) -> Caller:
    """The caller of an HTTP request. The sessionless 2026-07-28 era shares one state per principal
    (an idle window ends it): more taint than a per-connection state, never less, so it fails closed.
    A session header sent anyway is ignored, so a caller cannot pick a fresh trifecta record or gate
    binding per request."""
    session = f"{identity.principal}/{(None if modern else session_id) or 'stateless'}"
    return Caller(
        team=identity.team,
        principal=identity.principal,
        session=session,
        authorization=identity.forward,
        group=path.strip("/") or None,  # the path, not request.url: that builds a URL object per call
        sessionless=modern,
        grant=identity.grant,
        scopes=identity.scopes,
    )
