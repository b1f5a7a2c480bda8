"""Proxy keys: how a caller proves which team it belongs to in `auth: keys` mode.

The keys file holds only sha256 digests of keys, each mapped to a team and a label for the
audit log; a key itself is shown once, when `mcp-guard keys new` makes it, and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from proxy.policy import PolicyError

KEY_PREFIX = "mcpg_"
_DIGEST = r"^[0-9a-f]{64}$"
_SLUG = r"^[a-z0-9][a-z0-9_-]*$"


class KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: Annotated[str, Field(pattern=_DIGEST)]
    team: Annotated[str, Field(pattern=_SLUG)]
    label: Annotated[str, Field(min_length=1, max_length=80)]
    created: str | None = None


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    keys: tuple[KeyEntry, ...] = ()


@dataclass(frozen=True)
class KeyMatch:
    team: str
    label: str
    principal: str


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_keys(path: Path) -> KeysFile:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise PolicyError(f"{path}:1: keys file not found") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", 0) + 1
        raise PolicyError(f"{path}:{line}: not valid YAML") from None
    try:
        return KeysFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PolicyError(f"{path}:1: {where}: {first['msg']}") from None


class KeyRing:
    """Looks a presented key up by comparing its digest with every stored one in constant time."""

    def __init__(self, keys: KeysFile) -> None:
        self._entries = [(bytes.fromhex(e.sha256), e) for e in keys.keys]

    def teams(self) -> set[str]:
        return {e.team for _, e in self._entries}

    def match(self, key: str) -> KeyMatch | None:
        presented = hashlib.sha256(key.encode()).digest()
        found: KeyEntry | None = None
        # No early exit: the time taken does not depend on which entry matched, or whether any did.
        for stored, entry in self._entries:
            if hmac.compare_digest(stored, presented):
                found = entry
        if found is None:
            return None
        return KeyMatch(team=found.team, label=found.label, principal=f"key:{found.label}:{found.sha256[:12]}")


def new_key(path: Path, team: str, label: str) -> str:
    """Append a fresh key's digest to the keys file and return the key (shown once)."""
    existing = load_keys(path) if path.exists() else KeysFile()
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    entry = KeyEntry(
        sha256=digest(key), team=team, label=label, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )
    updated = KeysFile(version=existing.version, keys=(*existing.keys, entry))
    body = yaml.safe_dump(updated.model_dump(exclude_none=True), sort_keys=False)
    header = "# mcp-guard proxy keys: sha256 digests only. Add keys with `mcp-guard keys new`.\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(header + body, encoding="utf-8")
    tmp.replace(path)
    return key
