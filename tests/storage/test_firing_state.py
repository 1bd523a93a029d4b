"""The firing state of triggers in Redis (``sa:state:{ws}``): the overlap rule decided where firings
are committed, held firings letting go in `record`, ``max_firings`` ending the schedule entry, and
`triggers.write` keeping the state in step with the definitions.

The scheduler ticks at an injected time (tests.support.clock.T); the worker is a real burst worker
sending to the real receiver. Who is active and who waits is only visible in Redis, so these
tests read the state hash as well as the records and what the receiver got.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from redis import Redis
from rq import Queue

from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, firings, keys
from scheduler_api.storage import triggers as store
from scheduler_api.storage.counters import Counter
from scheduler_api.triggers import Trigger
from tests.support.clock import EVERY_SECOND, T, iso_second
from tests.support.engine import deliver, record_of
from tests.support.factories import WS
from tests.support.receiver import Receiver, scheduled_ats


def fid(second: float, job_id: str = "ws:0") -> str:
    return f"{job_id}@{iso_second(second)}"


def state(conn: Redis, ws: str = WS) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in conn.hgetall(keys.state(ws)).items()}


def every_second(receiver: Receiver, **policy: Any) -> Trigger:
    return Trigger(**{"cron": EVERY_SECOND, "url": receiver.url + "/x", "method": "GET", **policy})


def push(conn: Redis, queue: Queue, settings: Settings, now: float) -> None:
    """A tick with nothing due at `now` (ahead of the real clock): pushes the outbox, then deliver."""
    ticking.tick(conn, queue, settings, now=now)
    deliver(conn, settings)


def test_skip_records_a_due_firing_while_another_is_active(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    edits.replace(conn, WS, [every_second(receiver, overlap="skip")], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.1).fired == 1
    assert state(conn) == {"0": fid(T + 1)}

    # A second scheduler commits the next due time while the first firing is still undelivered.
    assert ticking.tick(conn, queue, settings, now=T + 2.1).fired == 0
    skipped = record_of(conn, "ws:0", T + 2)
    assert skipped is not None
    assert skipped["outcome"] == "skipped" and skipped["reason"] == "overlap"
    assert skipped["active_id"] == fid(T + 1) and skipped["attempts"] == []
    assert conn.zscore(keys.done(WS), fid(T + 2)) is not None  # kept like a delivered record
    assert int(conn.hget(keys.METRICS, Counter.OUTCOME_SKIPPED) or 0) == 1

    deliver(conn, settings)  # the active firing is delivered and lets go
    assert state(conn) == {}
    assert ticking.tick(conn, queue, settings, now=T + 3.1).fired == 1
    deliver(conn, settings)
    assert scheduled_ats(receiver.to("/x")) == [iso_second(T + 1), iso_second(T + 3)]
    assert record_of(conn, "ws:0", T + 3)["outcome"] == "delivered"  # type: ignore[index]


def test_buffer_one_holds_one_firing_and_sends_it_when_the_active_one_ends(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    edits.replace(conn, WS, [every_second(receiver, overlap="buffer_one")], now=lambda: T)
    for k in (1, 2, 3):
        ticking.tick(conn, queue, settings, now=T + k + 0.1)
    held = state(conn)
    assert held["0"] == fid(T + 1)
    waiting = firings.Firing.from_json(held["0+"])
    assert waiting.id == fid(T + 2) and waiting.held
    assert record_of(conn, "ws:0", T + 2) is None  # waiting: no record yet
    assert record_of(conn, "ws:0", T + 3)["active_id"] == fid(T + 1)  # type: ignore[index]

    deliver(conn, settings)  # T+1 delivered: T+2 becomes the active one, in a new batch
    assert state(conn) == {"0": fid(T + 2)}
    assert conn.zcard(keys.OUTBOX) == 1
    push(conn, queue, settings, T + 3.2)
    assert state(conn) == {}
    assert scheduled_ats(receiver.to("/x")) == [iso_second(T + 1), iso_second(T + 2)]
    assert int(conn.hget(keys.METRICS, Counter.ENQUEUED) or 0) == 2


def test_a_retrying_firing_stays_active_until_its_final_outcome(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    receiver.on("/x", (500, 0))
    edits.replace(conn, WS, [every_second(receiver, overlap="skip")], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1.1)
    deliver(conn, settings)
    assert record_of(conn, "ws:0", T + 1)["outcome"] == "retrying"  # type: ignore[index]
    assert state(conn) == {"0": fid(T + 1)}
    ticking.tick(conn, queue, settings, now=T + 2.1)  # T+2 skipped; the retry moves (due long before T)
    deliver(conn, settings)
    assert record_of(conn, "ws:0", T + 2)["outcome"] == "skipped"  # type: ignore[index]
    assert record_of(conn, "ws:0", T + 1)["outcome"] == "delivered"  # type: ignore[index]
    assert state(conn) == {}


def test_a_dropped_held_firing_lets_go(conn: Redis, settings: Settings, queue: Queue, receiver: Receiver) -> None:
    edits.replace(conn, WS, [every_second(receiver, overlap="buffer_one")], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1.1)
    ticking.tick(conn, queue, settings, now=T + 2.1)
    assert set(state(conn)) == {"0", "0+"}
    # A new cron: a new version. The waiting firing goes at once; the active one is dropped by
    # the worker (its version is gone), and its dropped outcome lets go.
    edits.replace(conn, WS, [every_second(receiver, overlap="buffer_one", cron="*/5 * * * * *")], now=lambda: T + 2.2)
    assert state(conn) == {"0": fid(T + 1)}
    deliver(conn, settings)
    assert state(conn) == {} and receiver.requests == []


def test_a_stale_release_does_not_free_another_firing(conn: Redis, settings: Settings, receiver: Receiver) -> None:
    """A held firing that is no longer the active one (its trigger was removed and created again)
    neither frees the new active firing nor sends the waiting one."""
    conn.hset(keys.state(WS), mapping={"0": fid(T + 5), "0+": "{}"})
    old = firings.Firing(fid(T + 1), "ws:0", "v", T + 1, held=True)
    firings.record(
        conn,
        "b",
        [firings.Outcome.dropped(old.id, held=True)],
        now=T,
        retention=firings.Retention.from_settings(settings),
        finished=True,
    )
    assert state(conn) == {"0": fid(T + 5), "0+": "{}"}
    assert conn.zcard(keys.OUTBOX) == 0


def test_max_firings_ends_the_schedule_entry(conn: Redis, settings: Settings, queue: Queue, receiver: Receiver) -> None:
    edits.replace(conn, WS, [every_second(receiver, max_firings=2)], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.1).fired == 1
    assert conn.zscore(keys.SCHEDULE, "ws:0") == T + 2
    assert ticking.tick(conn, queue, settings, now=T + 2.1).fired == 1
    assert conn.zscore(keys.SCHEDULE, "ws:0") is None  # ended: the definition stays
    assert conn.hexists(keys.workspace(WS), "0")
    assert state(conn) == {"0#": "2"}
    assert ticking.tick(conn, queue, settings, now=T + 3.1).fired == 0
    deliver(conn, settings)
    assert scheduled_ats(receiver.to("/x")) == [iso_second(T + 1), iso_second(T + 2)]


def test_skipped_and_disabled_firings_do_not_count(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    edits.replace(conn, WS, [every_second(receiver, max_firings=2, overlap="skip")], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1.1)
    ticking.tick(conn, queue, settings, now=T + 2.1)  # skipped: not counted
    assert state(conn)["0#"] == "1"
    deliver(conn, settings)
    edits.replace(conn, WS, [every_second(receiver, max_firings=2, overlap="skip", enabled=False)], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 3.1)  # disabled: advances, not counted
    assert state(conn)["0#"] == "1" and conn.zscore(keys.SCHEDULE, "ws:0") == T + 4
    edits.replace(conn, WS, [every_second(receiver, max_firings=2, overlap="skip")], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 4.1)
    assert conn.zscore(keys.SCHEDULE, "ws:0") is None


def test_a_reschedule_restarts_the_count_and_a_delete_clears_the_state(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    keep = Trigger(id="keep", cron=EVERY_SECOND, url=receiver.url + "/k", method="GET", overlap="skip")
    edits.replace(conn, WS, [every_second(receiver, max_firings=5, overlap="buffer_one"), keep], now=lambda: T)
    for k in (1, 2):
        ticking.tick(conn, queue, settings, now=T + k + 0.1)
    assert set(state(conn)) == {"0", "0+", "0#", "keep"}

    edits.replace(conn, WS, [every_second(receiver, max_firings=3, overlap="buffer_one"), keep], now=lambda: T + 2.2)
    assert set(state(conn)) == {"0", "keep"}  # the count restarts, the waiting firing goes

    edits.replace(conn, WS, [keep], now=lambda: T + 2.3)  # "0" removed by the whole-list replace
    assert set(state(conn)) == {"keep"}
    edits.delete(conn, WS)
    assert not conn.exists(keys.state(WS))


def test_a_trigger_rescheduled_without_a_next_run_has_no_entry(conn: Redis, receiver: Receiver) -> None:
    edits.replace(conn, WS, [every_second(receiver, max_firings=3)], now=lambda: T)
    conn.hset(keys.state(WS), "0#", 2)
    snapshot = store.read(conn, WS)
    [stored] = snapshot.triggers
    ended = dataclasses.replace(stored, version="v2", next_run_at=None)
    change = store.Write(upserts=[(ended, True)], expect={"0": snapshot.raws["0"]})
    status, _ = store.write(conn, WS, change, new_etag="e2", max_triggers=10)
    assert status is store.WriteStatus.APPLIED
    assert conn.zscore(keys.SCHEDULE, "ws:0") is None and state(conn) == {}
    assert json.loads(conn.hget(keys.workspace(WS), "0"))["v"] == "v2"  # type: ignore[arg-type]

    # Kept (not rescheduled): the entry and the count stay as they are.
    conn.zadd(keys.SCHEDULE, {"ws:0": T + 9})
    conn.hset(keys.state(WS), "0#", 1)
    kept = dataclasses.replace(ended, url=receiver.url + "/y", next_run_at=None)
    raw = conn.hget(keys.workspace(WS), "0").decode()  # type: ignore[union-attr]
    store.write(conn, WS, store.Write(upserts=[(kept, False)], expect={"0": raw}), new_etag="e3", max_triggers=10)
    assert conn.zscore(keys.SCHEDULE, "ws:0") == T + 9 and state(conn) == {"0#": "1"}


def test_jittered_firings_wait_in_the_outbox_until_their_send_time(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    from scheduler_api.policy import jitter_offset

    # Trigger ids whose offsets at T+1 differ and are not 0, so each gets a batch of its own.
    ids = [f"j{i}" for i in range(40) if jitter_offset(f"ws:j{i}@{iso_second(T + 1)}", 30) > 0][:2]
    offsets = [jitter_offset(f"ws:{i}@{iso_second(T + 1)}", 30) for i in ids]
    if offsets[0] == offsets[1]:
        ids, offsets = ids[:1], offsets[:1]
    plain = Trigger(id="plain", cron=EVERY_SECOND, url=receiver.url + "/p", method="GET")
    jittered = [
        Trigger(id=i, cron="1 0 8 15 1 *", url=f"{receiver.url}/{i}", method="GET", jitter_seconds=30) for i in ids
    ]
    edits.replace(conn, WS, [plain, *jittered], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.1).fired == 1 + len(ids)
    outbox = dict(conn.zrange(keys.OUTBOX, 0, -1, withscores=True))
    for trigger_id, offset in zip(ids, offsets, strict=True):
        raw = conn.hget(keys.batch(outbox_batch(outbox, T + 1 + offset)), f"ws:{trigger_id}@{iso_second(T + 1)}")
        firing = firings.Firing.from_json(raw)  # type: ignore[arg-type]
        assert firing.scheduled_at == T + 1 and firing.send_at == T + 1 + offset
    deliver(conn, settings)
    assert [r.path for r in receiver.requests] == ["/p"]  # the jittered ones are not pushed yet

    push(conn, queue, settings, T + 1 + max(offsets) + 0.1)
    for trigger_id in ids:
        assert scheduled_ats(receiver.to(f"/{trigger_id}")) == [iso_second(T + 1)]


def outbox_batch(outbox: dict[Any, float], score: float) -> str:
    [bid] = [b.decode() for b, s in outbox.items() if s == score]
    return bid
