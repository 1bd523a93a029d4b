"""`scheduler_api.storage.replay` and its Lua (``replay.lua``, the replay part of ``record.lua``): one
replay of a firing at a time however many ask at once, the firing JSON of a plain firing unchanged,
and a retrying replay dropped by a reschedule leaves a failed record."""

from __future__ import annotations

import threading

from redis import Redis

from scheduler_api.settings import Settings
from scheduler_api.storage import edits, firings, keys, replay
from scheduler_api.storage.firings import Firing
from scheduler_api.triggers import Trigger
from tests.support.clock import ONCE, YEARLY, T, iso_second
from tests.support.engine import tick_and_deliver
from tests.support.factories import make_settings
from tests.support.receiver import Receiver

FIRING = f"ws:0@{iso_second(T + 1)}"


def failed_firing(conn: Redis, settings: Settings, receiver: Receiver) -> None:
    receiver.on("/x", (500, 0))
    edits.replace(conn, "ws", [Trigger(cron=ONCE, url=receiver.url + "/x", method="GET")], now=lambda: T)
    tick_and_deliver(conn, settings.model_copy(update={"delivery_max_retries": 0}), T + 1.5)
    rec = firings.get_record(conn, FIRING)
    assert rec is not None and rec["outcome"] == "failed"


def test_a_firing_is_replayed_once_however_many_ask_at_once(
    conn: Redis, settings: Settings, receiver: Receiver
) -> None:
    failed_firing(conn, settings, receiver)
    answers: list[replay.Replayed] = []
    start = threading.Barrier(8)

    def ask() -> None:
        start.wait()
        answers.append(replay.replay(conn, "ws", FIRING))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.answer.value for a in answers) == ["ok"] + ["pending"] * 7
    [batch] = conn.zrange(keys.OUTBOX, 0, -1)
    [raw] = conn.hvals(keys.batch(batch.decode()))
    sent = Firing.from_json(raw)
    assert (sent.id, sent.replay, sent.attempt, sent.first, len(sent.attempts)) == (FIRING, 1, 2, 2, 1)
    assert replay.replay(conn, "other", FIRING).answer is replay.Answer.NONE  # ids name their workspace


def test_a_plain_firing_has_no_replay_member() -> None:
    plain = Firing("ws:0@x", "ws:0", "v", T)
    assert "replay" not in plain.to_json() and "from" not in plain.to_json()
    again = Firing.from_json(Firing("ws:0@x", "ws:0", "v", T, replay=2, first=3).to_json())
    assert (again.replay, again.first) == (2, 3)
    assert (again.next_attempt([]).replay, again.next_attempt([]).first) == (2, 3)


def test_a_retrying_replay_dropped_by_a_reschedule_leaves_a_failed_record(
    conn: Redis, redis_url: str, settings: Settings, receiver: Receiver
) -> None:
    failed_firing(conn, settings, receiver)
    receiver.on("/x", (500, 0))
    assert replay.replay(conn, "ws", FIRING).answer is replay.Answer.REPLAYED
    tick_and_deliver(conn, make_settings(redis_url, delivery_max_retries=3), T + 2)
    rec = firings.get_record(conn, FIRING)
    assert rec is not None and (rec["outcome"], rec["replays"], len(rec["attempts"])) == ("retrying", 1, 2)
    assert replay.replay(conn, "ws", FIRING).answer is replay.Answer.PENDING

    edits.replace(conn, "ws", [Trigger(cron=YEARLY, url=receiver.url + "/x", method="GET")], now=lambda: T)
    tick_and_deliver(conn, settings, T + 3)  # the retry is dropped: its trigger was rescheduled
    rec = firings.get_record(conn, FIRING)
    assert rec is not None and (rec["outcome"], rec["replays"], len(rec["attempts"])) == ("failed", 1, 2)
    assert "next_attempt_at" not in rec
    assert conn.zscore(keys.failed("ws"), FIRING) is not None
    assert not conn.hexists(keys.state("ws"), FIRING)
    assert replay.replay(conn, "ws", FIRING).number == 2
