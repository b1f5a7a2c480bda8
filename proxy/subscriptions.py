"""Subscriptions, log level and listeners of one team's pipeline: what an upstream announces
outside a call reaches exactly the downstream sessions that asked for it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import mcp.types as types
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, METHOD_NOT_FOUND

from proxy.caller import Caller
from proxy.listings import Listings
from proxy.relay import Pending, within
from proxy.upstream import UpstreamConnection
from proxy.upstream_changes import Listener, Relay
from proxy.upstream_errors import UpstreamUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Subscriptions(Listings):
    """The subscription requests of a `Pipeline` (a mixin, as `Listings`)."""

    def _cleaning(self, relay: Relay, pending: Pending) -> Relay:
        raise NotImplementedError  # the pipeline's: it cleans the upstream's log lines on their way

    def listen(self, caller: Caller, listener: Listener) -> None:
        """`listener` (a downstream session) hears list_changed and resource updates from its upstreams."""
        for server in self.pool.servers:
            self.pool.get(server, caller).listeners.add(listener)

    async def subscribe(self, caller: Caller, uri: str, relay: Relay | None = None) -> None:
        server, conn = await self._subscriber(caller, METHOD_NOT_FOUND)
        await self.refuse_hidden_resources(server, conn, [uri])
        try:
            await self._relaying(conn, relay, lambda: conn.subscribe(uri))
        except MCPError as exc:
            raise self._answered(server, exc) from None

    async def unsubscribe(self, caller: Caller, uri: str, relay: Relay | None = None) -> None:
        for server in self.pool.servers:  # the connection that holds the subscription, whatever it offers now
            conn = self.pool.get(server, caller)
            if uri in conn.subscribed:
                break
        else:
            return
        try:
            await self._relaying(conn, relay, lambda: conn.unsubscribe(uri))
        except MCPError as exc:
            raise self._answered(server, exc) from None

    async def _subscriber(self, caller: Caller, code: int) -> tuple[str, UpstreamConnection]:
        """The upstream that takes resource subscriptions: the first whose capabilities offer them.

        Not the first with resources (`_single`): one without subscriptions would be asked for what
        it cannot do (a 2026-07-28 one has no change stream to take the filter, and the request would
        wait out its timeout). One not connected yet is connected to learn what it offers; when none
        offers subscriptions, the first that could not be reached is the answer, else `code`.
        """
        unreachable: UpstreamUnavailable | None = None
        for server in self.pool.servers:
            conn = self.pool.get(server, caller)
            caps = conn.capabilities()
            if caps is None:
                try:
                    caps = (await conn.session()).server_capabilities
                except UpstreamUnavailable as exc:
                    unreachable = unreachable or exc
                    continue
            if caps is not None and caps.resources is not None and caps.resources.subscribe:
                return server, conn
        if unreachable is not None:
            raise unreachable
        raise MCPError(code=code, message="mcp-guard: no upstream offers resource subscriptions")

    async def _relaying(self, conn: UpstreamConnection, relay: Relay | None, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` with the upstream's log lines meanwhile relayed, cleaned, to the request's client."""
        if relay is None:
            return await fn()
        pending = Pending()
        return await within(conn, self._cleaning(relay, pending), pending, fn)

    @asynccontextmanager
    async def listening(self, caller: Caller, uris: list[str]) -> AsyncIterator[InMemorySubscriptionBus]:
        """A 2026-07-28 client's change stream: the upstream subscribed to `uris` while it lasts, and
        the bus its connection publishes announcements on (one per credential: nobody hears another's)."""
        if uris:
            server, conn = await self._subscriber(caller, INVALID_PARAMS)
            await self.refuse_hidden_resources(server, conn, uris)
        else:
            server, found = self._single(caller, "resources")
            conn = found if found is not None else self.pool.get(self.pool.servers[0], caller)
        done: list[str] = []
        try:
            for uri in uris:
                try:
                    await conn.subscribe(uri)
                except MCPError as exc:
                    raise self._answered(server, exc) from None
                done.append(uri)
            yield conn.bus
        finally:
            with anyio.CancelScope(shield=True):
                for uri in done:
                    try:
                        await conn.unsubscribe(uri)
                    except (MCPError, UpstreamUnavailable):
                        logger.debug("upstream '%s' did not take back a subscription", server)

    async def set_logging_level(self, caller: Caller, level: types.LoggingLevel) -> None:
        """Every upstream that logs is told the level; one that refuses is named in the proxy's log."""
        for server in self.pool.servers:
            conn = self.pool.get(server, caller)
            caps = conn.capabilities()
            if caps is not None and caps.logging is None:
                continue
            try:
                await conn.request(lambda s: s.set_logging_level(level), retry=True)
            except (MCPError, UpstreamUnavailable) as exc:
                logger.warning("upstream '%s' did not take the log level: %s", server, type(exc).__name__)
