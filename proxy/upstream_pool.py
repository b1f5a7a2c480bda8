"""The upstream connections of one team: one per (server, credential), sharing one HTTP connection
pool per upstream.

With the policy's own credentials every caller shares one connection per server; in passthrough
mode each distinct client credential gets its own, because a handshake-era upstream binds its
session to the credential that opened it; under auth.mode oauth each login gets its own, with that
login's upstream grant. Idle connections are closed, and their number is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import anyio.abc
import httpx2

from proxy import redact
from proxy.policy import Upstream
from proxy.upstream import UpstreamConnection, credential_key
from proxy.upstream_transport import SharedTransport

MAX_CONNECTIONS = 256
IDLE_SECONDS = 600.0


class Credentials(Protocol):
    """What picks a caller's upstream connection (a `Caller` is one)."""

    @property
    def authorization(self) -> str | None:
        """The client's Authorization header, passed through unless mcp-guard holds credentials of its own."""

    @property
    def grant(self) -> str | None:
        """Under auth.mode oauth, the login whose upstream grant serves the caller."""


class UpstreamPool:
    """Upstream connections keyed by (server, credential digest or login)."""

    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        task_group: anyio.abc.TaskGroup,
        *,
        allow_sampling: bool,
        auth: Mapping[str, httpx2.Auth] | None = None,
        grant_auth: Callable[[str, str], httpx2.Auth] | None = None,
    ) -> None:
        self._upstreams = dict(upstreams)
        self._auth = dict(auth or {})
        # auth.mode oauth: each login's own upstream grant (server, principal id -> its auth).
        self._grant_auth = grant_auth
        self._tg = task_group
        self._allow_sampling = allow_sampling
        self._conns: dict[tuple[str, str], UpstreamConnection] = {}
        self.listed: Callable[[str, str, Mapping[str, Any]], None] | None = None
        # One connection pool (and one TLS context, ~0.9 MB) per upstream, shared by every credential's
        # connection; a credential's own HTTP client is a thin one holding only its headers.
        self._transports: dict[str, SharedTransport] = {}

    @property
    def servers(self) -> list[str]:
        return list(self._upstreams)

    def has_auth(self, server: str) -> bool:
        """Whether mcp-guard holds a grant of its own for `server` (not only its clients' logins)."""
        return server in self._auth

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run `fn` for as long as the pool lives (a call that outlives the request that started it)."""
        self._tg.start_soon(fn)

    def get(self, server: str, caller: Credentials | None = None) -> UpstreamConnection:
        """The connection that serves `caller` at `server`; without a caller, the policy's own credentials'."""
        client_authorization = caller.authorization if caller is not None else None
        grant = caller.grant if caller is not None else None
        config = self._upstreams[server]
        headers = dict(config.headers)
        forwarded: str | None = None
        # An upstream mcp-guard logs in to itself never sees a client's token (no passthrough).
        own_grant = config.oauth is not None
        auth = self._auth.get(server)
        if own_grant and grant is not None and self._grant_auth is not None:
            # One connection per login, authorised with that login's upstream grant only.
            key = (server, "grant:" + grant)
            conn = self._conns.get(key)
            if conn is None:
                conn = self._connect(server, config, headers, key, self._grant_auth(server, grant))
            return conn
        if (
            config.url is not None
            and client_authorization
            and not own_grant
            and not _has_header(headers, "authorization")
        ):
            headers["Authorization"] = client_authorization
            forwarded = client_authorization
            redact.register_client_secret(client_authorization)  # kept out of every log line from here on
        key = (server, credential_key(forwarded))
        conn = self._conns.get(key)
        if conn is None:
            conn = self._connect(server, config, headers, key, auth)
        return conn

    def _connect(
        self, server: str, config: Upstream, headers: dict[str, str], key: tuple[str, str], auth: httpx2.Auth | None
    ) -> UpstreamConnection:
        self._evict_idle()
        transport = self._transports.get(server)
        if transport is None and config.url is not None:
            transport = self._transports[server] = SharedTransport(config.max_result_bytes)
        conn = UpstreamConnection(
            server, config, headers, self._tg, allow_sampling=self._allow_sampling, transport=transport, auth=auth
        )
        conn.listed = self.listed
        self._conns[key] = conn
        return conn

    def any_tool_schema(self, server: str, name: str) -> Mapping[str, Any] | None:
        for (srv, _), conn in self._conns.items():
            if srv == server and (tool := conn.tools.get(name)) is not None:
                return tool.input_schema
        return None

    def _evict_idle(self) -> None:
        now = time.monotonic()
        stale = [
            k for k, c in self._conns.items() if k[1] != "-" and c.in_flight == 0 and now - c.last_used > IDLE_SECONDS
        ]
        if len(self._conns) - len(stale) >= MAX_CONNECTIONS:
            idle = sorted((c.last_used, k) for k, c in self._conns.items() if c.in_flight == 0 and k[1] != "-")
            stale.extend(k for _, k in idle[: len(self._conns) - MAX_CONNECTIONS + 1])
        for key in stale:
            conn = self._conns.pop(key, None)
            if conn is not None:
                conn._mark_broken(conn._stop)

    async def aclose(self) -> None:
        for conn in self._conns.values():
            await conn.close()
        self._conns.clear()
        for transport in self._transports.values():
            await transport.close()
        self._transports.clear()


def _has_header(headers: Mapping[str, str], name: str) -> bool:
    return any(k.lower() == name for k in headers)
