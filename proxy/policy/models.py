"""The policy schema: pydantic models, over the field types of `fields`; the profile schema is `profile`.

A policy (one team: its upstreams, which tools it sees, what needs a human yes, limits and pins)
and a profile (one upstream server: its tools' scopes, legs and verbatim fields) are frozen models
that forbid unknown keys, so a typo is an error rather than a silently ignored setting.  The JSON
Schema editors use (`mcp-guard schema`) is generated from `Policy`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    model_validator,
)

from proxy.policy.fields import (
    ENV_NAME,
    HEADER_NAME,
    EnvValue,
    Globs,
    Seconds,
    ServerName,
    Slug,
    StrictModel,
)


class UpstreamOAuth(StrictModel):
    """mcp-guard logs in to the upstream as an OAuth client of its own (SPEC §13, `mcp-guard login`).

    The authorization server is discovered from the upstream (401 → RFC 9728 → RFC 8414), never
    written here. Without client_id, mcp-guard registers itself (DCR), or presents
    client_metadata_url where the server supports client ID metadata documents."""

    client_id: str | None = None
    client_secret: str | None = None  # for a confidential static client; use ${VAR}
    client_metadata_url: str | None = None
    scopes: tuple[Annotated[str, Field(min_length=1)], ...] | None = None  # default: the team's scopes
    grant_file: str | None = None  # default: <policy stem>.<upstream>.grant beside the policy

    @model_validator(mode="after")
    def _secret_needs_id(self) -> UpstreamOAuth:
        if self.client_secret is not None and self.client_id is None:
            raise ValueError("oauth.client_secret needs oauth.client_id")
        return self


class Upstream(StrictModel):
    url: str | None = None
    command: tuple[str, ...] | None = None
    builtin: Literal["sandbox"] | None = None
    transport: Literal["auto", "streamable-http", "sse"] = "auto"
    headers: dict[str, str] = Field(default_factory=dict)
    env: dict[str, EnvValue] = Field(default_factory=dict)
    cwd: str | None = None
    profile: str | None = None
    timeout_seconds: Seconds = 30.0
    # An answer larger than this is refused as it streams in, never buffered whole: a JSON body, or
    # a stdio server's line (which ends that connection). Server-sent events are capped per event at
    # 1 MiB by the SDK.
    max_result_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    oauth: UpstreamOAuth | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Upstream:
        kinds = [k for k in ("url", "command", "builtin") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("an upstream needs exactly one of url, command or builtin")
        if self.url is not None:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError("url must start with http:// or https://")
            if self.env or self.cwd is not None:
                raise ValueError("env and cwd apply only to command upstreams")
        else:
            if self.transport != "auto":
                raise ValueError("transport applies only to url upstreams")
            if self.headers:
                raise ValueError("headers apply only to url upstreams")
        if self.builtin is not None and (self.env or self.cwd is not None):
            raise ValueError("env and cwd apply only to command upstreams")
        if self.command is not None and (not self.command or not all(self.command)):
            raise ValueError("command must be a non-empty list of non-empty strings")
        if self.oauth is not None:
            if self.url is None:
                raise ValueError("oauth applies only to url upstreams")
            if any(name.lower() == "authorization" for name in self.headers):
                raise ValueError("an upstream with oauth gets its Authorization from the grant, not from headers")
        for name, value in self.headers.items():
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name} must not contain a line break")
        for name in self.env:
            if not ENV_NAME.fullmatch(name):
                raise ValueError(f"env name {name!r} is not a valid environment variable name")
        return self


class ToolsPolicy(StrictModel):
    allow: Globs = ("*",)
    deny: Globs = ()
    unlisted: Literal["hide", "allow"] = "hide"


class ConfirmPolicy(StrictModel):
    destructive: bool = True
    tools: Globs = ()
    skip: Globs = ()
    timeout_seconds: Seconds = 300.0
    without_elicitation: Literal["deny", "allow"] = "deny"


class OutputPolicy(StrictModel):
    envelope: bool = True
    strip_html: bool = True
    strip_markdown: bool = True
    max_chars: Annotated[int, Field(ge=1)] = 100_000


class TrifectaPolicy(StrictModel):
    action: Literal["block", "confirm", "off"] = "confirm"
    idle_seconds: Seconds = 1800.0


class LimitRule(StrictModel):
    """Limits for the tools matching `tools`, counted per team across all of them together.

    per_minute: at most N calls in any sliding window of `window_seconds` (default 60, so
      literally per minute; a shorter window suits tests, a longer one daily quotas).
      Only forwarded calls count; a refused one names the wait until the oldest call leaves
      the window.
    per_day: at most N in any sliding 24 hours (a daily budget).
    count: what per_minute and per_day count: `calls`, or `messages` (SMS messages: recipients
      × parts of the profile's `message` argument; a group send counts its parts once).
    max_recipients: at most N recipients in one call, counted from the profile's
      `recipients.args` (comma-separated lists); a send to a group (`recipients.group_args`)
      has an unknown size, so it is gated for a human yes instead.
    """

    tools: Annotated[Globs, Field(min_length=1)]
    per_minute: Annotated[int, Field(ge=1)] | None = None
    window_seconds: Annotated[float, Field(ge=1)] = 60.0
    per_day: Annotated[int, Field(ge=1)] | None = None
    count: Literal["calls", "messages"] = "calls"
    max_recipients: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _some_limit(self) -> LimitRule:
        if self.per_minute is None and self.per_day is None and self.max_recipients is None:
            raise ValueError("a limit needs per_minute, per_day or max_recipients")
        if "window_seconds" in self.model_fields_set and self.per_minute is None:
            raise ValueError("window_seconds applies only to per_minute")
        return self


class PinRule(StrictModel):
    tools: Annotated[Globs, Field(min_length=1)]
    values: dict[str, Any] = Field(default_factory=dict, alias="set")
    forbid: tuple[Annotated[str, Field(min_length=1)], ...] = ()

    @model_validator(mode="after")
    def _some_pin(self) -> PinRule:
        if not self.values and not self.forbid:
            raise ValueError("a pin needs set or forbid")
        both = sorted(set(self.values) & set(self.forbid))
        if both:
            raise ValueError(f"argument {both[0]!r} is both set and forbidden")
        return self


class SendersPolicy(StrictModel):
    allow: tuple[Annotated[str, Field(min_length=1)], ...] = ()  # non-empty: only these (absent = default)
    block_impersonation: bool = True


class RecipientsPolicy(StrictModel):
    countries: tuple[Annotated[str, Field(pattern=r"^[A-Z]{2}$")], ...] = ()  # ISO 3166 alpha-2; empty = any
    block_premium: bool = True


class SmsPolicy(StrictModel):
    """SMS rules (SPEC §11), applied to the tools whose profile names sender/recipients/message roles."""

    senders: SendersPolicy = SendersPolicy()
    recipients: RecipientsPolicy = RecipientsPolicy()
    show_cost: bool = True


class PinningPolicy(StrictModel):
    """Tool pinning against rug pulls (SPEC §10): the lockfile `mcp-guard pin` writes beside the policy."""

    lockfile: str | None = None  # default: <policy stem>.lock.json; a missing file turns pinning off
    new_tools: Literal["hide", "allow"] = "hide"
    on_drift: Literal["hide", "warn"] = "hide"


class AuthPolicy(StrictModel):
    """Who may call (SPEC §8, §13). `oauth`: mcp-guard is the authorization and resource server its
    clients log in to, and federates each login to one upstream's authorization server."""

    mode: Literal["passthrough", "keys", "oauth"] = "passthrough"
    required: bool = False
    # oauth: the origin clients reach mcp-guard at (issuer and resource base). Never taken from a
    # request's Host or X-Forwarded-* headers, which a client controls.
    public_url: str | None = None
    upstream: ServerName | None = None  # oauth: whose logins are federated; default: the one with `oauth:`
    # oauth: private-use redirect URI schemes a client may register besides loopback and https.
    redirect_schemes: tuple[Annotated[str, Field(pattern=r"^[a-z][a-z0-9+.-]{1,63}$")], ...] = ()
    access_token_seconds: Annotated[int, Field(ge=1, le=86400)] = 3600
    refresh_token_days: Annotated[int, Field(ge=1, le=365)] = 30
    # oauth: how long a login may take from mcp-guard's consent page to the upstream's answer; its
    # pending request, browser cookie and upstream `state` end then.
    login_seconds: Annotated[int, Field(ge=1, le=3600)] = 600
    store_dir: str | None = None  # oauth: default <policy stem>.oauth beside the policy

    @model_validator(mode="after")
    def _oauth_needs_public_url(self) -> AuthPolicy:
        if self.mode != "oauth":
            if self.public_url is not None or self.upstream is not None or self.redirect_schemes:
                raise ValueError("public_url, upstream and redirect_schemes belong to auth.mode oauth")
            return self
        if self.public_url is None:
            raise ValueError("auth.mode oauth needs public_url (the https origin clients reach mcp-guard at)")
        parts = urlsplit(self.public_url)
        loopback = parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not loopback:
            raise ValueError("auth.public_url must be https (plain http only on loopback)")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or not parts.hostname:
            raise ValueError("auth.public_url must be an origin such as https://guard.example.com (no path or query)")
        if {"http", "https", "javascript", "data", "file"} & set(self.redirect_schemes):
            raise ValueError("auth.redirect_schemes lists private-use schemes only (e.g. cursor)")
        return self

    @property
    def issuer(self) -> str:
        assert self.public_url is not None
        return self.public_url.rstrip("/")


class AuditPolicy(StrictModel):
    path: str | None = None
    # A gated or external call whose decision line cannot be written is refused; false only logs it.
    required: bool = True
    max_bytes: Annotated[int, Field(ge=4096)] | None = None  # rotate before a line would cross this size
    daily: bool = False  # rotate at the first line of a new (UTC) day
    keep: Annotated[int, Field(ge=1, le=1000)] = 5  # rotated files kept: <path>.1 … <path>.<keep>


class CapacityPolicy(StrictModel):
    """What one principal may hold of a `serve` process (SPEC §9); anonymous callers are one principal."""

    sessions_per_principal: Annotated[int, Field(ge=1)] = 256  # open handshake-era sessions
    requests_per_principal: Annotated[int, Field(ge=1)] = 128  # requests in flight at once


class StatePolicy(StrictModel):
    """Where state shared across requests lives (SPEC §12): this process's memory, or Redis for replicas."""

    url: Annotated[str, Field(pattern=r"^(redis|rediss|unix)://")] | None = None  # serve --state overrides
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "mcp-guard"  # one per deployment


class Policy(StrictModel):
    version: Literal[1] = 1
    team: Slug
    description: str | None = None
    upstreams: Annotated[dict[ServerName, Upstream], Field(min_length=1)]
    scopes: tuple[Annotated[str, Field(min_length=1)], ...] | None = None
    tools: ToolsPolicy = ToolsPolicy()
    confirm: ConfirmPolicy = ConfirmPolicy()
    output: OutputPolicy = OutputPolicy()
    trifecta: TrifectaPolicy = TrifectaPolicy()
    limits: tuple[LimitRule, ...] = ()
    pins: tuple[PinRule, ...] = ()
    sampling: Literal["deny", "allow"] = "deny"
    # An upstream's URL-mode elicitation sends the human to a page of its choosing: refused unless allowed.
    url_elicitation: Literal["deny", "allow"] = "deny"
    auth: AuthPolicy = AuthPolicy()
    audit: AuditPolicy = AuditPolicy()
    capacity: CapacityPolicy = CapacityPolicy()
    state: StatePolicy = StatePolicy()
    pinning: PinningPolicy = PinningPolicy()
    sms: SmsPolicy | None = None

    @model_validator(mode="after")
    def _oauth_upstream(self) -> Policy:
        if self.auth.mode != "oauth":
            return self
        federated = self.federated_upstream
        if federated is None:
            with_oauth = [n for n, u in self.upstreams.items() if u.oauth is not None]
            raise ValueError(
                "auth.mode oauth federates logins to an upstream with `oauth:`"
                + (f"; several have it ({', '.join(with_oauth)}): name one in auth.upstream" if with_oauth else "")
            )
        if self.upstreams[federated].oauth is None or self.upstreams[federated].url is None:
            raise ValueError(f"auth.upstream '{federated}' needs a url and `oauth:`")
        return self

    @property
    def federated_upstream(self) -> str | None:
        """The upstream whose authorization server client logins are federated to (auth.mode oauth)."""
        if self.auth.upstream is not None:
            return self.auth.upstream if self.auth.upstream in self.upstreams else None
        with_oauth = [n for n, u in self.upstreams.items() if u.oauth is not None]
        return with_oauth[0] if len(with_oauth) == 1 else None
