"""What an upstream sends outside the answer to a request: its questions, its notifications, and
the resource subscriptions that make it send updates.

An upstream's question (elicitation, sampling) or log line belongs to the downstream request that
caused it, and goes to that request's `Relay`; list_changed and resource updates go to every
downstream session that used the connection (`Listener`) and to the 2026-07-28 clients' listen
streams (the connection's bus). `Announcements` is that half of `UpstreamConnection`, kept here so
the connection's own module is about connecting and requesting.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import mcp.types as types
from mcp.client.session import ClientRequestContext, ClientSession
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost, listen
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)
from mcp_types import INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from proxy.policy import Upstream
from proxy.upstream_errors import UpstreamUnavailable, logged

logger = logging.getLogger("proxy.upstream")


@dataclass
class Relay:
    """Where an upstream's own requests (elicitation, sampling) go while a downstream request waits on it.

    Set per downstream request through `current_relay`; upstream callbacks run in the
    caller's context on HTTP upstreams, so they find the request that caused them.
    """

    elicit: Callable[[str, types.ElicitRequestParams], Awaitable[types.ElicitResult | types.ErrorData]]
    sample: Callable[[str, types.CreateMessageRequestParams], Awaitable[types.CreateMessageResult | types.ErrorData]]
    log: Callable[[str, types.LoggingMessageNotificationParams], Awaitable[None]] | None = None


current_relay: ContextVar[Relay | None] = ContextVar("mcp_guard_relay", default=None)


class Listener(Protocol):
    """A downstream session that hears what an upstream announces outside any request."""

    async def notify(self, server: str, notification: types.ServerNotification) -> None: ...


# Notifications relayed to downstream sessions; anything else an upstream announces stays here.
_RELAYED = (
    types.ResourceUpdatedNotification,
    types.ToolListChangedNotification,
    types.PromptListChangedNotification,
    types.ResourceListChangedNotification,
)


class Announcements:
    """The connection's half that hears its upstream outside a request's answer (mixed into
    `UpstreamConnection`, which owns the state named below)."""

    name: str
    config: Upstream
    tools: dict[str, types.Tool]
    listeners: weakref.WeakSet[Any]
    subscribed: dict[str, int]
    bus: InMemorySubscriptionBus
    _relays: dict[int, Relay]
    _others_at: dict[str, float]
    _refilter: anyio.Event
    _acked: anyio.Event
    _listen_failed: bool
    _subscribing: anyio.Lock
    _stop: anyio.Event | None

    if TYPE_CHECKING:

        async def session(self) -> ClientSession: ...
        async def request(self, fn: Callable[[ClientSession], Awaitable[Any]], *, retry: bool = False) -> Any: ...
        async def list_all_tools(self) -> dict[str, types.Tool]: ...
        async def list_all(self, kind: str) -> dict[str, Any]: ...

    # -- upstream-initiated requests -----------------------------------------------------------------

    def _relay(self) -> Relay | None:
        """The downstream request an upstream's question belongs to.

        It runs in the calling request's context when the upstream sends it on that request's
        stream. Some upstreams send it on the connection's own stream instead; then it can only be
        the one call in flight here. With several calls in flight nobody can tell whose it is, and a
        question must never reach another caller: it is refused.
        """
        relay = current_relay.get()
        if relay is None and len(self._relays) == 1:
            relay = next(iter(self._relays.values()))
        return relay

    async def _on_elicit(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        relay = self._relay()
        if relay is None:
            return types.ErrorData(code=INVALID_PARAMS, message="mcp-guard: no client request to relay this to")
        return await relay.elicit(self.name, params)

    async def _on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        relay = self._relay()
        if relay is not None and relay.log is not None:
            await relay.log(self.name, params)

    async def _on_sample(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.ErrorData:
        relay = self._relay()
        if relay is None:
            return types.ErrorData(code=INVALID_PARAMS, message="mcp-guard: no client request to relay this to")
        return await relay.sample(self.name, params)

    async def _on_message(self, message: Any) -> None:
        if not isinstance(message, _RELAYED):
            return
        if isinstance(message, types.ToolListChangedNotification):
            # Listed again and checked against the pins before clients hear of it, so a client that
            # lists at once never sees a drifted tool.
            self.tools.clear()
            try:
                await self.list_all_tools()
            except (UpstreamUnavailable, MCPError) as exc:
                logger.warning("upstream '%s' announced new tools but could not list them: %s", self.name, logged(exc))
        elif isinstance(message, types.PromptListChangedNotification | types.ResourceListChangedNotification):
            kind = "prompts" if isinstance(message, types.PromptListChangedNotification) else "resource_templates"
            # Pins see the new definitions before clients hear of them (only where they were looked at).
            if self._others_at.pop(kind, None) is not None:
                try:
                    await self.list_all(kind)
                except (UpstreamUnavailable, MCPError) as exc:
                    logger.warning(
                        "upstream '%s' announced new %s but could not list them: %s", self.name, kind, logged(exc)
                    )
        await self.bus.publish(_as_event(message))
        for listener in list(self.listeners):
            try:
                await listener.notify(self.name, message)
            except Exception:  # one gone session must not stop the others hearing it
                logger.debug("a downstream session could not be notified", exc_info=True)

    def calling(self, relay: Relay) -> AbstractContextManager[None]:
        """Mark a call in flight with its relay (see `_relay`)."""
        return _InFlight(self._relays, relay)

    # -- subscriptions ---------------------------------------------------------------------------

    async def subscribe(self, uri: str) -> None:
        """Subscribe the upstream to `uri`; counted only once it took it, so a failure is never
        reported as done to the next subscriber. One change at a time: a 2026-07-28 filter change
        waits for its own acknowledgement, which a concurrent change would replace."""
        async with self._subscribing:
            session = await self.session()
            if self.subscribed.get(uri, 0) == 0:
                if speaks_modern(session):
                    if not announces(session.server_capabilities):
                        raise UpstreamUnavailable(self.name, "it has no change stream to take resource subscriptions")
                    self.subscribed[uri] = 0  # in the filter `_listen` opens, not yet counted
                    try:
                        await self._relisten()
                    except BaseException:
                        self.subscribed.pop(uri, None)
                        raise
                else:
                    await self.request(lambda s: s.subscribe_resource(uri))
            self.subscribed[uri] = self.subscribed.get(uri, 0) + 1

    async def unsubscribe(self, uri: str) -> None:
        async with self._subscribing:
            count = self.subscribed.get(uri, 0)
            if count > 1:
                self.subscribed[uri] = count - 1
                return
            self.subscribed.pop(uri, None)
            if count == 1:
                session = await self.session()
                if not speaks_modern(session):
                    await self.request(lambda s: s.unsubscribe_resource(uri))
                elif announces(session.server_capabilities):  # else no stream holds the filter now
                    await self._relisten()

    async def _relisten(self) -> None:
        """A 2026-07-28 upstream takes subscriptions as a filter of one `subscriptions/listen` stream:
        it is opened again with the new filter, and this returns once the upstream acknowledged it."""
        acked = self._acked = anyio.Event()
        self._refilter.set()
        try:
            with anyio.fail_after(self.config.timeout_seconds):
                await acked.wait()
        except TimeoutError:
            # Left to the SDK, a bare TimeoutError is answered `{"code": 0, "message": ""}`.
            raise UpstreamUnavailable(self.name, "it did not acknowledge the resource subscription in time") from None
        if self._listen_failed:
            raise UpstreamUnavailable(self.name, "it did not accept the resource subscription")

    async def _listen(self, session: ClientSession, stop: anyio.Event) -> None:
        """The `subscriptions/listen` stream of a 2026-07-28 upstream, relayed as notifications."""
        try:
            while True:
                self._refilter = anyio.Event()
                uris = sorted(self.subscribed)
                try:
                    async with listen(
                        session,
                        tools_list_changed=True,
                        prompts_list_changed=True,
                        resources_list_changed=True,
                        resource_subscriptions=uris,
                    ) as sub:
                        self._listen_failed = False
                        self._acked.set()
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(_cancel_on, self._refilter, tg.cancel_scope)
                            async for _event in sub:
                                pass  # the session hands each notification to `_on_message` as well
                            tg.cancel_scope.cancel()
                except (MCPError, SubscriptionLost, ListenNotSupportedError, TimeoutError) as exc:
                    logger.warning("upstream '%s' ended its change stream: %s", self.name, type(exc).__name__)
                    self._listen_failed = True
                    self._acked.set()
                if not self._refilter.is_set():
                    await self._refilter.wait()  # nothing to listen for until the filter changes
        finally:
            # The stream is gone (its connection ended, or it broke): whoever waits for it to take a
            # filter is told now, not at its timeout; unless a newer connection (its own stream) took over.
            if self._stop is stop:
                self._listen_failed = True
                self._acked.set()

    async def _resubscribe(self, session: ClientSession) -> None:
        # A new upstream session knows nothing of the old one's subscriptions: they are made again.
        if speaks_modern(session):
            # The change stream opens with the whole filter when the client starts; calls wait for it,
            # so an update the upstream sends right after this reconnect is not missed.
            if self.subscribed and announces(session.server_capabilities):
                await self._acked.wait()
            return
        for uri in list(self.subscribed):
            try:
                await session.subscribe_resource(uri)
            except MCPError:
                logger.warning("upstream '%s' refused to renew a resource subscription after reconnecting", self.name)
                self.subscribed.pop(uri, None)


def speaks_modern(session: ClientSession) -> bool:
    return session.protocol_version in MODERN_PROTOCOL_VERSIONS


def announces(caps: types.ServerCapabilities | None) -> bool:
    """Whether a 2026-07-28 upstream serves `subscriptions/listen` (it says so through these flags)."""
    if caps is None:
        return False
    return bool(
        (caps.tools and caps.tools.list_changed)
        or (caps.prompts and caps.prompts.list_changed)
        or (caps.resources and (caps.resources.list_changed or caps.resources.subscribe))
    )


def _as_event(message: Any) -> ServerEvent:
    if isinstance(message, types.ResourceUpdatedNotification):
        return ResourceUpdated(uri=str(message.params.uri))
    if isinstance(message, types.ToolListChangedNotification):
        return ToolsListChanged()
    if isinstance(message, types.PromptListChangedNotification):
        return PromptsListChanged()
    return ResourcesListChanged()


async def _cancel_on(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


class _InFlight:
    def __init__(self, relays: dict[int, Relay], relay: Relay) -> None:
        self._relays = relays
        self._relay = relay

    def __enter__(self) -> None:
        self._relays[id(self)] = self._relay

    def __exit__(self, *exc: object) -> None:
        self._relays.pop(id(self), None)
