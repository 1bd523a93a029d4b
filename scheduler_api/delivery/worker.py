"""`scheduler-api worker`: an RQ worker that delivers with async I/O instead of forking.

`DeliveryWorker` is rq's `SimpleWorker` (jobs run in the worker process, no fork per job) that
keeps one `DeliveryRuntime` - an event loop in a thread of its own and a shared HTTP client -
and one `Dispatch` (scheduler_api.delivery.dispatch) for its whole life, so up to
`WORKER_MAX_IN_FLIGHT` requests of every batch it holds are in flight with connection reuse, at
most `WORKER_CONCURRENCY` of one workspace (scheduler_api.delivery.lanes). A job returns once its
batch's firings are running or parked, so the next batch is taken while slow requests go on.

Failure rule: when rq's loop quits on an error outside a job (Redis unreachable for longer than the
connection's retries, e.g. a slow failover), the loop is started again after `RESTART_AFTER_SECONDS`
with a fresh registration; the process only ends on a signal (or in burst mode). With `HEALTH_PORT`
set, rq's loop and the event loop stamp their liveness (scheduler_api.health), and an idle rq loop
goes round every `IDLE_DEQUEUE_SECONDS`.

Shutdown: on the first SIGTERM/SIGINT the worker takes no new job and no batch starts a new
request; requests in flight finish (each within its timeout), their outcomes are written and the
firings not started go back to the outbox for another worker. In burst mode the worker returns once
every firing it took has ended.
A second signal is rq's cold shutdown.

While idle a thread parses the triggers due within `PREFETCH_SECONDS`
(scheduler_api.storage.prefetch); it waits whenever firings are running or waiting. Another thread listens
for trigger changes (scheduler_api.delivery.changes), so a running batch drops the firings of a trigger
replaced or deleted meanwhile before starting them.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

from redis import Redis
from rq import Queue, SimpleWorker

from scheduler_api.delivery.changes import ChangeWatch
from scheduler_api.delivery.dispatch import Dispatch, install_runtime
from scheduler_api.delivery.runtime import DeliveryRuntime
from scheduler_api.health import Liveness, beat_on_loop
from scheduler_api.settings import Settings
from scheduler_api.storage.prefetch import Prefetcher, run_in_thread

log = logging.getLogger("scheduler_api.worker")

PREFETCH_EVERY_SECONDS = 1.0
RESTART_AFTER_SECONDS = 1.0  # pause before rq's loop is started again after it quit on an error
# With liveness on (HEALTH_PORT), an idle rq loop waits at most this long for a job, then goes round
# (heartbeat) - rq's own wait is its worker TTL - 15 s (405 s), too long to tell idle from stuck.
IDLE_DEQUEUE_SECONDS = 5
# rq's pause between attempts while Redis is unreachable doubles up to this (rq's own: 60 s, longer
# than a loop may stay silent before the liveness check fails, HEALTH_STALE_SECONDS).
RECONNECT_MAX_SECONDS = 10.0
GC_THRESHOLD = 50_000  # allocations between young-generation collections (Python's default: 700)


def tune_gc() -> None:
    """For the long-lived worker process: what was loaded at start-up is never collected, and
    young collections run every 50,000 allocations instead of 700 - each delivery allocates
    hundreds of short-lived objects, and with the default the collector runs many times per delivery.
    Memory stays bounded: cyclic garbage waits for at most that many allocations."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)


