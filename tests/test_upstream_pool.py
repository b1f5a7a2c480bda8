"""Many credentials, one upstream: each credential's calls carry its own token, over one shared
connection pool (a TLS context and pool per credential cost ~0.9 MB each)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import pytest

from proxy.caller import Caller
from proxy.policy import Upstream
from proxy.upstream_pool import UpstreamPool
from tests.harness import SANDBOX, records, spawn

pytestmark = pytest.mark.anyio


def _token(authorization: str) -> Caller:
    return Caller(team="t", principal="p", session="s", authorization=authorization)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def test_credentials_share_one_pool_and_keep_their_own_tokens(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    with spawn([*SANDBOX, "--port", "0", "--record", str(record)]) as upstream:
        async with anyio.create_task_group() as tg:
            pool = UpstreamPool({"s": Upstream(url=upstream.url)}, tg, allow_sampling=False)
            alice, bob = pool.get("s", _token("Bearer alice")), pool.get("s", _token("Bearer bob"))
            assert alice is not bob
            assert alice._transport is bob._transport is not None
            for conn in (alice, bob, alice):
                result = await conn.request(lambda s: s.call_tool("get_profile", {}))
                assert not result.is_error
            # One credential's connection closing leaves the shared pool to the others.
            await alice.close()
            assert not (await bob.request(lambda s: s.call_tool("get_profile", {}))).is_error
            await pool.aclose()
            tg.cancel_scope.cancel()
    seen = [r["auth_sha256"] for r in records(record) if r.get("tool") == "get_profile"]
    assert seen == [digest(t) for t in ("Bearer alice", "Bearer bob", "Bearer alice", "Bearer bob")]
