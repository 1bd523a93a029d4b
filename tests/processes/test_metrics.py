"""`GET /metrics` shows what real worker and scheduler processes counted."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.api import create_app
from scheduler_api.settings import Settings
from scheduler_api.storage import edits
from scheduler_api.triggers import Trigger
from tests.support.factories import make_settings
from tests.support.metrics import check_histogram, scrape, v
from tests.support.processes import Procs, drained, start_scheduler, start_worker, stop, wait_until
from tests.support.receiver import Receiver


@pytest.mark.slow
def test_counts_made_by_worker_and_scheduler_processes_show_in_the_api(
    client: TestClient, conn: Redis, settings: Settings, receiver: Receiver, procs: Procs
) -> None:
    scheduler = start_scheduler(procs, conn)
    start_worker(procs, conn)
    edits.replace(conn, "ws", [Trigger(cron="* * * * * *", url=receiver.url + "/p", method="GET")])

    def delivered() -> float:
        return v(scrape(client), "scheduler_deliveries_total", outcome="delivered")

    wait_until(lambda: delivered() >= 3, 15, "3 deliveries counted by the worker process", procs)
    stop(scheduler, procs)
    wait_until(lambda: drained(conn), 10, "the last firings to be delivered", procs)

    s = scrape(client)
    n = len(receiver.to("/p"))
    assert v(s, "scheduler_deliveries_total", outcome="delivered") == n
    assert v(s, "scheduler_attempts_total", result="ok") == n
    assert v(s, "scheduler_firings_enqueued_total") == n
    assert v(s, "scheduler_delivery_duration_seconds_count") == n
    assert v(s, "scheduler_lateness_seconds_count") == n
    assert v(s, "scheduler_tick_duration_seconds_count") >= 3  # observed by the scheduler process
    for h in ("scheduler_delivery_duration_seconds", "scheduler_lateness_seconds", "scheduler_tick_duration_seconds"):
        check_histogram(s, h)
    # Lateness of a live every-second trigger is small: the firings start within seconds.
    assert v(s, "scheduler_lateness_seconds_bucket", le="5.0") >= n - 1

    # Another API replica, with its own Redis client, answers the same.
    with TestClient(create_app(make_settings(settings.redis_url))) as other:
        assert scrape(other) == s
