"""Liveness of the real `scheduler-api worker` and `scheduler` with `HEALTH_PORT` set: /health answers
200 while the process runs, nothing while it is frozen (SIGSTOP: the probe times out, a failure for
the kubelet), and 200 again once it is resumed (SIGCONT). A loop stuck while the process runs on:
tests/test_health.py.
"""

from __future__ import annotations

import re
import signal
from typing import Any

import httpx
import pytest
from redis import Redis

from scheduler_api.embedded_redis import free_port
from tests.support.processes import Procs, start_scheduler, start_worker, stop, wait_until

PROBE_TIMEOUT = 1.0  # the kubelet's default timeoutSeconds
LOOPS = {"worker": {"rq", "delivery-loop"}, "scheduler": {"scheduler"}}


def healthy(url: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(url, timeout=PROBE_TIMEOUT)
    except httpx.TransportError:
        return None
    body: dict[str, Any] = r.json()
    return body if r.status_code == 200 else None


@pytest.mark.parametrize("role", ["worker", "scheduler"])
def test_health_fails_while_the_process_is_frozen_and_passes_once_resumed(role: str, conn: Redis, procs: Procs) -> None:
    port = free_port()
    start = start_worker if role == "worker" else start_scheduler
    proc = start(procs, conn, HEALTH_PORT=port)
    url = f"http://127.0.0.1:{port}/health"
    body = wait_until(lambda: healthy(url), 10, f"{role} /health to answer 200", procs)
    assert body["status"] == "ok" and set(body["loops"]) == LOOPS[role], body

    proc.send(signal.SIGSTOP)
    try:
        with pytest.raises(httpx.TimeoutException):
            httpx.get(url, timeout=PROBE_TIMEOUT)
    finally:
        proc.send(signal.SIGCONT)
    body = wait_until(lambda: healthy(url), 10, f"{role} /health to answer 200 again", procs)
    assert body["status"] == "ok", body
    assert re.search(rf"liveness: GET /health on \S+:{port}\b", proc.log()), proc.log()
    assert stop(proc, procs) == 0, procs.logs()
