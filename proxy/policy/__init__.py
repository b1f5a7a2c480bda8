"""Team policies and upstream profiles: pydantic models and a loader that reports `FILE:LINE`.

A policy is security configuration, so the loader is strict: unknown keys, duplicate keys,
wrong types and missing `${VAR}`s are errors, and every error names the file and line. No
error ever quotes a value, because values may be secrets interpolated from the environment.

The schema is in `models` (policies), `profile` (profiles) and `fields` (their field types);
`source` reads a file with the line of every key and turns every problem into `FILE:LINE: message`;
`interpolation` fills in `${VAR}`s; `loader` puts them together (`load_policy`, `load_profile`) and
finds the shipped profiles (`policies_dir`).
"""

from __future__ import annotations

from proxy.policy.fields import LEGS, EnvValue, FieldPath, Glob, Globs, Leg, Seconds, ServerName, Slug
from proxy.policy.interpolation import env_names
from proxy.policy.loader import LoadedPolicy, load_policy, load_profile, policies_dir
from proxy.policy.models import (
    AuditPolicy,
    AuthPolicy,
    CapacityPolicy,
    ConfirmPolicy,
    LimitRule,
    OutputPolicy,
    PinningPolicy,
    PinRule,
    Policy,
    RecipientsPolicy,
    SendersPolicy,
    SmsPolicy,
    StatePolicy,
    ToolsPolicy,
    TrifectaPolicy,
    Upstream,
    UpstreamOAuth,
)
from proxy.policy.profile import (
    ArgSpec,
    Format,
    Profile,
    ProfileAnnotations,
    ProfileContent,
    ProfileTool,
    RecipientSpec,
    SmsPrice,
)
from proxy.policy.source import Loc, M, PolicyError

__all__ = [
    "LEGS",
    "ArgSpec",
    "AuditPolicy",
    "AuthPolicy",
    "CapacityPolicy",
    "ConfirmPolicy",
    "EnvValue",
    "FieldPath",
    "Format",
    "Glob",
    "Globs",
    "Leg",
    "LimitRule",
    "LoadedPolicy",
    "Loc",
    "M",
    "OutputPolicy",
    "PinRule",
    "PinningPolicy",
    "Policy",
    "PolicyError",
    "Profile",
    "ProfileAnnotations",
    "ProfileContent",
    "ProfileTool",
    "RecipientSpec",
    "RecipientsPolicy",
    "Seconds",
    "SendersPolicy",
    "ServerName",
    "Slug",
    "SmsPolicy",
    "SmsPrice",
    "StatePolicy",
    "ToolsPolicy",
    "TrifectaPolicy",
    "Upstream",
    "UpstreamOAuth",
    "env_names",
    "load_policy",
    "load_profile",
    "policies_dir",
]
