"""`scheduler_api.delivery.worker`: process-wide tuning of the worker (its deliveries are tested in
tests/delivery/ in-process, and as real processes in tests/processes/test_worker.py).
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from redis import Redis

from scheduler_api.delivery import worker
from scheduler_api.settings import Settings


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


def test_rqs_loop_is_started_again_when_it_quits_on_an_error(
    settings: Settings, conn: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rq's loop returns after an error outside a job (Redis gone longer than the retries ride out):
    the worker starts it again, with a fresh registration, until it is asked to stop."""
    calls: list[str] = []

    def work(self: worker.DeliveryWorker, **kwargs: Any) -> bool:
        calls.append(self.name)
        if len(calls) == 2:
            assert self.runtime is not None
            self.runtime.stopping = True  # what SIGTERM does
        return False

    monkeypatch.setattr(worker, "RESTART_AFTER_SECONDS", 0.01)
    monkeypatch.setattr(worker.DeliveryWorker, "work", work)
    worker.run_worker(settings, conn)
    assert len(calls) == 2 and calls[0] != calls[1]