class DeliveryWorker(SimpleWorker):
    """rq SimpleWorker sharing one delivery runtime across jobs; warm shutdown stops new requests."""

    runtime: DeliveryRuntime | None = None

    dispatch: Dispatch | None = None

    liveness: Liveness | None = None  # stamped "rq" on every round of rq's loop (scheduler_api.health)

    max_connection_wait_time = RECONNECT_MAX_SECONDS

    @property
    def dequeue_timeout(self) -> int:
        return IDLE_DEQUEUE_SECONDS if self.liveness is not None else super().dequeue_timeout

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """rq's heartbeat, before each wait for a job and after each job; the liveness stamp comes
        first, so a loop retrying an unreachable Redis still counts as going round."""
        if self.liveness is not None:
            self.liveness.beat("rq")
        super().heartbeat(timeout, pipeline)

    def handle_warm_shutdown_request(self) -> None:
        if self.dispatch is not None:
            self.dispatch.stop()
        elif self.runtime is not None:
            self.runtime.stopping = True
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]

    def unsubscribe(self) -> None:
        """Leave rq's command channel without waiting for its listener thread.

        rq stops that thread with `PubSubWorkerThread.stop()`, which since redis-py 8.2 waits for
        the thread to end, and the thread sleeps up to 60 s in its poll once the channel is left:
        every shutdown would take up to a minute. The thread is a daemon that only listens for rq's
        commands, so it is told to stop and ends on its own (or with the process)."""
        thread: Any = getattr(self, "pubsub_thread", None)
        pubsub: Any = getattr(self, "pubsub", None)
        if thread is None or pubsub is None:
            return
        log.info("worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
        pubsub.unsubscribe()
        try:
            thread.stop(timeout=0)  # redis-py >= 8.2: returns at once
        except TypeError:
            thread.stop()  # earlier releases never wait


def run_worker(
    settings: Settings,
    conn: Redis,
    *,
    burst: bool = False,
    resolver: Any = None,
    liveness: Liveness | None = None,
    **work_kwargs: Any,
) -> bool:
    """Run a `DeliveryWorker` on the service's queue until stopped (or, with `burst`, until empty).

    `resolver`: an aiohttp resolver asked instead of the system's DNS (tests); the SSRF guard wraps it.
    `liveness`: stamped by rq's loop ("rq") and from inside the event loop ("delivery-loop").
    """
    runtime = DeliveryRuntime(settings, resolver=resolver)
    dispatch = install_runtime(runtime)
    assert dispatch is not None
    runtime.client()  # import and build the HTTP client now, not in the first firing's time
    dispatch.start()
    if liveness is not None:
        liveness.beat("rq")
        beat_on_loop(runtime.loop, liveness, "delivery-loop")
    worker = DeliveryWorker([Queue(settings.queue_name, connection=conn)], connection=conn)
    worker.runtime, worker.dispatch, worker.liveness = runtime, dispatch, liveness
    runtime.changes = ChangeWatch(conn).start()  # replaces and deletes, as the API publishes them
    stop = threading.Event()
    if not burst and settings.prefetch_seconds > 0:  # idle between jobs: parse what is due soon
        prefetcher = Prefetcher(
            conn, lookahead=settings.prefetch_seconds, warm=runtime.warm, busy=lambda: dispatch.busy
        )
        run_in_thread(prefetcher, PREFETCH_EVERY_SECONDS, stop, time.time)
    try:
        while True:
            worked = bool(worker.work(burst=burst, logging_level=settings.log_level, **work_kwargs))
            if burst or runtime.stopping:
                return worked
            # rq's loop quits on an error outside a job, e.g. Redis gone for longer than the
            # connection's retries ride out (a slow failover): start it again instead of exiting.
            log.warning("worker: rq's loop stopped on an error; starting it again in %gs", RESTART_AFTER_SECONDS)
            deadline = time.monotonic() + RESTART_AFTER_SECONDS
            while not runtime.stopping and time.monotonic() < deadline:
                time.sleep(0.1)
            if runtime.stopping:
                return worked
            worker = DeliveryWorker([Queue(settings.queue_name, connection=conn)], connection=conn)
            worker.runtime, worker.dispatch, worker.liveness = runtime, dispatch, liveness
    finally:
        if liveness is not None:  # the loops end on purpose while requests in flight finish
            liveness.stop()
        stop.set()
        # Burst mode delivers everything it took; otherwise (a signal) what was not started goes back.
        dispatch.close(drain=burst and not runtime.stopping)
        runtime.changes.stop()
        install_runtime(None)
        runtime.close()
