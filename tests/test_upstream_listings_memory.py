"""What each credential's upstream connection keeps of a listing: the definitions once for all
credentials, and no raw listing held by an idle connection (the SMSAPI listing is ~200 KB per copy,
and mcp-guard keeps one connection per credential)."""

from __future__ import annotations

import gc
from pathlib import Path

import anyio
import mcp.types as types
import pytest

from proxy.policy.models import Upstream
from proxy.upstream import raw_request
from proxy.upstream_pool import UpstreamPool
from tests.harness import Proc

pytestmark = pytest.mark.anyio


def _listings_alive() -> int:
    """Raw tools/list results (wire JSON) still reachable anywhere in this process."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, dict) and "tools" in o and "resultType" in o)


async def test_credentials_share_one_copy_of_each_definition_and_keep_no_raw_listing(
    sandbox: tuple[Proc, Path],
) -> None:
    async with anyio.create_task_group() as tg:
        pool = UpstreamPool({"smsapi": Upstream(url=sandbox[0].url)}, tg, allow_sampling=False)
        connections = [pool.get("smsapi", f"Bearer token-{i}") for i in range(3)]
        for conn in connections:
            await conn.list_all_tools()
            call = types.CallToolRequest(params=types.CallToolRequestParams(name="get_profile", arguments={}))
            await conn.request(lambda session, call=call: raw_request(session, call))
        assert len({id(conn) for conn in connections}) == 3  # one connection per credential
        first = connections[0].tools
        assert len(first) > 10
        for conn in connections[1:]:
            assert conn.tools == first
            assert all(conn.tools[name] is first[name] for name in first)
        assert _listings_alive() == 0
        tg.cancel_scope.cancel()


def test_a_changed_definition_is_not_shared_with_the_old_one() -> None:
    from proxy.upstream import _shared

    tool = types.Tool(name="t", description="one", input_schema={"type": "object"})
    same = types.Tool(name="t", description="one", input_schema={"type": "object"})
    changed = types.Tool(name="t", description="two", input_schema={"type": "object"})
    assert _shared(tool) is tool and _shared(same) is tool
    assert _shared(changed) is changed
