"""OAuth grants mcp-guard holds for its upstreams, encrypted at rest (SPEC §13).

One file per team and upstream: the registered client and its tokens as JSON, sealed with
AES-256-GCM under a key derived (HKDF-SHA256) from `MCP_GUARD_STORE_KEY` or a key file, bound
to the team and upstream it belongs to. The file is written whole (a temporary file, then a
rename) with mode 0600. A missing or wrong key never yields a grant: it is an error that names
what to fix, and the upstream is not called.

It is the SDK's `TokenStorage`, so `OAuthClientProvider` reads and saves through it, refresh
tokens included when the server rotates them.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from proxy import credentials

KEY_ENV = "MCP_GUARD_STORE_KEY"
_MAGIC = b"mcpg-grant-v1"


class GrantError(Exception):
    """The grant store cannot be used; the message says why and what to do."""


def store_key(key_file: str | None = None) -> bytes:
    """The store key's material: a key file, else MCP_GUARD_STORE_KEY; at least 32 bytes."""
    if key_file is not None:
        try:
            raw = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise GrantError(f"cannot read the grant store key file {key_file}: {exc.strerror}") from None
    else:
        raw = os.environ.get(KEY_ENV, "").strip().encode()
    if not raw:
        raise GrantError(
            f"OAuth grants are stored encrypted and need a key: set {KEY_ENV} (or --store-key-file) to at least "
            "32 bytes of secret randomness, e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`"
        )
    if len(raw) < 32:
        raise GrantError(f"the grant store key ({KEY_ENV}) must be at least 32 bytes")
    return raw


class GrantStore:
    def __init__(self, path: Path, key: bytes, *, team: str, upstream: str) -> None:
        self.path = path
        self._binding = f"{team}\x00{upstream}".encode()
        self._aead = AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=_MAGIC, info=b"grant-store").derive(key))

    # -- the SDK's TokenStorage ------------------------------------------------------------------

    async def get_tokens(self) -> OAuthToken | None:
        raw = self.read().get("tokens")
        tokens = OAuthToken.model_validate(raw) if raw else None
        _withhold(tokens)
        return tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        # `expires_in` is relative to when the token was issued; the absolute time lets a process
        # started later refresh before the upstream has to refuse the old token.
        _withhold(tokens)
        expires_at = time.time() + tokens.expires_in if tokens.expires_in is not None else None
        self.update(tokens=tokens.model_dump(mode="json", exclude_none=True), expires_at=expires_at)

    def expires_at(self) -> float | None:
        value = self.read().get("expires_at")
        return float(value) if isinstance(value, int | float) else None

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        raw = self.read().get("client")
        info = OAuthClientInformationFull.model_validate(raw) if raw else None
        credentials.register(info.client_secret if info is not None else None)
        return info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        credentials.register(client_info.client_secret)
        self.update(client=client_info.model_dump(mode="json", exclude_none=True))

    # -- the file ----------------------------------------------------------------------------------

    def exists(self) -> bool:
        return self.path.exists()

    def granted_scopes(self) -> set[str] | None:
        """The scopes the upstream granted, if it said (None: not recorded)."""
        tokens = self.read().get("tokens") or {}
        scope = tokens.get("scope")
        return set(scope.split()) if isinstance(scope, str) else None

    def read(self) -> dict[str, Any]:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise GrantError(f"cannot read the grant file {self.path}: {exc.strerror}") from None
        if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 12 + 16:
            raise GrantError(f"{self.path} is not an mcp-guard grant file")
        nonce = blob[len(_MAGIC) : len(_MAGIC) + 12]
        try:
            plain = self._aead.decrypt(nonce, blob[len(_MAGIC) + 12 :], _MAGIC + self._binding)
        except InvalidTag:
            raise GrantError(
                f"cannot decrypt {self.path}: wrong {KEY_ENV}, or the file belongs to another team or upstream "
                "(run `mcp-guard login` again to replace it)"
            ) from None
        data = json.loads(plain)
        return data if isinstance(data, dict) else {}

    def update(self, **fields: Any) -> None:
        data = {**self.read(), **fields}
        nonce = secrets.token_bytes(12)
        blob = _MAGIC + nonce + self._aead.encrypt(nonce, json.dumps(data).encode(), _MAGIC + self._binding)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


def _withhold(tokens: OAuthToken | None) -> None:
    """A grant's tokens are sent upstream: an upstream that echoes one never shows it downstream."""
    if tokens is not None:
        credentials.register(tokens.access_token, lasting=False)
        credentials.register(tokens.refresh_token, lasting=False)
