"""Loading a team policy with its profiles: `load_policy`, `load_profile` and `LoadedPolicy`.

A policy is read and validated (`source`), its `${VAR}`s are filled in (`interpolation`), each
upstream's profile is found (a shipped one by name under `policies_dir()`, or a file relative to the
policy) and read, and the scopes the policy grants are checked against what the profiles define.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import proxy
from proxy import credentials
from proxy.policy.fields import SLUG
from proxy.policy.interpolation import _interpolate, env_names
from proxy.policy.models import Policy, Upstream
from proxy.policy.profile import Profile
from proxy.policy.source import Loc, PolicyError, _line_for, _read_yaml, _validate
from proxy.redact import secret_name

# --------------------------------------------------------------------------- loaded result


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    path: Path
    profiles: dict[str, Profile | None]
    missing_env: list[str] = field(default_factory=list)
    # Dotted key path -> the string as written, for every value that referenced ${VAR}:
    # lets `check` show where a value comes from without ever showing the value.
    env_templates: dict[str, str] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def audit_path(self) -> Path | None:
        p = self.policy.audit.path
        return None if p is None else self.base_dir / p

    def grant_path(self, server: str) -> Path:
        """Where `mcp-guard login` keeps this team's encrypted OAuth grant for `server`."""
        oauth = self.policy.upstreams[server].oauth
        name = oauth.grant_file if oauth is not None and oauth.grant_file else f"{self.path.stem}.{server}.grant"
        return self.base_dir / name

    @property
    def oauth_dir(self) -> Path:
        """Where `auth.mode: oauth` keeps its clients, hashed tokens and each login's upstream grant."""
        return self.base_dir / (self.policy.auth.store_dir or f"{self.path.stem}.oauth")

    @property
    def lockfile_path(self) -> Path:
        """Where `mcp-guard pin` keeps this policy's pins; pinning is on when the file exists."""
        return self.base_dir / (self.policy.pinning.lockfile or f"{self.path.stem}.lock.json")


def policies_dir() -> Path:
    """Shipped policies: inside the package in a wheel, beside it in a source checkout."""
    packaged = Path(proxy.__file__).parent / "policies"
    return packaged if packaged.is_dir() else Path(proxy.__file__).parent.parent / "policies"


# --------------------------------------------------------------------------- profiles


def _shipped_profiles() -> list[str]:
    return sorted(p.stem for p in (policies_dir() / "profiles").glob("*.yaml"))


