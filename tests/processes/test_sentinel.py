"""A real Sentinel set (tests.support.sentinel) whose primary is killed under the API and under a
running scheduler and worker, and sentinels or primaries that hang (scheduler_api.storage.connection).
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from scheduler_api.api import create_app
from scheduler_api.storage import connection, edits
from scheduler_api.storage import triggers as store
from scheduler_api.triggers import Trigger
from tests.support.factories import make_settings
from tests.support.processes import Procs, header, scheduled_second, snapshot, start_scheduler, start_worker
from tests.support.receiver import Receiver
from tests.support.sentinel import SERVICE, SentinelSet

TRIGGERS = "/api/workspaces/ws/triggers"


@pytest.mark.slow
def test_api_keeps_working_across_a_failover(sentinels: SentinelSet) -> None:
    settings = make_settings(sentinels.url, redis_timeout_seconds=1.0)
    before = [{"cron": "0 9 * * *", "url": f"https://example.com/{i}", "method": "GET"} for i in range(3)]
    after = [{"cron": "0 10 * * *", "url": "https://example.com/after", "method": "POST", "payload": {"v": 2}}]
    with TestClient(create_app(settings)) as c:
        assert c.post(TRIGGERS, json={"triggers": before}).status_code == 200
        sentinels.kill_primary()
        # Until the sentinel promotes the replica (~1-2 s), requests fail as with Redis down:
        # a 503 with the usual error body, never a 500; then the same app writes to the new primary.
        statuses = []
        deadline = time.monotonic() + 30
        while True:
            r = c.post(TRIGGERS, json={"triggers": after})
            statuses.append(r.status_code)
            assert r.status_code in (200, 503), r.text
            if r.status_code == 503:
                assert set(r.json()) == {"success", "error", "details"} and "Redis" in r.json()["error"]
            if r.status_code == 200:
                break
            assert time.monotonic() < deadline, f"no write succeeded after the failover: {statuses}"
            time.sleep(0.2)
        assert r.json()["removed"] == 3
        jobs = c.get(TRIGGERS).json()["jobs"]
        assert [(j["url"], j["cron"]) for j in jobs] == [("https://example.com/after", "0 10 * * *")]

    assert sentinels.master_port() == sentinels.replica.port
    promoted = sentinels.client(sentinels.replica)
    assert promoted.info("replication")["role"] == "master"
    assert [t.url for t in store.list_triggers(promoted, "ws")] == ["https://example.com/after"]


@pytest.mark.slow
def test_scheduler_and_worker_keep_firing_across_a_failover(
    sentinels: SentinelSet, receiver: Receiver, tmp_path: Path
) -> None:
    procs = Procs(tmp_path, sentinels.url)
    conn = connection.connect(sentinels.url, timeout=5)
    try:
        start_scheduler(procs, conn)
        start_worker(procs, conn)
        edits.replace(conn, "ws", [Trigger(cron="* * * * * *", url=f"{receiver.url}/tick", method="POST")])
        receiver.wait_for(lambda rs: len([r for r in rs if r.path == "/tick"]) >= 2, 15)
        killed_at = time.time()
        sentinels.kill_primary()
        # Firings resume by themselves: the processes reconnect to the promoted replica.
        resumed_after = int(killed_at) + 4
        # (Generous: on a starved machine the sentinel may abort a first failover and retry it.)
        arrived = receiver.wait_for(
            lambda rs: any(r.path == "/tick" and scheduled_second(r) >= resumed_after for r in rs), 60
        )
        assert any(r.path == "/tick" and scheduled_second(r) >= resumed_after for r in arrived), (
            f"no firing after the failover\n{procs.logs()}\n{sentinels.log()}"
        )
        assert all(p.alive() for p in procs.procs), procs.logs()
        assert sentinels.master_port() == sentinels.replica.port

        ticks = [r for r in snapshot(receiver) if r.path == "/tick"]
        for r in ticks:
            assert header(r, "Idempotency-Key") == f"ws:0@{header(r, 'X-Scheduler-Scheduled-At')}"
        # Seconds after the promotion are each delivered once (the second the primary died may be
        # delivered again after a failover: same Idempotency-Key, see DEPLOYMENT.md).
        later = [scheduled_second(r) for r in ticks if scheduled_second(r) >= resumed_after]
        assert len(later) == len(set(later)), procs.logs()
    finally:
        procs.stop_all()
        conn.close()


@pytest.mark.slow
def test_a_sentinel_that_hangs_is_passed_over_even_without_a_timeout(sentinels: SentinelSet) -> None:
    """The worker waits on the primary without a time limit; the sentinels are still asked with one."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        url = f"redis+sentinel://127.0.0.1:{silent.getsockname()[1]},127.0.0.1:{sentinels.port}/{SERVICE}/0"
        client = connection.connect(url, timeout=None)
        started = time.monotonic()
        assert client.ping() is True
        assert time.monotonic() - started < connection.SENTINEL_TIMEOUT_SECONDS + 3
        client.close()


def test_a_primary_that_hangs_is_a_503_within_twice_the_timeout(sentinels: SentinelSet) -> None:
    settings = make_settings(sentinels.url, redis_timeout_seconds=0.5)
    trigger = {"cron": "0 9 * * *", "url": "https://example.com/", "method": "GET"}
    with TestClient(create_app(settings)) as c:
        assert c.post(TRIGGERS, json={"triggers": [trigger]}).status_code == 200
        assert sentinels.primary.process is not None
        sentinels.primary.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            r = c.post(TRIGGERS, json={"triggers": [trigger]})
            took = time.monotonic() - started
        finally:
            sentinels.primary.process.send_signal(signal.SIGCONT)
        assert r.status_code == 503 and "may or may not have been made" in r.json()["error"]
        assert took < 2 * 0.5 + 1.0  # one retry at most, and a command is never sent twice after a timeout
