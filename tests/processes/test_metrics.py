"""`GET /metrics` shows what real worker and scheduler processes counted."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from scheduler_api.api import create_app
from scheduler_api.settings import Settings
from scheduler_api.storage import edits
from scheduler_api.triggers import Trigger
from tests.support.factories import make_settings
from tests.support.processes import Procs, drained, start_scheduler, start_worker, stop, wait_until
from tests.support.receiver import Receiver

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def v(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def check_histogram(samples: Samples, name: str) -> None:
    buckets = sorted(
        ((float(dict(lbl)["le"]), val) for (n, lbl), val in samples.items() if n == f"{name}_bucket"),
    )
    assert buckets, name
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), f"{name} buckets are not cumulative"
    assert buckets[-1][0] == float("inf") and buckets[-1][1] == v(samples, f"{name}_count")
    assert v(samples, f"{name}_sum") >= 0


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
