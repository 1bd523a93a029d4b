"""`scheduler_api.storage.firings`: the compare-and-set commit of due firings, and "run now" firings.

Exactly-once is only visible in Redis here (the batch and outbox keys a losing commit must not write),
so these tests read Redis keys as well as what the receiver got.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue

from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, firings, keys
from scheduler_api.storage import triggers as store
from scheduler_api.triggers import Trigger
from tests.support.clock import EVERY_SECOND, T
from tests.support.engine import deliver, tick_and_deliver
from tests.support.factories import WS, make_trigger
from tests.support.receiver import Receiver, headers_of

RETENTION = firings.Retention(keep_seconds=86_400, keep_done=100, keep_failed=100, keep_history=1000)


def test_a_scheduler_that_read_a_due_entry_late_commits_nothing(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    """The race made deterministic: scheduler B reads the due entries, A fires them, then B
    commits what it read: B's compare-and-set fails for every entry, fired or missed."""
    edits.replace(conn, WS, [make_trigger(f"{receiver.url}/r/{i}") for i in range(10)], now=lambda: T)
    edits.replace(conn, "h", [make_trigger(receiver.url + "/h", "0 * * * *")], now=lambda: T)

    def plans_read_at(now: float) -> list[firings.DuePlan]:
        due = ticking.read_due(conn, now)
        defs = store.load_definitions(conn, [j for j, _ in due])
        return [ticking.plan_entry(j, s, defs[j].cron, defs[j].version, now=now, grace=60) for j, s in due]

    stale = plans_read_at(T + 1.5)
    assert len(stale) == 10 and all(p.firing for p in stale)
    assert ticking.tick(conn, queue, settings, now=T + 1.5).fired == 10  # A wins
    assert firings.commit_due(conn, "loser", stale, now=T + 1.5, retention=RETENTION) == (0, 0)
    assert not conn.exists(keys.batch("loser"))
    assert conn.zscore(keys.OUTBOX, "loser") is None

    late = T + 3 * 3600 + 600  # the hourly trigger is 10 min late: missed
    stale_missed = [p for p in plans_read_at(late) if p.job_id == "h:0"]
    assert stale_missed and stale_missed[0].missed_record is not None
    assert ticking.tick(conn, queue, settings, now=late).missed == 1
    assert firings.commit_due(conn, "loser2", stale_missed, now=late, retention=RETENTION) == (0, 0)
    assert conn.zcard(keys.failed("h")) == 1

    deliver(conn, settings)
    assert sorted(r.path for r in receiver.requests) == sorted(
        [f"/r/{i}" for i in range(10)] + [f"/r/{i}" for i in range(10)]
    )  # T+1 by A's first tick, then the most recent second at the late tick
    assert len({headers_of(r)["idempotency-key"] for r in receiver.requests}) == 20


def test_a_manual_run_never_shares_an_id_with_a_scheduled_firing(
    conn: Redis, settings: Settings, receiver: Receiver
) -> None:
    """Run now at exactly the second a scheduled firing has: two firings, two ids, two records."""
    _, [stored] = edits.replace(
        conn, "ws", [Trigger(cron=EVERY_SECOND, url=receiver.url + "/x", method="GET")], now=lambda: T - 0.5
    )
    manual = firings.enqueue_now(conn, stored, now=T)
    assert manual == "ws:0@2027-01-15T08:00:00.000Z"
    tick_and_deliver(conn, settings, T + 0.1)
    assert sorted(headers_of(r)["idempotency-key"] for r in receiver.to("/x")) == sorted(
        [manual, "ws:0@2027-01-15T08:00:00Z"]
    )
    assert firings.get_record(conn, manual) is not None
    assert firings.get_record(conn, "ws:0@2027-01-15T08:00:00Z") is not None