def _profile_path(ref: str, base_dir: Path, shown: str | None = None) -> Path:
    """A profile reference is a path when it looks like one, otherwise a shipped profile name.

    `shown` is the reference as written when it came from `${VAR}`: an error quotes that, never
    the value, which may be a secret put in the wrong place."""
    shown = ref if shown is None else shown
    if "/" in ref or "\\" in ref or ref.endswith((".yaml", ".yml")):
        path = base_dir / ref
        if not path.is_file():
            raise ValueError(f"profile file {shown} not found (relative to {base_dir})")
        return path
    path = policies_dir() / "profiles" / f"{ref}.yaml"
    if not SLUG.fullmatch(ref) or not path.is_file():
        shipped = _shipped_profiles()
        close = difflib.get_close_matches(ref, shipped, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown profile '{shown}'{hint}; shipped profiles: {', '.join(shipped) or 'none'}")
    return path


def _read_profile(path: Path) -> Profile:
    data, lines = _read_yaml(path, "profile")
    profile = _validate(Profile, data, lines, str(path), [])
    errors = [
        (lines.get(("groups", group, i), 1), f"group '{group}' lists '{name}', which is not under tools")
        for group, names in profile.groups.items()
        for i, name in enumerate(names)
        if name not in profile.tools
    ]
    if errors:
        raise PolicyError([f"{path}:{line}: {msg}" for line, msg in errors])
    return profile


def load_profile(path_or_name: str | Path, *, base_dir: Path | str) -> Profile:
    """A shipped profile by name, or a profile file by path (relative to `base_dir`)."""
    try:
        path = _profile_path(str(path_or_name), Path(base_dir))
    except ValueError as exc:
        raise PolicyError(f"{path_or_name}:1: {exc}") from None
    return _read_profile(path)


# --------------------------------------------------------------------------- policies


def load_policy(path: str | Path, *, env: Mapping[str, str] | None = None, require_env: bool = True) -> LoadedPolicy:
    """Load and validate a team policy with its profiles; raise `PolicyError` on any problem."""
    path = Path(path)
    file = str(path)
    data, lines = _read_yaml(path, "policy")
    interp = _interpolate(data, lines, os.environ if env is None else env, require_env)
    policy = _validate(Policy, data, lines, file, interp.errors)
    profiles = _load_profiles(policy, lines, path, interp.templates)
    _check_scopes(policy, profiles, lines, file)
    for name, upstream in policy.upstreams.items():
        _register_credentials(upstream, interp.templates, interp.env, f"upstreams.{name}")
    return LoadedPolicy(
        policy=_resolve_cwds(policy, path.parent),
        path=path,
        profiles=profiles,
        missing_env=interp.missing,
        env_templates=interp.templates,
    )


def _load_profiles(
    policy: Policy, lines: dict[Loc, int], path: Path, templates: Mapping[str, str]
) -> dict[str, Profile | None]:
    profiles: dict[str, Profile | None] = {}
    for name, upstream in policy.upstreams.items():
        if upstream.profile is None:
            profiles[name] = None
            continue
        try:
            ref_path = _profile_path(upstream.profile, path.parent, templates.get(f"upstreams.{name}.profile"))
        except ValueError as exc:
            line = _line_for(lines, ("upstreams", name, "profile"))
            raise PolicyError(f"{path}:{line}: upstreams.{name}.profile: {exc}") from None
        profiles[name] = _read_profile(ref_path)
    return profiles


def _check_scopes(policy: Policy, profiles: dict[str, Profile | None], lines: dict[Loc, int], file: str) -> None:
    profiled = [name for name, p in profiles.items() if p is not None]
    if not profiled:
        return
    if policy.scopes is None:
        line = _line_for(lines, ("upstreams", profiled[0], "profile"))
        raise PolicyError(
            f"{file}:{line}: scopes is required when an upstream has a profile "
            f"(upstreams.{profiled[0]}.profile); list the scopes this team is granted, e.g. scopes: [sms]"
        )
    known = sorted(set().union(*(p.scopes() for p in profiles.values() if p is not None)))
    errors = []
    for i, scope in enumerate(policy.scopes):
        if scope not in known:
            close = difflib.get_close_matches(scope, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            errors.append(
                f"{file}:{_line_for(lines, ('scopes', i))}: unknown scope '{scope}'{hint}; "
                f"the profiles know: {', '.join(known) or 'no scopes'}"
            )
    if errors:
        raise PolicyError(errors)


def _resolve_cwds(policy: Policy, base_dir: Path) -> Policy:
    # A relative cwd means relative to the policy file, like every other path in it.
    upstreams = {
        name: up.model_copy(update={"cwd": str(base_dir / up.cwd)}) if up.cwd and not Path(up.cwd).is_absolute() else up
        for name, up in policy.upstreams.items()
    }
    return policy.model_copy(update={"upstreams": upstreams})


def _register_credentials(upstream: Upstream, templates: Mapping[str, str], env: Mapping[str, str], where: str) -> None:
    """What one upstream's configuration sends as credentials, so no answer shows it (proxy.credentials).

    A header or environment value counts if its name says it is a credential (`Authorization`,
    `X-Api-Key`, `ELKS_PASSWORD`) or if it came from `${VAR}`, the policy format's way to keep a
    secret out of the file; in a URL, the userinfo and secret-named query values, and every `${VAR}`.
    `templates` maps each interpolated location (`upstreams.NAME.headers.X`) to its text as written.
    """
    for location, template in templates.items():
        if location.startswith(where + ".") and location[len(where) + 1 :].split(".")[0] in _SENDS:
            for name in env_names(template):
                credentials.register(env.get(name))
    for name, value in upstream.headers.items():
        if secret_name(name):
            credentials.register(value)
            credentials.register(value.partition(" ")[2].strip())  # "Bearer abc...": the token alone, too
    for name, value in upstream.env.items():
        if secret_name(name):
            credentials.register(value)
    if upstream.url is not None:
        parts = urlsplit(upstream.url)
        credentials.register(parts.password)
        for name, value in parse_qsl(parts.query, keep_blank_values=False):
            if secret_name(name):
                credentials.register(value)
    if upstream.oauth is not None:
        credentials.register(upstream.oauth.client_secret)


_SENDS = frozenset({"url", "headers", "env", "oauth"})  # the parts of an upstream's entry sent to it
