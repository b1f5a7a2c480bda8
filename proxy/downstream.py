"""The client a request came from, as the confirmation gate and the upstream relay see it.

`Downstream` is the gate's `Prompter` and the upstream `Relay` for one request, and it decides
what an upstream may put in front of this client: which questions, cleaned how, under which
policy and era (the refusals themselves are in relay.py). It speaks to the client through a
`Channel`, which the transport provides: the SDK's session (server.py) or the fast path's own
stream (backchannel.py). Channels carry messages and decide nothing.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

import anyio
import mcp.types as types
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from proxy.questions import (
    clean_form_schema,
    clean_url,
    elicitation_id,
    relayed_question,
    sampling_request,
    url_question,
)
from proxy.relay import (
    ProgressFn,
    can_elicit_form,
    can_elicit_url,
    refuse_question,
    refuse_sampling,
    relay_refusal,
)
from proxy.upstream_changes import Relay

R = TypeVar("R", bound=BaseModel)

LEVELS: list[str] = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]


class Channel(Protocol):
    """The way to one downstream request's client: requests and notifications on that request."""

    modern: bool
    capabilities: types.ClientCapabilities | None
    log_floor: types.LoggingLevel | None  # the level the client asked for with logging/setLevel
    # Whether anything the upstream says on the way can reach this client: what it cannot take is not
    # asked of the upstream either (no progress token, no log level on the call).
    takes_logs: bool
    takes_progress: bool

    async def request(self, request: types.ServerRequest, result_type: type[R]) -> R: ...

    async def log(self, params: types.LoggingMessageNotificationParams) -> None: ...

    async def progress(self, progress: float, total: float | None, message: str | None) -> None: ...


class Downstream:
    """The gate's `Prompter` and the upstream `Relay` for one downstream request."""

    def __init__(
        self,
        channel: Channel,
        params: types.CallToolRequestParams | None,
        *,
        allow_sampling: bool,
        timeout: float,
        allow_url: bool = False,
    ) -> None:
        self.channel = channel
        self.modern = channel.modern
        self.can_elicit = can_elicit_form(channel.capabilities)
        self.can_elicit_url = can_elicit_url(channel.capabilities)
        self.allow_url = allow_url
        self.request_state = params.request_state if params is not None else None
        responses = params.input_responses if params is not None else None
        self.input_responses: dict[str, Any] | None = dict(responses) if responses else None
        self.allow_sampling = allow_sampling
        # How long a relayed upstream question may wait for the human (the policy's confirm timeout).
        self.timeout = timeout

    async def elicit(self, message: str, schema: dict[str, Any]) -> types.ElicitResult:
        request = types.ElicitRequest(params=types.ElicitRequestFormParams(message=message, requested_schema=schema))
        return await self.channel.request(request, types.ElicitResult)

    def relay(self) -> Relay:
        return Relay(
            elicit=self._relay_elicit,
            sample=self._relay_sample,
            log=self._relay_log if self.channel.takes_logs else None,
        )

    @property
    def progress_relay(self) -> ProgressFn | None:
        """Where the upstream's progress goes, if this client asked for any."""
        return self.progress if self.channel.takes_progress else None

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        await self.channel.progress(progress, total, message)

    async def _relay_log(self, server: str, params: types.LoggingMessageNotificationParams) -> None:
        """An upstream's log line, already cleaned by the pipeline, named, on this request's stream."""
        floor = self.channel.log_floor
        if floor is not None and LEVELS.index(params.level) < LEVELS.index(floor):
            return  # below the level this client asked for; an upstream shared with others may log more
        logger_name = f"{server}/{params.logger}" if params.logger else server
        await self.channel.log(params.model_copy(update={"logger": logger_name}))

    async def _relay_elicit(
        self, server: str, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        if refusal := refuse_question(server, params, allow_url=self.allow_url, modern=self.modern):
            return refusal
        if isinstance(params, types.ElicitRequestURLParams):
            return await self._relay_url(server, params)
        assert isinstance(params, types.ElicitRequestFormParams)
        if not self.can_elicit:
            return relay_refusal(
                f"upstream '{server}' asked the user a question, but this client does not support elicitation"
            )
        form = types.ElicitRequestFormParams(
            message=relayed_question(server, params.message),
            requested_schema=clean_form_schema(params.requested_schema),
        )
        return await self._ask(server, types.ElicitRequest(params=form), types.ElicitResult, "user")

    async def _relay_url(
        self, server: str, params: types.ElicitRequestURLParams
    ) -> types.ElicitResult | types.ErrorData:
        url = clean_url(params.url)
        if url is None:
            return relay_refusal(f"upstream '{server}' asked to send the user to a URL that is not a plain https URL")
        if not self.can_elicit_url:
            return relay_refusal(f"upstream '{server}' asked to send the user to a URL, but this client cannot")
        asked = types.ElicitRequestURLParams(
            message=url_question(server, params.message, url),
            url=url,
            elicitation_id=elicitation_id(params.elicitation_id),
        )
        return await self._ask(server, types.ElicitRequest(params=asked), types.ElicitResult, "user")

    async def _relay_sample(
        self, server: str, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.ErrorData:
        if refusal := refuse_sampling(server, allow_sampling=self.allow_sampling, modern=self.modern):
            return refusal
        caps = self.channel.capabilities
        if caps is None or caps.sampling is None:
            return relay_refusal(f"upstream '{server}' asked for sampling, but this client does not support it")
        request = types.CreateMessageRequest(params=sampling_request(params))
        return await self._ask(server, request, types.CreateMessageResult, "client")

    async def _ask(
        self, server: str, request: types.ServerRequest, result_type: type[R], who: str
    ) -> R | types.ErrorData:
        try:
            with anyio.fail_after(self.timeout):
                return await self.channel.request(request, result_type)
        except TimeoutError:
            return relay_refusal(f"the {who} did not answer upstream '{server}' within {self.timeout:g} s")
        except MCPError as exc:
            return types.ErrorData(code=exc.code, message=exc.message)
