"""An upstream's authorization server is read under a cap too (proxy/federation.py): discovery,
registration and the token exchange stop past 1 MiB of answer, counted after inflating it, and say
so in mcp-guard's words. The server is test_upstream_io's loopback one, answering what each test says.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import anyio
import pytest
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata
from pydantic import AnyHttpUrl, AnyUrl

from proxy.federation import MAX_ANSWER_BYTES, FederationError, Upstream, discover, exchange
from tests.harness import PY, REPO, env_with, write_policy
from tests.test_oauth_login import KEY
from tests.test_upstream_io import Upstream as Loopback
from tests.test_upstream_io import serving

pytestmark = pytest.mark.anyio

BOMB = gzip.compress(b'{"issuer": "' + b"a" * (4 * MAX_ANSWER_BYTES) + b'"}')


def gzipped(head: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(BOMB), BOMB)
    )


def streamed(head: bytes, body: bytes) -> bytes:
    """An event stream with no end in sight (here: four times the cap, then silence)."""
    event = b"data: " + b"x" * 60_000 + b"\n\n"
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for _ in range(4 * MAX_ANSWER_BYTES // len(event)))
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n" + chunks


@pytest.mark.parametrize("reply", [gzipped, streamed], ids=["gzip bomb", "endless event stream"])
async def test_discovery_stops_past_the_cap(reply: object) -> None:
    assert len(BOMB) < 20_000
    async with serving(Loopback(reply)) as url:  # type: ignore[arg-type]
        with pytest.raises(FederationError, match=f"larger than {MAX_ANSWER_BYTES} bytes and was refused"):
            await discover(url)


async def test_the_token_exchange_stops_past_the_cap() -> None:
    async with serving(Loopback(gzipped)) as url:
        metadata = OAuthMetadata(
            issuer=AnyHttpUrl(url), authorization_endpoint=AnyHttpUrl(url), token_endpoint=AnyHttpUrl(url)
        )
        client = OAuthClientInformationFull(client_id="c", redirect_uris=[AnyUrl("http://127.0.0.1/cb")])
        with pytest.raises(FederationError, match=r"token endpoint could not be reached \(its answer is larger than"):
            await exchange(Upstream(metadata, client, url), "code", "verifier", "http://127.0.0.1/cb")


async def test_mcp_guard_login_reads_the_authorization_server_under_the_upstreams_cap(tmp_path: Path) -> None:
    limit = 64 * 1024

    def reply(head: bytes, body: bytes) -> bytes:
        if head.startswith(b"POST "):  # the MCP endpoint: log in first, and here is where to learn how
            return (
                b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nwww-authenticate: Bearer "
                b'resource_metadata="%s/.well-known/oauth-protected-resource"\r\n\r\n' % origin[0].encode()
            )
        return gzipped(head, body)  # the resource's metadata: a bomb

    origin: list[str] = []
    async with serving(Loopback(reply)) as url:
        origin.append(url.rstrip("/"))
        policy = write_policy(
            tmp_path / "team.yaml",
            {"up": {"url": url, "oauth": {}, "max_result_bytes": limit}},
            tools={"unlisted": "allow"},
            trifecta={"action": "off"},
        )
        argv = [PY, "-m", "proxy", "login", "--policy", str(policy), "--no-browser"]
        with anyio.fail_after(60):
            done = await anyio.run_process(argv, env=env_with(KEY), cwd=REPO, check=False)
    err = done.stderr.decode()
    assert done.returncode != 0
    last = err.strip().splitlines()[-1]
    said = f"its answer is larger than max_result_bytes ({limit} bytes) and was refused"
    assert last == f"mcp-guard: login to 'up' failed: {said}"
