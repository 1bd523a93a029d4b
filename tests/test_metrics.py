"""`scheduler_api.metrics` through `GET /metrics`: the Prometheus text format, counters kept in Redis so
that what a worker or scheduler counts is what any API process shows (the real processes:
tests/processes/test_metrics.py).
"""

from __future__ import annotations

from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from scheduler_api.delivery import worker
from scheduler_api.engine import scheduler as scheduling
from scheduler_api.engine import tick as ticking
from scheduler_api.storage import edits
from scheduler_api.triggers import Trigger
from tests.support.clock import T
from tests.support.factories import make_settings
from tests.support.metrics import check_histogram, scrape, v
from tests.support.receiver import Receiver


def test_metrics_exposition_has_every_series_at_zero(client: TestClient) -> None:
    s = scrape(client)
    for name in (
        "scheduler_firings_enqueued_total",
        "scheduler_firings_missed_total",
        "scheduler_retries_scheduled_total",
    ):
        assert v(s, name) == 0
    for outcome in ("delivered", "failed", "blocked"):
        assert v(s, "scheduler_deliveries_total", outcome=outcome) == 0
    for result in ("ok", "error"):
        assert v(s, "scheduler_attempts_total", result=result) == 0
    for where in ("rq_queue", "outbox", "retries"):
        assert v(s, "scheduler_queue_depth", where=where) == 0
    for h in ("scheduler_delivery_duration_seconds", "scheduler_lateness_seconds", "scheduler_tick_duration_seconds"):
        check_histogram(s, h)
        assert v(s, f"{h}_count") == 0


def test_counters_follow_the_deliveries(client: TestClient, conn: Redis, redis_url: str, receiver: Receiver) -> None:
    settings = make_settings(redis_url, delivery_max_retries=1, worker_concurrency=5)
    queue = Queue(settings.queue_name, connection=conn)
    receiver.on("/flaky", (500, 0))
    receiver.on("/bad", (500, 0), (502, 0))
    edits.replace(
        conn,
        "ws",
        [
            Trigger(cron="* * * * *", url=receiver.url + "/ok", method="GET"),
            Trigger(cron="* * * * *", url=receiver.url + "/flaky", method="GET"),
            Trigger(cron="* * * * *", url=receiver.url + "/bad", method="GET"),
        ],
        now=lambda: T - 30,
    )
    # The tick as the scheduler process runs it, so that its duration is observed too.
    sched = scheduling.TriggerScheduler(settings, connection=conn, clock=lambda: T + 0.2)
    assert sched.enqueue_jobs().fired == 3
    s = scrape(client)
    assert v(s, "scheduler_firings_enqueued_total") == 3
    assert v(s, "scheduler_queue_depth", where="rq_queue") == 1  # one batch job waiting
    assert v(s, "scheduler_tick_duration_seconds_count") == 1
    check_histogram(s, "scheduler_tick_duration_seconds")

    worker.run_worker(settings, conn, burst=True)
    s = scrape(client)
    assert v(s, "scheduler_queue_depth", where="rq_queue") == 0
    assert v(s, "scheduler_queue_depth", where="retries") == 2
    assert v(s, "scheduler_deliveries_total", outcome="delivered") == 1
    assert v(s, "scheduler_deliveries_total", outcome="failed") == 0
    assert v(s, "scheduler_attempts_total", result="ok") == 1
    assert v(s, "scheduler_attempts_total", result="error") == 2
    assert v(s, "scheduler_retries_scheduled_total") == 2
    assert v(s, "scheduler_delivery_duration_seconds_count") == 3
    assert v(s, "scheduler_lateness_seconds_count") == 3

    ticking.tick(conn, queue, settings, now=T + 0.5)  # moves both retries
    worker.run_worker(settings, conn, burst=True)
    s = scrape(client)
    assert v(s, "scheduler_queue_depth", where="retries") == 0
    assert v(s, "scheduler_deliveries_total", outcome="delivered") == 2
    assert v(s, "scheduler_deliveries_total", outcome="failed") == 1
    assert v(s, "scheduler_attempts_total", result="ok") == 2
    assert v(s, "scheduler_attempts_total", result="error") == 3
    assert v(s, "scheduler_retries_scheduled_total") == 2
    assert v(s, "scheduler_firings_enqueued_total") == 3  # retries are not new firings
    assert v(s, "scheduler_delivery_duration_seconds_count") == 5
    assert v(s, "scheduler_lateness_seconds_count") == 3  # first attempts only
    for h in ("scheduler_delivery_duration_seconds", "scheduler_lateness_seconds"):
        check_histogram(s, h)
    assert 0 < v(s, "scheduler_delivery_duration_seconds_sum") < 5
    assert len(receiver.requests) == 5

    # A blocked delivery and a missed firing.
    edits.delete(conn, "ws")
    edits.replace(conn, "strict", [Trigger(cron="* * * * *", url=receiver.url + "/b", method="GET")], now=lambda: T)
    edits.replace(conn, "late", [Trigger(cron="0 * * * *", url=receiver.url + "/m", method="GET")], now=lambda: T)
    result = ticking.tick(conn, queue, settings, now=T + 3600 + 70)  # hourly is 70 s late: missed
    assert result.missed == 1
    worker.run_worker(make_settings(redis_url, allow_private_targets=False), conn, burst=True)
    s = scrape(client)
    assert v(s, "scheduler_firings_missed_total") == 1
    assert v(s, "scheduler_deliveries_total", outcome="blocked") == 1
    assert v(s, "scheduler_deliveries_total", outcome="delivered") == 2
    assert v(s, "scheduler_firings_enqueued_total") == 4
    assert len(receiver.requests) == 5


def test_outbox_depth_counts_a_manual_run_not_yet_pushed(client: TestClient, conn: Redis) -> None:
    body = {"triggers": [{"cron": "0 0 1 1 *", "url": "https://example.com/x", "method": "GET"}]}
    assert client.post("/api/workspaces/ws/triggers", json=body).status_code == 200
    assert client.post("/api/workspaces/ws/triggers/0/run").status_code == 202
    s = scrape(client)
    assert v(s, "scheduler_queue_depth", where="outbox") == 1
    assert v(s, "scheduler_firings_enqueued_total") == 1
