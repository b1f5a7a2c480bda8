"""The OAuth grant store (SPEC §13): encrypted at rest, bound to its team and upstream, 0600,
and a missing or wrong key never yields a grant."""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

import pytest
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from proxy.grants import GrantError, GrantStore, store_key

pytestmark = pytest.mark.anyio

KEY = secrets.token_hex(32).encode()
TOKEN = OAuthToken(access_token="at-" + secrets.token_hex(8), refresh_token="rt-secret", scope="sms profile")


async def test_tokens_round_trip_encrypted_and_private(tmp_path: Path) -> None:
    store = GrantStore(tmp_path / "t.grant", KEY, team="support", upstream="smsapi")
    await store.set_client_info(
        OAuthClientInformationFull(client_id="c1", redirect_uris=["http://127.0.0.1:5000/callback"])  # type: ignore[list-item]
    )
    await store.set_tokens(TOKEN)
    raw = (tmp_path / "t.grant").read_bytes()
    assert b"at-" not in raw and b"rt-secret" not in raw and b"c1" not in raw
    assert stat.S_IMODE((tmp_path / "t.grant").stat().st_mode) == 0o600
    again = GrantStore(tmp_path / "t.grant", KEY, team="support", upstream="smsapi")
    assert (await again.get_tokens()) == TOKEN
    assert (await again.get_client_info()).client_id == "c1"  # type: ignore[union-attr]
    assert again.granted_scopes() == {"sms", "profile"}


@pytest.mark.parametrize(
    ("key", "team", "upstream"),
    [
        (secrets.token_hex(32).encode(), "support", "smsapi"),  # another key
        (KEY, "marketing", "smsapi"),  # another team's file
        (KEY, "support", "elks"),  # another upstream's file
    ],
)
async def test_a_wrong_key_or_a_foreign_file_fails_closed(tmp_path: Path, key: bytes, team: str, upstream: str) -> None:
    await GrantStore(tmp_path / "t.grant", KEY, team="support", upstream="smsapi").set_tokens(TOKEN)
    store = GrantStore(tmp_path / "t.grant", key, team=team, upstream=upstream)
    with pytest.raises(GrantError, match="cannot decrypt"):
        await store.get_tokens()


async def test_a_tampered_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.grant"
    await GrantStore(path, KEY, team="t", upstream="u").set_tokens(TOKEN)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(GrantError):
        await GrantStore(path, KEY, team="t", upstream="u").get_tokens()
    path.write_bytes(b"not a grant")
    with pytest.raises(GrantError, match="not an mcp-guard grant file"):
        await GrantStore(path, KEY, team="t", upstream="u").get_tokens()


def test_the_key_must_be_given_and_long_enough(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MCP_GUARD_STORE_KEY", raising=False)
    with pytest.raises(GrantError, match="MCP_GUARD_STORE_KEY"):
        store_key()
    monkeypatch.setenv("MCP_GUARD_STORE_KEY", "short")
    with pytest.raises(GrantError, match="at least 32 bytes"):
        store_key()
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY.decode() + "\n")
    assert store_key(str(keyfile)) == KEY
    with pytest.raises(GrantError, match="cannot read"):
        store_key(str(tmp_path / "missing"))
