"""Structured logs: one JSON object per line in production, readable lines in development; every
delivery logs workspace, trigger, scheduled time, attempt, status and duration, never header values.
"""

from __future__ import annotations

import json
import time

import pytest
from redis import Redis
from rq import Queue

from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, firings
from scheduler_api.triggers import Trigger
from tests.support.processes import Procs, start_worker, stop, wait_until

SECRET = "top-secret-header-value"


def _deliver_one_with(procs: Procs, conn: Redis, settings: Settings, url: str, **env: str) -> str:
    """One firing with a secret header, delivered by a real worker process; return its log."""
    edits.replace(conn, "logs", [Trigger(cron="* * * * * *", url=url, method="POST", headers={"X-Token": SECRET})])
    due = time.time() + 1
    ticking.tick(conn, Queue(settings.queue_name, connection=conn), settings, now=due)
    [firing_id] = [k.decode() for k in conn.hkeys(conn.keys("sa:batch:*")[0])]
    worker = start_worker(procs, conn, **env)
    wait_until(lambda: firings.get_record(conn, firing_id) is not None, 20, "the delivery record", procs)
    assert stop(worker, procs) == 0
    return worker.log()


@pytest.mark.slow
def test_production_logs_are_one_json_object_per_line(conn: Redis, settings: Settings, receiver, procs: Procs) -> None:
    log = _deliver_one_with(procs, conn, settings, receiver.url + "/json", APP_ENV="production", LOG_LEVEL="INFO")
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines
    objects = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(o) for o in objects)
    [delivery] = [o for o in objects if o["message"].startswith("delivery ")]
    assert delivery["workspace"] == "logs"
    assert delivery["trigger"] == "logs:0"
    assert delivery["scheduled_at"].endswith("Z")
    assert delivery["attempt"] == 1
    assert delivery["status"] == 200
    assert isinstance(delivery["duration_ms"], float)
    assert delivery["outcome"] == "delivered"
    assert SECRET not in log
    [sent] = receiver.to("/json")
    assert {k.lower(): v for k, v in sent.headers.items()}["x-token"] == SECRET


@pytest.mark.slow
def test_development_logs_are_readable_lines(conn: Redis, settings: Settings, receiver, procs: Procs) -> None:
    log = _deliver_one_with(procs, conn, settings, receiver.url + "/text", APP_ENV="development", LOG_LEVEL="INFO")
    delivery = [line for line in log.splitlines() if "delivery workspace=logs" in line]
    assert len(delivery) == 1
    assert "trigger=logs:0" in delivery[0] and "status=200" in delivery[0] and "attempt=1" in delivery[0]
    assert not delivery[0].lstrip().startswith("{")
    assert SECRET not in log
