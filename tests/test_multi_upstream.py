"""SPEC §3: with several upstreams every tool is prefixed `<server>__` and each call reaches the right one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

from tests.harness import FEATURES, MODES, SANDBOX, Proc, calls, proxy_http, proxy_stdio, spawn, write_policy

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    where = tmp_path_factory.mktemp("multi")
    sms_record, feat_record = where / "sms.jsonl", where / "features.jsonl"
    with (
        spawn([*SANDBOX, "--port", "0", "--record", str(sms_record)]) as sms,
        spawn([*FEATURES, "--port", "0", "--record", str(feat_record)]) as feat,
    ):
        policy = write_policy(
            where / "multi.yaml",
            {"smsapi": {"url": sms.url, "profile": "smsapi"}, "feat": {"url": feat.url}},
            scopes=["profile"],
        )
        yield policy, sms_record, feat_record


@pytest.fixture(scope="module")
def proxy(upstreams: tuple[Path, Path, Path]) -> Iterator[Proc]:
    with proxy_http(upstreams[0]) as proc:
        yield proc


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_tools_are_prefixed_and_routed(
    transport: str, mode: str, upstreams: tuple[Path, Path, Path], proxy: Proc
) -> None:
    policy, sms_record, feat_record = upstreams
    target = proxy_stdio(policy) if transport == "stdio" else proxy.url
    async with Client(target, mode=mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "smsapi__get_profile" in names and "feat__echo" in names
        assert "get_profile" not in names and "echo" not in names
        assert "smsapi__get_contacts" not in names  # scope 'contacts' not granted
        assert all("__" in n for n in names)

        before_sms, before_feat = len(calls(sms_record, "get_profile")), len(calls(feat_record, "echo"))
        profile = await client.call_tool("smsapi__get_profile", {})
        echo = await client.call_tool("feat__echo", {"text": "hello"})
        unprefixed = await client.call_tool("echo", {"text": "hello"})
    assert not profile.is_error and "smsapi:get_profile" in profile.content[0].text  # type: ignore[union-attr]
    assert not echo.is_error and "feat:echo" in echo.content[0].text  # type: ignore[union-attr]
    assert unprefixed.is_error
    assert len(calls(sms_record, "get_profile")) == before_sms + 1
    assert len(calls(feat_record, "echo")) == before_feat + 1
