"""The bounded table of short-lived login entries (pure, with a hand-driven clock)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.expiring import Expiring


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_its_seconds_and_no_longer() -> None:
    clock = Clock()
    table: Expiring[str] = Expiring(10, 5, clock)
    table.put("a", "one")
    clock.now = 10
    assert table.get("a") == "one"
    clock.now = 10.5
    assert table.get("a") is None
    assert len(table) == 0  # an expired entry read is gone


def test_past_the_limit_the_oldest_goes_first_and_pop_is_single_use() -> None:
    clock = Clock()
    table: Expiring[int] = Expiring(60, 3, clock)
    for i, key in enumerate("abcd"):
        clock.now = i
        table.put(key, i)
    assert table.get("a") is None and [table.get(k) for k in "bcd"] == [1, 2, 3]
    table.pop("c")
    table.pop("c")  # twice is harmless
    assert table.get("c") is None and len(table) == 2


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.floats(0, 30)), max_size=60))
def test_never_more_than_the_limit_and_nothing_older_than_its_seconds(steps: list[tuple[str, float]]) -> None:
    clock = Clock()
    table: Expiring[float] = Expiring(20, 4, clock)
    put_at: dict[str, float] = {}
    for key, advance in steps:
        clock.now += advance
        table.put(key, clock.now)
        put_at[key] = clock.now
        assert len(table) <= 4
    for key, at in put_at.items():
        got = table.get(key)
        assert got is None or (got == at and clock.now - at <= 20)
