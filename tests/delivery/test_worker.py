"""`scheduler_api.delivery.worker`: process-wide tuning of the worker (its deliveries are tested in
tests/delivery/ in-process, and as real processes in tests/processes/test_worker.py).
"""

from __future__ import annotations

import gc

from scheduler_api.delivery import worker


def test_tune_gc_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        worker.tune_gc()
        assert gc.get_threshold() == (worker.GC_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() > 0

        # Cyclic garbage is still collected, only less often.
        class Node:
            other: object

        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
