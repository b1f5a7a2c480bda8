from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import SANDBOX, Proc, spawn


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Path]]:
    """The SMSAPI sandbox over HTTP, one per test module, with its own record of every call it received."""
    record = tmp_path_factory.mktemp("sandbox") / "record.jsonl"
    with spawn([*SANDBOX, "--port", "0", "--record", str(record)]) as proc:
        yield proc, record
