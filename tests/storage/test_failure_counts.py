"""Consecutive failures counted by the record script (scheduler_api.storage.firings.record with
scheduler_api.storage.workspace_settings): exact across concurrent writers, one alert per
transition, the disable applied once, and a removed trigger's count gone."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from redis import Redis

from scheduler_api.storage import edits, firings, keys, workspace_settings
from scheduler_api.storage.connection import connect
from scheduler_api.storage.firings import Firing, Outcome, Retention
from scheduler_api.storage.history import Record
from scheduler_api.storage.workspace_settings import WorkspaceSettings, consecutive_failures
from scheduler_api.triggers import Trigger
from tests.support.clock import EVERY_SECOND, T, iso_second
from tests.support.factories import WS

RETENTION = Retention(3600, 10_000, 10_000, 10_000)


def alert_firings(conn: Redis) -> list[dict[str, Any]]:
    """Every alert firing waiting in a batch."""
    found = []
    for key in conn.scan_iter(match=keys.BATCH_PREFIX + "*"):
        found += [json.loads(raw) for raw in conn.hvals(key) if b"~alert" in raw]
    return found


def in_batch(conn: Redis, batch_id: str, outcome: Outcome) -> list[Outcome]:
    """`outcome`'s firing put in the batch first, as a worker records only firings of its batch (a
    firing another worker recorded already is not counted again)."""
    conn.hset(keys.batch(batch_id), outcome.firing_id, "{}")
    return [outcome]


def failed(n: int) -> Outcome:
    firing = Firing(f"ws:0@{iso_second(T + n)}", "ws:0", "v", T + n)
    return Outcome.final(Record.failed(firing, WS, [], finished_at=T + n))


def test_two_writers_finishing_failures_of_one_trigger_raise_each_alert_once(conn: Redis, redis_url: str) -> None:
    edits.replace(conn, WS, [Trigger(cron=EVERY_SECOND, url="https://example.com/t", method="GET")], now=lambda: T)
    settings = WorkspaceSettings(alert_url="https://alerts.example.com/", alert_after=40, disable_after=70)
    workspace_settings.write(conn, WS, settings)

    def writer(first: int) -> None:
        with connect(redis_url, timeout=5) as own:
            for n in range(first, 100, 2):  # one record call per outcome, interleaved with the other writer
                firings.record(
                    own, f"b{n}", in_batch(own, f"b{n}", failed(n)), now=time.time(), retention=RETENTION, finished=True
                )

    threads = [threading.Thread(target=writer, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert consecutive_failures(conn, WS, "0") == 100
    bodies = [a["alert"]["body"] for a in alert_firings(conn)]
    sent = sorted((b["type"], b["consecutive_failures"]) for b in bodies)
    assert sent == [("trigger.disabled", 70), ("trigger.failing", 40)]
    stored = json.loads(conn.hget(keys.workspace(WS), "0") or b"{}")
    assert stored["on"] is False and stored["off"]["reason"] == "auto-disabled after 70 consecutive failed firings"
    assert json.dumps(stored).count('"on"') == 1
    for batch_id in {k.decode() for k in conn.scan_iter(match=keys.BATCH_PREFIX + "*")}:
        assert conn.zscore(keys.OUTBOX, batch_id.removeprefix(keys.BATCH_PREFIX)) is not None  # pushed at once


def test_a_payload_with_an_on_member_is_left_alone_by_the_disable(conn: Redis) -> None:
    trigger = Trigger(cron=EVERY_SECOND, url="https://example.com/t", method="POST", payload={"on": True, "x": 1})
    edits.replace(conn, WS, [trigger], now=lambda: T)
    workspace_settings.write(conn, WS, WorkspaceSettings(disable_after=1))
    firings.record(conn, "b", in_batch(conn, "b", failed(1)), now=T, retention=RETENTION, finished=True)
    stored = json.loads(conn.hget(keys.workspace(WS), "0") or b"{}")
    assert stored["payload"] == {"on": True, "x": 1} and stored["on"] is False
    assert alert_firings(conn) == []  # no alerts set: disabled without an alert


def test_removing_a_trigger_drops_its_count(conn: Redis) -> None:
    edits.replace(conn, WS, [Trigger(cron=EVERY_SECOND, url="https://example.com/t", method="GET")], now=lambda: T)
    workspace_settings.write(conn, WS, WorkspaceSettings(alert_url="https://alerts.example.com/", alert_after=1))
    firings.record(conn, "b", in_batch(conn, "b", failed(1)), now=T, retention=RETENTION, finished=True)
    assert consecutive_failures(conn, WS, "0") == 1 and conn.hexists(keys.state(WS), "0^")
    edits.replace(conn, WS, [Trigger(id="other", cron=EVERY_SECOND, url="https://example.com/t", method="GET")])
    assert not conn.hexists(keys.state(WS), "0!") and not conn.hexists(keys.state(WS), "0^")


def test_a_firing_recorded_twice_is_counted_once(conn: Redis) -> None:
    """Two workers recording the same firing (the second took the batch after the first one's lease
    ran out) count it once."""
    edits.replace(conn, WS, [Trigger(cron=EVERY_SECOND, url="https://example.com/t", method="GET")], now=lambda: T)
    workspace_settings.write(conn, WS, WorkspaceSettings(alert_url="https://alerts.example.com/", alert_after=2))
    firings.record(conn, "b", in_batch(conn, "b", failed(1)), now=T, retention=RETENTION, finished=True)
    firings.record(conn, "b", [failed(1)], now=T, retention=RETENTION, finished=True)  # again, from elsewhere
    assert consecutive_failures(conn, WS, "0") == 1 and alert_firings(conn) == []


def test_a_lowered_threshold_still_alerts_and_disables(conn: Redis) -> None:
    edits.replace(conn, WS, [Trigger(cron=EVERY_SECOND, url="https://example.com/t", method="GET")], now=lambda: T)
    high = WorkspaceSettings(alert_url="https://alerts.example.com/", alert_after=10, disable_after=10)
    workspace_settings.write(conn, WS, high)
    for n in range(5):
        firings.record(conn, f"b{n}", in_batch(conn, f"b{n}", failed(n)), now=T, retention=RETENTION, finished=True)
    low = WorkspaceSettings(alert_url="https://alerts.example.com/", alert_after=3, disable_after=4)
    workspace_settings.write(conn, WS, low)
    firings.record(conn, "b9", in_batch(conn, "b9", failed(9)), now=T, retention=RETENTION, finished=True)
    assert sorted(a["alert"]["body"]["type"] for a in alert_firings(conn)) == ["trigger.disabled", "trigger.failing"]
    assert json.loads(conn.hget(keys.workspace(WS), "0") or b"{}")["on"] is False


def test_settings_without_counting_drop_the_counts(conn: Redis) -> None:
    edits.replace(conn, WS, [Trigger(cron=EVERY_SECOND, url="https://example.com/t", method="GET")], now=lambda: T)
    workspace_settings.write(conn, WS, WorkspaceSettings(alert_url="https://alerts.example.com/", alert_after=3))
    for n in range(2):
        firings.record(conn, f"b{n}", in_batch(conn, f"b{n}", failed(n)), now=T, retention=RETENTION, finished=True)
    assert consecutive_failures(conn, WS, "0") == 2
    workspace_settings.write(conn, WS, WorkspaceSettings())
    assert consecutive_failures(conn, WS, "0") == 0
