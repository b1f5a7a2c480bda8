"""What `serve` does to the garbage collector before it takes requests (proxy.netutil.settle_heap)."""

from __future__ import annotations

import gc
import weakref

from proxy.netutil import YOUNG_GC_THRESHOLD, settle_heap


class _Cycle:
    me: _Cycle | None = None


def test_start_up_objects_are_frozen_and_later_garbage_is_still_collected() -> None:
    threshold = gc.get_threshold()
    before = _Cycle()
    before.me = before
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, *threshold[1:])
        frozen = weakref.ref(before)
        del before
        gc.collect()
        assert frozen() is not None  # start-up's objects are exempt

        after = _Cycle()
        after.me = after
        probe = weakref.ref(after)
        del after
        gc.collect()
        assert probe() is None  # a cycle made once serving is collected as ever
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
