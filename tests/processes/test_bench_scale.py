"""`bench.scale` keeps working: its loading, its sweep pass and one idle-scheduler measurement at a tiny
size, against the session's private redis-server and a real `scheduler-api scheduler` process.

Not a performance test: it asserts what was loaded and that each figure was read, never how fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import pytest
from redis import Redis

from bench.scale import sizes
from bench.scale_rest import cron_of, idle_scheduler, load, seed_histories, time_sweep, workspace_counts
from scheduler_api import cron as cronlib
from scheduler_api.settings import Settings
from scheduler_api.storage import keys

pytestmark = pytest.mark.slow


def test_loads_triggers_sweeps_and_measures_an_idle_scheduler(
    conn: Redis, redis_url: str, settings: Settings, tmp_path: Path
) -> None:
    counts = workspace_counts(500)
    assert counts == [100] * 5
    load(conn, counts, today=dt.datetime.now(dt.UTC).date())
    assert conn.zcard(keys.SCHEDULE) == 500
    assert conn.hlen(keys.workspace("ws-4")) == 100

    seed_histories(conn, len(counts), records=3, now=dt.datetime.now(dt.UTC).timestamp())
    assert conn.zcard(keys.history("ws-0")) == 3
    sweep = time_sweep(conn, settings)
    assert sweep["steps"] >= 1 and sweep["keys_in_redis"] > 0
    assert conn.zcard(keys.history("ws-0")) == 3  # recent records of a workspace with triggers stay

    idle = idle_scheduler(conn, redis_url, seconds=1.5, warmup=0.2, tmpdir=tmp_path)
    assert idle["ticks"] >= 1
    assert idle["cpu_ms_per_tick"] is not None and idle["rss_kb"]
    assert conn.zcard(keys.OUTBOX) == 0  # nothing was due


def test_no_loaded_cron_is_due_within_four_months() -> None:
    now = dt.datetime.now(dt.UTC)
    for w, i in ((0, 0), (23, 59), (7, 31)):
        first = cronlib.parse(cron_of(i, w, now.date())).next_after(now.timestamp())
        assert first > now.timestamp() + 120 * 86_400


def test_size_lists_are_checked() -> None:
    assert sizes("10000,100_000") == [10_000, 100_000]
    for bad in ("", "ten", "0", "3000000"):
        with pytest.raises(argparse.ArgumentTypeError):
            sizes(bad)
