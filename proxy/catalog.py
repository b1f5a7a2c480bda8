"""The effective tool table: for each upstream tool, what the policy and profile make of it.

Pure and cheap: every guard asks `Catalog.rule()` on every request, so rules are cached per
(server, tool, effective annotation inputs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from mcp.types import ToolAnnotations

from proxy.policy import ArgSpec, Leg, LimitRule, LoadedPolicy, PinRule, Profile, ProfileTool, RecipientSpec, SmsPrice

_CACHE_MAX = 4096


@dataclass(frozen=True)
class ToolRule:
    server: str
    name: str  # the upstream's tool name
    exposed: str  # downstream name: unchanged with one upstream, "<server>__<name>" with several
    listed: bool  # the profile lists it (True when the upstream has no profile)
    scope: str | None
    visible: bool
    hidden_reason: str | None
    gated: bool
    gate_reasons: tuple[str, ...]  # "destructive", "policy"; the trifecta gate is decided per session
    skip_warning: bool  # gated by default, but confirm.skip removed the gate
    legs: frozenset[Leg]
    verbatim: Mapping[str, re.Pattern[str]] | None  # result paths whose values may pass byte-exact
    read_only: bool
    destructive: bool
    limits: tuple[LimitRule, ...]
    pins: tuple[PinRule, ...]
    recipients: RecipientSpec | None
    groups: frozenset[str]
    sender: ArgSpec | None = None  # the SMS roles of its arguments (SPEC §11)
    message: ArgSpec | None = None
    sms_price: SmsPrice | None = None


def first_match(globs: tuple[str, ...], *names: str) -> str | None:
    """The first glob matching any of the names."""
    return next((g for g in globs if any(fnmatchcase(n, g) for n in names)), None)


class Catalog:
    def __init__(self, loaded: LoadedPolicy) -> None:
        self.policy = loaded.policy
        self.profiles = loaded.profiles
        self._prefixed = len(self.policy.upstreams) > 1
        self._only = next(iter(self.policy.upstreams))
        self._scopes = frozenset(self.policy.scopes or ())
        self._tool_groups = {
            server: _groups_by_tool(profile) for server, profile in self.profiles.items() if profile is not None
        }
        self._cache: dict[tuple[str, str, bool | None, bool | None], ToolRule] = {}

    # ---- names

    def exposed_name(self, server: str, name: str) -> str:
        return f"{server}__{name}" if self._prefixed else name

    def resolve(self, exposed: str) -> tuple[str, str] | None:
        if not self._prefixed:
            return self._only, exposed
        server, sep, name = exposed.partition("__")
        if not sep or not name or server not in self.policy.upstreams:
            return None
        return server, name

    # ---- rules

    def rule(self, server: str, name: str, annotations: ToolAnnotations | None) -> ToolRule:
        if server not in self.policy.upstreams:
            raise KeyError(f"unknown upstream {server!r}")
        hints = (None, None) if annotations is None else (annotations.read_only_hint, annotations.destructive_hint)
        key = (server, name, *hints)
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= _CACHE_MAX:
                # An upstream that keeps inventing tools must not grow memory without bound.
                self._cache.clear()
            cached = self._cache[key] = self._classify(server, name, *hints)
        return cached

    def _classify(self, server: str, name: str, upstream_ro: bool | None, upstream_de: bool | None) -> ToolRule:
        profile = self.profiles.get(server)
        entry = profile.tools.get(name) if profile is not None else None
        read_only, destructive = _effective_hints(entry, upstream_ro, upstream_de)
        exposed = self.exposed_name(server, name)
        names = (exposed, name)
        hidden_reason = self._hidden_reason(profile, entry, names)
        gate_reasons, skipped = self._gate(destructive, names)
        limits = tuple(limit for limit in self.policy.limits if first_match(limit.tools, *names))
        pins = tuple(pin for pin in self.policy.pins if first_match(pin.tools, *names))
        return ToolRule(
            server=server,
            name=name,
            exposed=exposed,
            listed=profile is None or entry is not None,
            scope=entry.scope if entry is not None else None,
            visible=hidden_reason is None,
            hidden_reason=hidden_reason,
            gated=bool(gate_reasons),
            gate_reasons=gate_reasons,
            skip_warning=skipped,
            legs=_legs(entry, read_only),
            verbatim=entry.verbatim_formats() if entry is not None else None,
            read_only=read_only,
            destructive=destructive,
            limits=limits,
            pins=pins,
            recipients=entry.recipients if entry is not None else None,
            groups=self._tool_groups.get(server, {}).get(name, frozenset()),
            sender=entry.sender if entry is not None else None,
            message=entry.message if entry is not None else None,
            sms_price=profile.sms_price if profile is not None else None,
        )

    def _hidden_reason(self, profile: Profile | None, entry: ProfileTool | None, names: tuple[str, str]) -> str | None:
        tools = self.policy.tools
        if profile is not None and entry is None and tools.unlisted == "hide":
            return f"not listed in profile '{profile.name}' (tools.unlisted: hide)"
        if entry is not None and entry.scope is not None and entry.scope not in self._scopes:
            return f"scope '{entry.scope}' not granted"
        denied = first_match(tools.deny, *names)
        if denied is not None:
            return f"denied by tools.deny '{denied}'"
        if first_match(tools.allow, *names) is None:
            return "not allowed by tools.allow"
        return None

    def _gate(self, destructive: bool, names: tuple[str, str]) -> tuple[tuple[str, ...], bool]:
        confirm = self.policy.confirm
        reasons: list[str] = []
        if confirm.destructive and destructive:
            reasons.append("destructive")
        if first_match(confirm.tools, *names):
            reasons.append("policy")
        if reasons and first_match(confirm.skip, *names):
            return (), True
        return tuple(reasons), False

    # ---- resources and prompts

    def resource_legs(self, server: str) -> frozenset[Leg]:
        profile = self.profiles.get(server)
        return profile.resources.legs if profile is not None else frozenset({"untrusted"})

    def prompt_legs(self, server: str) -> frozenset[Leg]:
        profile = self.profiles.get(server)
        return profile.prompts.legs if profile is not None else frozenset({"untrusted"})

    # ---- groups and the profile-only view

    def visible_in_group(self, rule: ToolRule, group: str | None) -> bool:
        return rule.visible and (group is None or group in rule.groups)

    def groups(self) -> list[str]:
        seen: dict[str, None] = {}
        for profile in self.profiles.values():
            if profile is not None:
                seen.update(dict.fromkeys(profile.groups))
        return list(seen)

    def profile_rules(self) -> list[ToolRule]:
        """Every tool the profiles list, classified from the profile alone (no upstream annotations)."""
        return [
            self.rule(server, name, None)
            for server, profile in self.profiles.items()
            if profile is not None
            for name in profile.tools
        ]


def _effective_hints(entry: ProfileTool | None, ro: bool | None, de: bool | None) -> tuple[bool, bool]:
    """(read_only, destructive) after profile overrides, with the MCP spec defaults for missing hints."""
    override = entry.annotations if entry is not None else None
    if override is not None:
        # The profile's annotations are the whole claim: a hint they leave out takes MCP's default,
        # never the upstream's current word, which a rug pull could flip (readOnlyHint false alone
        # keeps the tool destructive whatever destructiveHint the upstream sends).
        ro, de = override.read_only_hint, override.destructive_hint
    read_only = ro is True
    # MCP defaults: readOnlyHint false, destructiveHint true, so an unannotated tool is destructive.
    return read_only, not read_only and de is not False


def _legs(entry: ProfileTool | None, read_only: bool) -> frozenset[Leg]:
    if entry is not None and entry.legs is not None:
        return entry.legs
    return frozenset({"untrusted", "sensitive"}) if read_only else frozenset({"external"})


def _groups_by_tool(profile: Profile) -> dict[str, frozenset[str]]:
    by_tool: dict[str, set[str]] = {}
    for group, names in profile.groups.items():
        for name in names:
            by_tool.setdefault(name, set()).add(group)
    return {name: frozenset(groups) for name, groups in by_tool.items()}
