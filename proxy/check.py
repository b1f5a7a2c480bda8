"""`mcp-guard check`: validate a policy and show what it does, in plain text.

The output is meant to be pasted into tickets and READMEs, so it never contains a header or
env value: only where a value comes from (`${VAR}`), never the value itself.
"""

from __future__ import annotations

import os
import shlex
import sys
import textwrap
from collections.abc import Iterable
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

from proxy.catalog import Catalog, ToolRule, first_match
from proxy.logs import printable
from proxy.pinning import NOUN, LockError, read_lockfile
from proxy.policy import (
    LEGS,
    LimitRule,
    LoadedPolicy,
    PinRule,
    Policy,
    PolicyError,
    Upstream,
    env_names,
    load_policy,
)
from proxy.untrusted import plain_name

_WIDTH = 100
_COLUMNS = ("TOOL", "SERVER", "SCOPE", "GATED", "LEGS", "LIMITS", "PINS", "VISIBLE")
_TRIFECTA_EFFECT = {
    "block": "trifecta.action=block refuses the completing call",
    "confirm": "trifecta.action=confirm gates the completing call",
    "off": "trifecta.action=off — nothing stops it",
}


def run_check(path: str, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Print the effective policy; 0 when valid, 2 (with `FILE:LINE:` errors on `err`) when not."""
    try:
        loaded = load_policy(path, require_env=False)
    except PolicyError as exc:
        print(exc, file=err)
        return 2
    catalog = Catalog(loaded)
    rules = catalog.profile_rules()
    warnings = [*_env_warnings(loaded), *_rule_of_two(loaded, rules), *_weakenings(loaded.policy, rules)]
    warnings += _unmatched_globs(loaded, rules) + _profile_notes(loaded)
    sections = [
        [f"mcp-guard check: {path}"],
        _header(loaded),
        _tool_table(loaded, rules),
        [line for w in warnings for line in _wrap(w)],
        [_summary(rules, warnings)],
    ]
    text = "\n\n".join("\n".join(s).rstrip() for s in sections if s)
    print(_redact(text, loaded), file=out)
    return 0


def _redact(text: str, loaded: LoadedPolicy) -> str:
    """Put `${NAME}` back wherever an interpolated value would be printed.

    Headers and env are never printed and url/command print their templates; this catches
    the rest (a variable used in a pin, a glob, a description). Values shorter than four
    characters are left: they are not credentials, and replacing them would mangle the text.
    """
    names = {name for template in loaded.env_templates.values() for name in env_names(template)}
    for name in sorted(names):
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, f"${{{name}}}")
    return text


# --------------------------------------------------------------------------- header


def _header(loaded: LoadedPolicy) -> list[str]:
    policy = loaded.policy
    confirm = policy.confirm
    gates = [*(["destructive tools"] if confirm.destructive else []), *(f"'{g}'" for g in confirm.tools)]
    lines = [f"team       {policy.team}" + (f" — {policy.description}" if policy.description else "")]
    lines.append("upstreams")
    for name, upstream in policy.upstreams.items():
        lines += _upstream_lines(loaded, name, upstream)
    lines += [
        f"scopes     {', '.join(policy.scopes) if policy.scopes is not None else '(none: no upstream has a profile)'}",
        f"tools      allow {_globs(policy.tools.allow)}; deny {_globs(policy.tools.deny)}; "
        f"unlisted {policy.tools.unlisted}",
        f"confirm    {', '.join(gates) or 'nothing'}; skip {_globs(confirm.skip)}; "
        f"without elicitation {confirm.without_elicitation}; timeout {confirm.timeout_seconds:g} s",
        f"output     envelope {_on(policy.output.envelope)}, strip_html {_on(policy.output.strip_html)}, "
        f"strip_markdown {_on(policy.output.strip_markdown)}, max_chars {policy.output.max_chars}",
        f"trifecta   {policy.trifecta.action} (idle reset {policy.trifecta.idle_seconds:g} s)",
        f"sampling   {policy.sampling}",
        f"auth       {policy.auth.mode}"
        + (", required" if policy.auth.required else "")
        + (
            f" at {policy.auth.public_url}; logins federated to '{policy.federated_upstream}'"
            if policy.auth.mode == "oauth"
            else ""
        ),
        f"audit      {loaded.audit_path if loaded.audit_path is not None else '(no file: audit lines go to the log)'}",
        _sms_line(policy),
        *_pin_lines(loaded),
    ]
    return lines


def _sms_line(policy: Policy) -> str:
    sms = policy.sms
    if sms is None:
        return "sms        off (no sender, recipient or cost rules)"
    senders = f"senders {_globs(sms.senders.allow)}" if sms.senders.allow else "any sender"
    return (
        f"sms        {senders}{', impersonation blocked' if sms.senders.block_impersonation else ''}; "
        f"recipients in {', '.join(sms.recipients.countries) or 'any country'}"
        f"{', premium blocked' if sms.recipients.block_premium else ''}; show cost {_on(sms.show_cost)}"
    )


def _pin_lines(loaded: LoadedPolicy) -> list[str]:
    """Which tools the lockfile pins (check does not connect, so drift is `mcp-guard pin --diff`'s)."""
    path, pinning = loaded.lockfile_path, loaded.policy.pinning
    name = os.path.relpath(path, loaded.base_dir)
    if not path.exists():
        return [f"pinning    off: no lockfile {name} (run `mcp-guard pin --policy {loaded.path.name}`)"]
    try:
        lock = read_lockfile(path)
    except LockError as exc:
        return [f"pinning    BROKEN: {exc}"]
    lines = [f"pinning    {name}; new tools {pinning.new_tools}, drift {pinning.on_drift}"]
    for server in loaded.policy.upstreams:
        pins = lock.upstreams.get(server)
        tools = ", ".join(printable(t) for t in sorted(pins.tools)) if pins else "(none)"
        lines += _wrap(f"  {server}: pinned {tools}")
        for kind in ("prompts", "resource_templates"):
            if pins is not None and (names := pins.of(kind)):
                lines += _wrap(f"  {server}: pinned {NOUN[kind]}s {', '.join(printable(n) for n in sorted(names))}")
    return lines


def _upstream_lines(loaded: LoadedPolicy, name: str, upstream: Upstream) -> list[str]:
    where = f"upstreams.{name}"
    if upstream.url is not None:
        kind = f"url {_safe_url(loaded.env_templates.get(f'{where}.url', upstream.url))} ({upstream.transport})"
    elif upstream.command is not None:
        args = [loaded.env_templates.get(f"{where}.command[{i}]", a) for i, a in enumerate(upstream.command)]
        kind = f"command {shlex.join(args)}" + (f" (cwd {upstream.cwd})" if upstream.cwd else "")
    else:
        kind = f"builtin {upstream.builtin}"
    profile = f"profile {upstream.profile}" if upstream.profile else "no profile"
    lines = [f"  {name}: {kind}, {profile}, timeout {upstream.timeout_seconds:g} s"]
    for label, values in (("header", upstream.headers), ("env", upstream.env)):
        key = "headers" if label == "header" else "env"
        for var in values:
            template = loaded.env_templates.get(f"{where}.{key}.{var}")
            lines.append(f"    {label} {var}: {_source(template)}")
    return lines


def _source(template: str | None) -> str:
    if template is None:
        return "(set in the policy file)"
    return "(set from " + ", ".join(f"${{{name}}}" for name in env_names(template)) + ")"


def _safe_url(url: str) -> str:
    # Credentials hide in userinfo and query strings; show where the proxy connects, not how.
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    query = "(query hidden)" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def _globs(globs: Iterable[str]) -> str:
    return "[" + ", ".join(globs) + "]"


def _on(flag: bool) -> str:
    return "on" if flag else "OFF"


# --------------------------------------------------------------------------- table


def _tool_table(loaded: LoadedPolicy, rules: list[ToolRule]) -> list[str]:
    rows = [_row(rule) for rule in rules]
    lines = _align([_COLUMNS, *rows]) if rows else []
    for name, profile in loaded.profiles.items():
        if profile is None:
            lines.append(f"{name}: tools are classified at run time from their annotations")
    return lines


def _row(rule: ToolRule) -> tuple[str, ...]:
    if rule.gated:
        gated = "yes: " + "+".join(rule.gate_reasons)
    else:
        gated = "NO (confirm.skip)" if rule.skip_warning else "no"
    legs = "+".join(leg for leg in LEGS if leg in rule.legs) or "-"
    visible = "yes" if rule.visible else f"no: {rule.hidden_reason}"
    return (
        rule.exposed,
        rule.server,
        rule.scope or "-",
        gated,
        legs,
        "; ".join(_limit(limit) for limit in rule.limits) or "-",
        "; ".join(_pin(pin) for pin in rule.pins) or "-",
        visible,
    )


def _limit(limit: LimitRule) -> str:
    parts = []
    if limit.per_minute is not None:
        window = "/min" if limit.window_seconds == 60 else f" per {limit.window_seconds:g} s"
        parts.append(f"{limit.per_minute}{' msgs' if limit.count == 'messages' else ''}{window}")
    if limit.per_day is not None:
        parts.append(f"{limit.per_day}{' msgs' if limit.count == 'messages' else ''}/day")
    if limit.max_recipients is not None:
        parts.append(f"max {limit.max_recipients} recipient{'s' if limit.max_recipients != 1 else ''}")
    return ", ".join(parts)


def _pin(pin: PinRule) -> str:
    parts = [f"{k}={_yaml_scalar(v)}" for k, v in pin.values.items()]
    parts += [f"forbid {name}" for name in pin.forbid]
    return ", ".join(parts)


def _yaml_scalar(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _align(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


# --------------------------------------------------------------------------- warnings


def _env_warnings(loaded: LoadedPolicy) -> list[str]:
    warnings = []
    for var in loaded.missing_env:
        used = [where for where, text in loaded.env_templates.items() if var in env_names(text)]
        warnings.append(
            f"WARNING environment variable {var} is not set ({', '.join(used)}); "
            "serve and stdio refuse to start until it is"
        )
    return warnings


def _rule_of_two(loaded: LoadedPolicy, rules: list[ToolRule]) -> list[str]:
    by_leg = {leg: [r.exposed for r in rules if r.visible and leg in r.legs] for leg in LEGS}
    effect = _TRIFECTA_EFFECT[loaded.policy.trifecta.action]
    warnings = []
    if all(by_leg.values()):
        warnings.append(
            f"WARNING rule of two: this policy exposes untrusted content ({', '.join(by_leg['untrusted'])}), "
            f"sensitive data ({', '.join(by_leg['sensitive'])}) and external actions "
            f"({', '.join(by_leg['external'])}) at once; {effect}"
        )
    for name, profile in loaded.profiles.items():
        if profile is None:
            warnings.append(
                f"NOTE upstream '{name}' has no profile: its read-only tools count as untrusted+sensitive and "
                f"the others as external, so it can complete the trifecta on its own; {effect}"
            )
    return warnings


def _profile_notes(loaded: LoadedPolicy) -> list[str]:
    """Profile entries that can never take effect as written."""
    notes = []
    for name, profile in loaded.profiles.items():
        if profile is None:
            continue
        for tool, entry in profile.tools.items():
            if not plain_name(tool):
                notes.append(
                    f"WARNING profile '{profile.name}' lists '{_shown(tool)}', which is not a plain tool name "
                    "(1-128 of A-Za-z0-9_-./): an upstream tool so named is hidden and refused"
                )
            if entry.untrusted_fields is not None:
                notes.append(
                    f"NOTE profile '{profile.name}' tool '{_shown(tool)}' (upstream '{name}'): untrusted_fields is "
                    "ignored; every string of every result is cleaned (name ids under verbatim to keep them exact)"
                )
    return notes


def _shown(name: str) -> str:
    return name.encode("unicode_escape").decode("ascii")


def _weakenings(policy: Policy, rules: list[ToolRule]) -> list[str]:
    warnings = []
    output = policy.output
    if not output.envelope:
        warnings.append("WARNING output.envelope is off: untrusted tool output reaches the model unmarked")
    if not output.strip_html:
        warnings.append("WARNING output.strip_html is off: HTML in untrusted output reaches the model")
    if not output.strip_markdown:
        warnings.append(
            "WARNING output.strip_markdown is off: markdown in untrusted output reaches the model "
            "(an image link can leak data when rendered)"
        )
    if not policy.confirm.destructive:
        ungated = [r.exposed for r in rules if r.visible and r.destructive and not r.gated]
        warnings.append(
            "WARNING confirm.destructive is off: destructive tools run without a human yes"
            + (f" ({', '.join(ungated)})" if ungated else "")
        )
    for rule in rules:
        if rule.skip_warning:
            what = "destructive" if rule.destructive else "gated by confirm.tools"
            warnings.append(f"WARNING confirm.skip: {rule.exposed} is {what} and runs WITHOUT confirmation")
    if policy.confirm.without_elicitation == "allow":
        warnings.append(
            "WARNING confirm.without_elicitation is allow: a client that cannot ask the user runs gated calls "
            "WITHOUT confirmation"
        )
    if policy.trifecta.action == "off":
        warnings.append("WARNING trifecta.action is off: nothing stops a tainted session from acting externally")
    if policy.sampling == "allow":
        warnings.append("WARNING sampling is allow: upstream servers may have the client's model generate text")
    if policy.tools.unlisted == "allow":
        warnings.append(
            "WARNING tools.unlisted is allow: tools the profile does not list are exposed, classified only from "
            "the upstream's own annotations"
        )
    return warnings


def _unmatched_globs(loaded: LoadedPolicy, rules: list[ToolRule]) -> list[str]:
    """A glob that matches no profiled tool is probably a typo; for `deny` that typo weakens the policy."""
    if any(profile is None for profile in loaded.profiles.values()):
        return []  # tool names are only known at run time
    names = {n for r in rules for n in (r.exposed, r.name)}
    policy = loaded.policy
    fields: list[tuple[str, tuple[str, ...]]] = [
        ("tools.allow", policy.tools.allow),
        ("tools.deny", policy.tools.deny),
        ("confirm.tools", policy.confirm.tools),
        ("confirm.skip", policy.confirm.skip),
        *((f"limits[{i}].tools", limit.tools) for i, limit in enumerate(policy.limits)),
        *((f"pins[{i}].tools", pin.tools) for i, pin in enumerate(policy.pins)),
    ]
    return [
        f"WARNING {where} '{glob}' matches no tool in the profiles (a typo?)"
        for where, globs in fields
        for glob in globs
        if first_match((glob,), *names) is None
    ]


def _summary(rules: list[ToolRule], warnings: list[str]) -> str:
    visible = [r for r in rules if r.visible]
    gated = [r for r in visible if r.gated]
    count = sum(w.startswith("WARNING") for w in warnings)
    return (
        f"valid: {len(visible)} of {len(rules)} profiled tools visible, {len(gated)} of them gated; "
        f"{count} warning{'s' if count != 1 else ''}"
    )


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, _WIDTH, subsequent_indent="    ", break_on_hyphens=False, break_long_words=False)
