"""scheduler_api.delivery.changes: the worker hears of every replace and delete, and of a lost subscription."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis import Redis

from scheduler_api.delivery import changes
from scheduler_api.delivery.changes import ChangeWatch
from scheduler_api.storage import edits
from scheduler_api.triggers import Trigger


def _eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def _subscribed(conn: Redis) -> bool:
    return bool(conn.pubsub_numsub("sa:changed")[0][1])


HOOK = Trigger(cron="0 9 * * *", url="https://example.com/hook", method="GET")


def test_every_change_is_heard(conn: Redis) -> None:
    """Every replace that changes something and every delete (a replace that changes nothing writes
    nothing, and tells nobody)."""
    watch = ChangeWatch(conn).start()
    try:
        assert _eventually(lambda: _subscribed(conn))
        assert _eventually(lambda: watch.generation >= 1)  # the subscription itself
        for change in (
            lambda: edits.replace(conn, "ws", [Trigger(cron="0 9 * * *", url="https://example.com/", method="GET")]),
            lambda: edits.replace(conn, "other", [HOOK]),
            lambda: edits.delete(conn, "ws"),
        ):
            before = watch.generation
            change()
            assert _eventually(lambda b=before: watch.generation > b)
        settled = watch.generation
        edits.delete(conn, "ws")
        edits.replace(conn, "tenant-2", [HOOK])
        assert _eventually(lambda: watch.generation == settled + 2)
        assert watch.changed_since(settled) == ({"ws", "tenant-2"}, settled + 2)
        assert watch.changed_since(settled + 1) == ({"tenant-2"}, settled + 2)
        assert watch.changed_since(settled + 2) == (set(), settled + 2)
    finally:
        watch.stop()


def test_a_lost_subscription_counts_as_a_change_and_is_made_again(conn: Redis) -> None:
    watch = ChangeWatch(conn).start()
    try:
        assert _eventually(lambda: _subscribed(conn) and watch.generation >= 1)
        before = watch.generation
        assert conn.client_kill_filter(_type="pubsub") == 1  # as a Redis restart or failover would
        assert _eventually(lambda: watch.generation > before)  # messages may have been missed
        assert watch.changed_since(before)[0] is None  # so: anything may have changed
        assert _eventually(lambda: _subscribed(conn), 5)
        settled = watch.generation
        edits.delete(conn, "ws")
        assert _eventually(lambda: watch.generation > settled)
    finally:
        watch.stop()


def test_changes_beyond_memory_read_as_anything(conn: Redis, monkeypatch: Any) -> None:
    monkeypatch.setattr(changes, "KEPT_CHANGES", 3)
    watch = ChangeWatch(conn).start()
    try:
        assert _eventually(lambda: _subscribed(conn) and watch.generation >= 1)
        start = watch.generation
        for i in range(5):
            edits.replace(conn, f"w{i}", [HOOK])
        assert _eventually(lambda: watch.generation == start + 5)
        assert watch.changed_since(start + 2) == ({"w2", "w3", "w4"}, start + 5)
        assert watch.changed_since(start)[0] is None
    finally:
        watch.stop()
