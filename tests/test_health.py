"""Liveness of the worker and the scheduler (scheduler_api.health): the report with an injected
clock, `GET /health` over real HTTP, and each loop that stops going round failing the check while
the process runs on - the delivery event loop, the scheduler's poll loop and rq's loop.

SIGSTOP and SIGCONT of the real processes: tests/processes/test_liveness.py.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from redis import Redis
from rq import Queue

from scheduler_api import health
from scheduler_api.delivery.worker import DeliveryWorker
from scheduler_api.engine.scheduler import TriggerScheduler
from scheduler_api.errors import SettingsError
from scheduler_api.health import HealthServer, Liveness, beat_on_loop, serve_health
from scheduler_api.settings import Settings, load_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served() -> Iterator[Callable[[Liveness], str]]:
    """Serves a Liveness on a free loopback port; returns the /health URL. Closed at the end."""
    servers: list[HealthServer] = []

    def serve(liveness: Liveness) -> str:
        server = HealthServer(liveness, host="127.0.0.1", port=0).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}/health"

    yield serve
    for s in servers:
        s.close()


def wait_for_status(url: str, status: int, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(url, timeout=2)
        if r.status_code == status:
            body: dict[str, Any] = r.json()
            return body
        assert time.monotonic() < deadline, f"/health still answers {r.status_code} {r.text}, not {status}"
        time.sleep(0.02)


def test_report_ok_while_every_loop_beats_stale_once_one_stops_then_stopping() -> None:
    clock = Clock()
    live = Liveness(stale_after=10, clock=clock)
    assert live.report()[0] is True  # nothing registered yet: the process is starting
    live.beat("rq")
    live.beat("delivery-loop")
    clock.now += 6
    live.beat("rq")
    clock.now += 4
    healthy, body = live.report()
    assert healthy and body["status"] == "ok"
    assert body["loops"] == {"delivery-loop": 10.0, "rq": 4.0} and body["stale_after_seconds"] == 10
    assert body["timestamp"].endswith("Z")
    clock.now += 0.5  # delivery-loop: 10.5 s since its last round
    healthy, body = live.report()
    assert not healthy
    assert body["status"] == "stale" and body["stale"] == ["delivery-loop"]
    assert body["loops"] == {"delivery-loop": 10.5, "rq": 4.5}
    live.beat("delivery-loop")
    assert live.report()[0] is True
    clock.now += 100
    live.stop()  # shutting down on a signal: the loops end on purpose
    healthy, body = live.report()
    assert healthy and body["status"] == "stopping"


def test_stale_after_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stale_after must be positive, got 0"):
        Liveness(stale_after=0)


def test_health_answers_200_then_503_over_http_and_404_elsewhere(served: Callable[[Liveness], str]) -> None:
    clock = Clock()
    live = Liveness(stale_after=10, clock=clock)
    live.beat("scheduler")
    url = served(live)
    r = httpx.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json()["status"] == "ok" and r.json()["loops"] == {"scheduler": 0.0}
    head = httpx.head(url)
    assert head.status_code == 200 and head.content == b""
    clock.now += 12.5
    r = httpx.get(url)
    assert r.status_code == 503
    assert r.json()["stale"] == ["scheduler"] and r.json()["loops"] == {"scheduler": 12.5}
    missing = httpx.get(url.replace("/health", "/nope"))
    assert missing.status_code == 404
    assert missing.json() == {"success": False, "error": "no such path: /nope", "details": []}


def test_a_port_in_use_names_health_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError, match=f"HEALTH_PORT: cannot listen on 127.0.0.1:{port}"):
            HealthServer(Liveness(stale_after=10), host="127.0.0.1", port=port)


def test_settings_off_by_default_and_bounded() -> None:
    assert Settings.model_fields["health_port"].default == 0
    assert Settings.model_fields["health_stale_seconds"].default == 60
    assert serve_health(load_settings(_env_file=None, health_port=0)) == (None, None)
    with pytest.raises(SettingsError, match="HEALTH_STALE_SECONDS"):
        load_settings(_env_file=None, health_stale_seconds=5)
    with pytest.raises(SettingsError, match="HEALTH_PORT"):
        load_settings(_env_file=None, health_port=70000)


def test_a_blocked_event_loop_goes_stale_and_recovers(
    served: Callable[[Liveness], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's delivery loop, stamped from inside by `beat_on_loop`: a callback that blocks the
    loop stops the stamps while every other thread runs on."""
    monkeypatch.setattr(health, "LOOP_BEAT_SECONDS", 0.05)
    live = Liveness(stale_after=0.5)
    url = served(live)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    released = threading.Event()
    try:
        beat_on_loop(loop, live, "delivery-loop")
        assert wait_for_status(url, 200)["loops"].keys() == {"delivery-loop"}
        loop.call_soon_threadsafe(released.wait)  # the loop is stuck until released
        body = wait_for_status(url, 503)
        assert body["stale"] == ["delivery-loop"] and body["loops"]["delivery-loop"] > 0.5
        released.set()
        wait_for_status(url, 200)
    finally:
        released.set()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_scheduler_loop_that_stops_going_round_fails_the_check(
    conn: Redis, settings: Settings, served: Callable[[Liveness], str]
) -> None:
    """The poll loop runs here (it installs signal handlers: the main thread); its clock blocks
    while `running` is clear, as a loop stuck in a call would."""
    live = Liveness(stale_after=0.5)
    url = served(live)
    running = threading.Event()
    running.set()
    seen: dict[str, Any] = {}

    def clock() -> float:
        running.wait()
        return time.time()

    sched = TriggerScheduler(settings, connection=conn, clock=clock, liveness=live)

    def probe() -> None:
        try:
            seen["before"] = wait_for_status(url, 200)
            running.clear()
            seen["stuck"] = wait_for_status(url, 503)
            running.set()
            seen["after"] = wait_for_status(url, 200)
        except BaseException as e:  # raised in the test's thread below
            seen["error"] = e
        finally:
            sched.stopping = True
            running.set()

    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    prober = threading.Thread(target=probe)
    prober.start()
    try:
        sched.run()
    finally:
        prober.join(30)
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    if "error" in seen:
        raise seen["error"]
    assert seen["before"]["loops"].keys() == {"scheduler"}
    assert seen["stuck"]["stale"] == ["scheduler"]
    assert seen["after"]["status"] == "ok"
    assert httpx.get(url).json()["status"] == "stopping"  # the loop ended on request


def wait_until_stale(url: str) -> dict[str, Any]:
    """An RQ job that holds rq's loop until /health reports it stale."""
    return wait_for_status(url, 503)


def test_an_rq_loop_held_by_a_job_fails_the_check(
    conn: Redis, settings: Settings, served: Callable[[Liveness], str]
) -> None:
    live = Liveness(stale_after=0.5)
    url = served(live)
    queue = Queue(settings.queue_name, connection=conn)
    job = queue.enqueue(wait_until_stale, url)
    worker = DeliveryWorker([queue], connection=conn)
    worker.liveness = live
    assert worker.work(burst=True)
    body = job.return_value()
    assert body is not None and body["stale"] == ["rq"], job.get_status()
    assert httpx.get(url).status_code == 200  # rq's loop went round again after the job
