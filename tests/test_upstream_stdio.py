"""`LineBound`, the cap on a stdio upstream's lines (proxy/upstream_stdio.py), as a pure stream filter.

End to end (a real stdio server writing an endless line behind the real proxy) is in
test_result_cap.py; here, for any split of any output into chunks, lines within the cap pass whole
and byte for byte, and the first line past it ends the stream with nothing of it passed on.
"""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import pytest
from anyio.abc import ByteReceiveStream
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.upstream_stdio import LineBound

LIMIT = 64


class Chunks(ByteReceiveStream):
    """A byte stream that yields the given chunks, then ends."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)
        self.closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self._chunks:
            raise anyio.EndOfStream
        return self._chunks.pop(0)

    async def aclose(self) -> None:
        self.closed = True


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def read_all(stream: LineBound) -> list[bytes]:
    async def run() -> list[bytes]:
        out: list[bytes] = []
        while True:
            try:
                out.append(await stream.receive())
            except anyio.EndOfStream:
                return out

    return anyio.run(run)


line = st.binary(max_size=LIMIT).map(lambda b: b.replace(b"\n", b"."))


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(line, max_size=12), tail=line, cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_lines_within_the_cap_pass_whole_and_unchanged(lines: list[bytes], tail: bytes, cuts: list[int]) -> None:
    data = b"".join(x + b"\n" for x in lines) + tail  # an unended last line is dropped, as the SDK drops it
    told: list[str] = []
    got = read_all(LineBound(Chunks(split(data, cuts)), LIMIT, told.append))
    assert b"".join(got) == b"".join(x + b"\n" for x in lines)
    assert all(piece.endswith(b"\n") for piece in got)
    assert told == []


@settings(max_examples=300, deadline=None)
@given(
    before=st.lists(line, max_size=5),
    long=st.binary(min_size=LIMIT + 1, max_size=4 * LIMIT).map(lambda b: b.replace(b"\n", b".")),
    ended=st.booleans(),
    after=st.lists(line, max_size=5),
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
)
def test_the_first_line_past_the_cap_ends_the_stream_and_none_of_it_passes(
    before: list[bytes], long: bytes, ended: bool, after: list[bytes], cuts: list[int]
) -> None:
    head = b"".join(x + b"\n" for x in before)
    data = head + long + (b"\n" if ended else b"") + b"".join(x + b"\n" for x in after)
    told: list[str] = []
    stream = LineBound(Chunks(split(data, cuts)), LIMIT, told.append)
    got = b"".join(read_all(stream))
    assert head.startswith(got) and long not in got
    assert told == [f"its answer is larger than max_result_bytes ({LIMIT} bytes) and was refused"]
    assert read_all(stream) == []  # ended for good: the SDK's drain must not wait on the server


def test_a_line_of_exactly_the_cap_passes() -> None:
    data = b"x" * LIMIT + b"\n"
    assert read_all(LineBound(Chunks([data]), LIMIT, pytest.fail)) == [data]


def test_many_chunks_of_one_line_come_out_as_one_piece() -> None:
    # The SDK joins what it holds with each new chunk: whole lines keep that join linear.
    chunks = [b"a" * 8] * 7 + [b"a\nb"]
    assert read_all(LineBound(Chunks(chunks), LIMIT, pytest.fail)) == [b"a" * 57 + b"\n"]


def test_close_reaches_the_pipe() -> None:
    inner = Chunks([])
    anyio.run(LineBound(inner, LIMIT, pytest.fail).aclose)
    assert inner.closed


def test_extra_attributes_are_the_pipes() -> None:
    inner: Any = Chunks([])
    assert LineBound(inner, LIMIT, pytest.fail).extra_attributes == inner.extra_attributes
