"""`tick.plan_entry` with a trigger's schedule bounds and jitter: start_at / end_at, one-off `at`
triggers, and jittered send times (the firing id and its nominal time unchanged)."""

from __future__ import annotations

import subprocess
import sys

from redis import Redis
from rq import Queue

from scheduler_api.engine import tick as ticking
from scheduler_api.policy import Policy, jitter_offset
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, keys
from scheduler_api.triggers import Trigger
from tests.support.clock import EVERY_SECOND, T, iso_second
from tests.support.engine import deliver, record_of
from tests.support.factories import WS
from tests.support.receiver import Receiver, headers_of

JID = "ws:0"


def test_end_at_makes_its_run_time_the_last() -> None:
    p = ticking.plan_entry(JID, T + 3, EVERY_SECOND, "v", now=T + 3.2, grace=60, policy=Policy(end_at=T + 3))
    assert p.firing is not None and p.firing.scheduled_at == T + 3 and p.next_score is None


def test_run_times_passed_over_stay_within_the_bounds() -> None:
    bounds = Policy(start_at=T, end_at=T + 10)
    p = ticking.plan_entry(JID, T + 1, EVERY_SECOND, "v", now=T + 5.5, grace=60, policy=bounds)
    assert p.firing is not None and p.firing.scheduled_at == T + 5 and p.next_score == T + 6
    late = ticking.plan_entry(JID, T + 1, EVERY_SECOND, "v", now=T + 30, grace=60, policy=bounds)
    assert late.firing is not None and late.firing.scheduled_at == T + 10 and late.next_score is None


def test_an_entry_out_of_its_bounds_fires_nothing() -> None:
    # An entry at T+1 for a trigger that now starts at T+100: no run time from T+1 to now.
    p = ticking.plan_entry(JID, T + 1, EVERY_SECOND, "v", now=T + 1.5, grace=60, policy=Policy(start_at=T + 100))
    assert p.firing is None and p.missed_record is None and p.next_score == T + 100


def test_a_one_off_fires_once_then_ends() -> None:
    p = ticking.plan_entry(JID, T + 7, None, "v", now=T + 7.3, grace=60, at=T + 7)
    assert p.firing is not None and p.firing.id == f"{JID}@{iso_second(T + 7)}" and p.next_score is None
    missed = ticking.plan_entry(JID, T + 7, None, "v", now=T + 70, grace=60, at=T + 7)
    assert missed.firing is None and missed.missed_record is not None and missed.next_score is None
    off = ticking.plan_entry(JID, T + 7, None, "v", now=T + 7.3, grace=60, at=T + 7, fire=False)
    assert off.firing is None and off.missed_record is None and off.next_score is None


def test_jitter_sets_the_send_time_and_keeps_the_nominal_time() -> None:
    for k in range(50):
        p = ticking.plan_entry(JID, T + k, EVERY_SECOND, "v", now=T + k, grace=60, policy=Policy(jitter_seconds=7))
        assert p.firing is not None
        fid = f"{JID}@{iso_second(T + k)}"
        assert p.firing.id == fid and p.firing.scheduled_at == T + k
        assert p.firing.send_at == T + k + jitter_offset(fid, 7)
        assert 0 <= p.firing.send_at - (T + k) < 7
    offsets = {jitter_offset(f"{JID}@{iso_second(T + k)}", 60) for k in range(200)}
    assert len(offsets) > 30  # spread over the window


def test_jitter_offsets_are_the_same_in_another_process() -> None:
    ids = [f"ws:{i}@{iso_second(T + i)}" for i in range(20)]
    code = (
        "import sys; from scheduler_api.policy import jitter_offset; "
        "print(' '.join(str(jitter_offset(i, 3600)) for i in sys.argv[1:]))"
    )
    out = subprocess.run([sys.executable, "-c", code, *ids], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(jitter_offset(i, 3600)) for i in ids]


def test_overlap_holds_the_firing_and_max_firings_is_planned() -> None:
    p = ticking.plan_entry(JID, T + 1, EVERY_SECOND, "v", now=T + 1, grace=60, policy=Policy(overlap="skip"))
    assert p.firing is not None and p.firing.held and p.overlap == "skip" and p.max_firings == 0
    q = ticking.plan_entry(JID, T + 1, EVERY_SECOND, "v", now=T + 1, grace=60, policy=Policy(max_firings=4))
    assert q.firing is not None and not q.firing.held and q.max_firings == 4
    plain = ticking.plan_entry(JID, T + 1, EVERY_SECOND, "v", now=T + 1, grace=60)
    assert plain.firing is not None and not plain.firing.held and plain.firing.send_at is None


def test_a_one_off_through_the_tick(conn: Redis, settings: Settings, queue: Queue, receiver: Receiver) -> None:
    edits.replace(conn, WS, [Trigger(at=iso_second(T + 2), url=receiver.url + "/once", method="GET")], now=lambda: T)
    assert conn.zscore(keys.SCHEDULE, "ws:0") == T + 2
    assert ticking.tick(conn, queue, settings, now=T + 1.5).fired == 0
    assert ticking.tick(conn, queue, settings, now=T + 2.5).fired == 1
    assert conn.zscore(keys.SCHEDULE, "ws:0") is None  # ended
    deliver(conn, settings)
    [request] = receiver.to("/once")
    assert headers_of(request)["x-scheduler-scheduled-at"] == iso_second(T + 2)
    assert record_of(conn, "ws:0", T + 2)["outcome"] == "delivered"  # type: ignore[index]


def test_start_and_end_through_the_tick(conn: Redis, settings: Settings, queue: Queue, receiver: Receiver) -> None:
    trigger = Trigger(
        cron=EVERY_SECOND,
        url=receiver.url + "/b",
        method="GET",
        start_at=iso_second(T + 3),
        end_at=iso_second(T + 4),
    )
    edits.replace(conn, WS, [trigger], now=lambda: T)
    assert conn.zscore(keys.SCHEDULE, "ws:0") == T + 3
    fired = [ticking.tick(conn, queue, settings, now=T + k + 0.1).fired for k in range(1, 7)]
    assert fired == [0, 0, 1, 1, 0, 0] and conn.zscore(keys.SCHEDULE, "ws:0") is None
