"""The scheduler process (`scheduler-api scheduler`): a poll loop that ticks, prefetches and sweeps.

Every `SCHEDULER_INTERVAL_SECONDS`, on the wall clock's multiples of it (due times are whole
seconds, so a tick right after them adds no phase delay), the process:
  1. runs a tick (scheduler_api.engine.tick): due firings and retries into batches, batches to RQ;
  2. runs one step of the retention sweep when one is under way (scheduler_api.engine.retention);
  3. until the next tick, parses the definitions due within `PREFETCH_SECONDS`
     (scheduler_api.storage.prefetch), stopping in time for that tick.

rq-scheduler is used for what this process really takes from it: its registration of a
scheduler instance (birth, heartbeat, death, under ``sa:scheduler_instance:{name}``), through
`Registration`, a `Scheduler` that only names our keys. Its job model, lock and move step are not
used (why: scheduler_api.engine.tick); the schedule keeps its layout (``sa:schedule``, a sorted
set of jobIds scored by their next run time).

Failure rules: any error in a tick (Redis unreachable, Redis refusing writes, a bug) is logged
and the tick is retried on the next poll; registration, heartbeat and metrics errors are logged;
the process stays up (crash-looping would stop every workspace's firings, not one). SIGTERM or
SIGINT stops the loop after the tick in progress. With `HEALTH_PORT` set, the loop stamps its
liveness every round and while it sleeps (scheduler_api.health).
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from typing import Any

import redis
from redis import Redis
from rq import Queue
from rq_scheduler import Scheduler

from scheduler_api import metrics
from scheduler_api.engine.retention import RETENTION_SWEEP_SECONDS, backfill_retired, sweep_step
from scheduler_api.engine.tick import TickResult, tick
from scheduler_api.health import Liveness
from scheduler_api.settings import Settings
from scheduler_api.storage import keys, processes
from scheduler_api.storage.prefetch import Prefetcher

log = logging.getLogger("scheduler_api.scheduler")

PREFETCH_MARGIN_SECONDS = 0.05  # a prefetch pass stops this long before the next tick


class Registration(Scheduler):  # type: ignore[misc]
    """rq-scheduler's registration of a scheduler instance (`register_birth`, `heartbeat`,
    `register_death`) under our key prefix. The key names differ from rq-scheduler's, and each birth
    and heartbeat is also noted in ``sa:schedulers`` (storage.processes: the dashboard lists the
    schedulers from it, rq-scheduler keeps no list)."""

    redis_scheduler_namespace_prefix = keys.SCHEDULER_INSTANCE_PREFIX
    scheduler_key = keys.PREFIX + "scheduler"
    scheduler_lock_key = keys.PREFIX + "scheduler_lock"
    scheduled_jobs_key = keys.SCHEDULE

    def register_birth(self) -> None:
        super().register_birth()
        processes.scheduler_seen(self.connection, self.name, now=time.time(), birth=True)

    def heartbeat(self) -> None:
        super().heartbeat()
        processes.scheduler_seen(self.connection, self.name, now=time.time())


def next_tick_at(now: float, interval: float) -> float:
    """The next multiple of `interval` after `now` (unix seconds), plus 1 ms."""
    return (math.floor(now / interval) + 1) * interval + 0.001


class TriggerScheduler:
    """The scheduler process's loop (module docstring); `run()` until a signal, `enqueue_jobs()`
    for one tick."""

    def __init__(
        self,
        settings: Settings,
        *,
        connection: Redis,
        clock: Callable[[], float] = time.time,
        liveness: Liveness | None = None,
    ):
        self.settings = settings
        self.liveness = liveness  # stamped every round of the loop and while it sleeps (scheduler_api.health)
        self.connection = connection
        self.clock = clock
        self.interval = settings.scheduler_interval_seconds
        self.registration = Registration(queue_name=settings.queue_name, interval=self.interval, connection=connection)
        self.queue = Queue(settings.queue_name, connection=connection)
        self.stopping = False
        self.next_tick = 0.0
        self.next_sweep = 0.0  # the retention sweep: one step per poll while one is under way
        self.sweep_cursor = 0
        # Between ticks: parse the definitions (and cron expressions) of entries due soon.
        self.prefetcher = Prefetcher(
            connection,
            lookahead=settings.prefetch_seconds,
            warm=lambda trigger: trigger.schedule,
            busy=lambda: self.stopping or self.clock() >= self.next_tick - PREFETCH_MARGIN_SECONDS,
        )

    def enqueue_jobs(self) -> TickResult:
        """One tick; errors are logged, never raised (module docstring)."""
        started = time.perf_counter()
        try:
            result = tick(self.connection, self.queue, self.settings, now=self.clock())
        except (redis.ConnectionError, redis.TimeoutError) as e:
            log.error("tick skipped, Redis unreachable: %s", e)
            return TickResult()
        except Exception:
            log.exception("tick failed; trying again on the next poll")
            return TickResult()
        elapsed = time.perf_counter() - started
        try:
            metrics.observe(self.connection, "tick_duration_seconds", [elapsed])
        except redis.RedisError:  # unreachable, or refusing writes (OOM, READONLY)
            pass
        if result.fired or result.missed or result.retried or result.reaped:
            log.info(
                "tick: fired=%d retried=%d missed=%d pushed=%d reaped=%d in %.3fs",
                result.fired,
                result.retried,
                result.missed,
                result.pushed,
                result.reaped,
                elapsed,
            )
        return result

    def sweep_retention(self) -> None:
        """One step of the retention sweep when one is due; a sweep over every workspace starts
        every `RETENTION_SWEEP_SECONDS`. A Redis error is logged; the step runs again later."""
        now = self.clock()
        if now < self.next_sweep:
            return
        try:
            self.sweep_cursor, dropped = sweep_step(self.connection, self.settings, now=now, cursor=self.sweep_cursor)
        except redis.RedisError as e:  # unreachable, or refusing writes: deletes may still free memory
            log.error("retention sweep step failed: %s", e)
            return
        if dropped:
            log.info("retention: dropped the history of %d workspace(s) without triggers", dropped)
        if self.sweep_cursor == 0:
            self.next_sweep = now + RETENTION_SWEEP_SECONDS

    def _beat(self) -> None:
        if self.liveness is not None:
            self.liveness.beat("scheduler")

    def _install_signal_handlers(self) -> None:
        def stop(signum: int, frame: Any) -> None:
            log.info("scheduler: signal %d, stopping after this tick", signum)
            self.stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    def run(self, burst: bool = False) -> None:
        """Poll every `interval` seconds until SIGTERM/SIGINT; a tick in progress is finished."""
        try:
            self.registration.register_birth()
        except redis.RedisError as e:  # ticking needs no registration: carry on
            log.error("registering the scheduler failed: %s", e)
        try:
            backfill_retired(self.connection)  # once per Redis (scheduler_api.engine.retention)
        except redis.RedisError as e:  # the sweep then misses old histories until a later start
            log.error("indexing the histories of workspaces without triggers failed: %s", e)
        self._install_signal_handlers()
        try:
            while not self.stopping:
                self._beat()
                try:
                    self.registration.heartbeat()
                except redis.RedisError as e:
                    log.error("heartbeat failed: %s", e)
                self.enqueue_jobs()
                self.sweep_retention()
                if burst:
                    break
                # Sleep to the next multiple of the interval (+1 ms), in small steps so that a
                # signal stops us soon; prefetch first.
                wake = self.next_tick = next_tick_at(self.clock(), self.interval)
                self.prefetcher.run_once(self.clock())
                while not self.stopping and (remaining := wake - self.clock()) > 0:
                    self._beat()
                    time.sleep(min(remaining, 0.1))
        finally:
            if self.liveness is not None:
                self.liveness.stop()
            try:
                self.registration.register_death()
            except redis.RedisError:  # unreachable, or refusing writes (OOM, READONLY)
                pass
            log.info("scheduler stopped")
