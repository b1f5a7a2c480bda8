"""What each credential's upstream connection keeps of a listing: the definitions once for all
credentials, and no raw listing held by an idle connection (the SMSAPI listing is ~200 KB per copy,
and mcp-guard keeps one connection per credential)."""

from __future__ import annotations

import gc
from pathlib import Path

import anyio
import mcp.types as types
import pytest

from proxy.caller import Caller
from proxy.gateway import Gateway
from proxy.policy import load_policy
from proxy.policy.models import Upstream
from proxy.upstream_pool import UpstreamPool
from proxy.upstream_requests import raw_request
from tests.harness import Proc, write_policy

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
        connections = [
            pool.get("smsapi", Caller(team="t", principal=f"p{i}", session="s", authorization=f"Bearer token-{i}"))
            for i in range(3)
        ]
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
    from proxy.upstream_requests import _shared

    tool = types.Tool(name="t", description="one", input_schema={"type": "object"})
    same = types.Tool(name="t", description="one", input_schema={"type": "object"})
    changed = types.Tool(name="t", description="two", input_schema={"type": "object"})
    assert _shared(tool) is tool and _shared(same) is tool
    assert _shared(changed) is changed


async def test_a_clients_tools_list_keeps_no_raw_listing_and_no_copy_per_credential(
    sandbox: tuple[Proc, Path], tmp_path: Path
) -> None:
    """The listing a client asks for (the SDK client asks before its first call, for output schemas)
    goes the same way as the pipeline's own: one copy of each definition, nothing raw kept."""
    policy = write_policy(
        tmp_path / "team.yaml", {"smsapi": {"url": sandbox[0].url}}, team="t", scopes=["sms", "profile", "contacts"]
    )
    gateway = Gateway([load_policy(policy, env={})])
    async with gateway.running():
        pipeline = gateway.pipeline("t")
        callers = [Caller(team="t", principal=f"p{i}", session=f"s{i}", authorization=f"Bearer k{i}") for i in range(3)]
        listed = [await pipeline.list_tools(caller, None) for caller in callers]
        assert all(page.tools and page.tools == listed[0].tools for page in listed)
        kept = [pipeline.pool.get("smsapi", caller).tools for caller in callers]
        assert len(kept[0]) > 10
        assert all(tools[name] is kept[0][name] for tools in kept[1:] for name in kept[0])
        assert _listings_alive() == 0


def test_a_definition_pydantic_cannot_write_is_kept_as_is_not_shared() -> None:
    from proxy.upstream_requests import _shared

    deep: dict[str, object] = {}
    inner = deep
    for _ in range(3000):
        inner["a"] = {}
        inner = inner["a"]  # type: ignore[assignment]
    tool = types.Tool(name="deep", input_schema={"type": "object", "properties": deep})
    assert _shared(tool) is tool
