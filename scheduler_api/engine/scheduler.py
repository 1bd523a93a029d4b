"""The scheduler process: turns due cron times into RQ jobs, exactly once per due time.

`TriggerScheduler` is an rq-scheduler `Scheduler`: same schedule (a sorted set of jobIds scored by
their next run time, written by the API), same process model (birth/death registration,
heartbeat, a poll loop every `interval` seconds). Its move step (`enqueue_jobs`) is replaced,
because rq-scheduler's own one, as measured in issue #3:
  * reuses one job id for every firing (status and retry counters bleed between firings) -
    here every firing has its own id ``{jobId}@{time}`` and its own attempts;
  * computes the next time from *now* with another cron library (double runs, drift) - here
    the next time is croniter's next after the *scheduled* time;
  * moves one job per round trip (1.6-2 s per 1,000) - here due entries are read in chunks and
    committed by a Lua script per batch of `SCHEDULER_BATCH_SIZE`, pipelined;
  * relies on a lock that two schedulers can both hold - here the commit is a compare-and-set on
    each entry's score and version, so any number of schedulers can run and each firing is
    enqueued once; no lock is taken at all;
  * forgets due times passed while no scheduler ran - here the most recent one fires if it is at
    most `MISFIRE_GRACE_SECONDS` late (older ones are logged as skipped); if even the most recent
    one is later than that, it is recorded as ``missed`` and logged, and nothing fires.

Between ticks the scheduler parses the definitions due within `PREFETCH_SECONDS`
(scheduler_api.storage.prefetch), stopping in time for the next tick, and applies retention to the
workspaces that get no new records (`sweep_step`: a pass starts every minute, 2,000 keys per poll).

Failure rules: any error in a tick (Redis unreachable, Redis refusing writes, a bug) is logged
and the tick is retried on the next poll, the process stays up; no
schedule entry is advanced unless its firing was written in the same script, and a written batch
stays in the outbox until it is pushed to RQ, so a crash at any point loses no firing.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis import Redis
from rq import Queue
from rq.job import Job
from rq_scheduler import Scheduler

from scheduler_api import cron as cronlib
from scheduler_api import metrics
from scheduler_api.settings import Settings
from scheduler_api.storage import firings, keys
from scheduler_api.storage.prefetch import Prefetcher
from scheduler_api.storage.triggers import load_definitions, paused_among

log = logging.getLogger("scheduler_api.scheduler")

READ_CHUNK = 5000
PREFETCH_MARGIN_SECONDS = 0.05  # a prefetch pass stops this long before the next tick
OUTBOX_RETRY_SECONDS = 30.0
RETENTION_SWEEP_SECONDS = 60.0  # a sweep over every workspace's history starts this often
SWEEP_SCAN_COUNT = 2000  # keys looked at per sweep step (one step per poll, between ticks)


@dataclass
class TickResult:
    fired: int = 0
    missed: int = 0
    retried: int = 0
    pushed: int = 0
    reaped: int = 0


def plan_entry(
    job_id: str,
    score: float,
    trigger_cron: str,
    version: str,
    *,
    now: float,
    grace: float,
    tz: str = "UTC",
    fire: bool = True,
) -> firings.DuePlan:
    """Decide what to do with a schedule entry due at `score` (<= now).

    The firing is the most recent run time at or before `now`; the next run is computed from it
    (not from now), so runs never drift. Run times passed unseen before it are skipped; it is
    itself skipped (recorded as missed) when later than `grace`. With `fire` false (the trigger
    is disabled or its workspace paused) the schedule advances the same way and nothing fires.
    """
    parsed = cronlib.parse(trigger_cron, tz)
    latest = score
    nxt = parsed.next_after(score)
    skipped = 0
    if nxt <= now:
        latest = parsed.last_at_or_before(now)
        nxt = parsed.next_after(latest)
        skipped = 1  # at least one run time between `score` and `latest` was passed over
    firing_id = f"{job_id}@{cronlib.iso(latest)}"
    if not fire:
        return firings.DuePlan(job_id, score, version, nxt, None)
    if now - latest <= grace:
        firing = firings.Firing(firing_id, job_id, version, latest)
        missed = None
        if skipped:
            log.warning(
                "trigger %s: run times from %s before %s were missed", job_id, cronlib.iso(score), cronlib.iso(latest)
            )
    else:
        firing = None
        missed = {
            "id": firing_id,
            "jobId": job_id,
            "workspace_id": keys.split_job_id(job_id)[0],
            "scheduled_at": cronlib.iso(latest),
            "outcome": "missed",
            "late_seconds": round(now - latest, 3),
            "missed_since": cronlib.iso(score),
            "attempts": [],
        }
        log.warning(
            "trigger %s: firing %s is %.1fs late (grace %.0fs): skipped as missed",
            job_id,
            cronlib.iso(latest),
            now - latest,
            grace,
        )
    return firings.DuePlan(job_id, score, version, nxt, firing, missed)


def tick(conn: Redis, queue: Queue, settings: Settings, *, now: float | None = None) -> TickResult:
    """One pass of the move step: recover, fire due triggers and retries, push batches to RQ."""
    now = time.time() if now is None else now
    retention = firings.Retention.from_settings(settings)
    result = TickResult()
    result.reaped = firings.reap_leases(conn, now=now)
    if result.reaped:
        log.warning("%d batch(es) lost their worker; their undelivered firings are requeued", result.reaped)
    for _ in range(1000):  # bounded: each round advances or removes every entry it read
        due = read_due(conn, now)
        if not due:
            break
        # Slice by slice: the first batch is committed and pushed after ~1/10 of a chunk's work,
        # not after all of it (planning 5,000 entries first delayed every firing by ~0.1 s).
        size = settings.scheduler_batch_size
        for start in range(0, len(due), size):
            fired, missed = _fire_slice(conn, due[start : start + size], settings, retention, now=now)
            result.fired += fired
            result.missed += missed
            if fired:  # hand each batch to the workers at once, not after the whole tick
                result.pushed += push_outbox(conn, queue, settings, now=now)
        if len(due) < READ_CHUNK:
            break
    while True:
        moved = firings.move_retries(conn, new_batch_id(), now=now, limit=settings.scheduler_batch_size)
        result.retried += moved
        if moved < settings.scheduler_batch_size:
            break
    result.pushed += push_outbox(conn, queue, settings, now=now)
    return result


def _fire_slice(
    conn: Redis, due: list[tuple[str, float]], settings: Settings, retention: firings.Retention, *, now: float
) -> tuple[int, int]:
    """Plan and commit one batch of due entries; returns (fired, missed)."""
    defs = load_definitions(conn, [jid for jid, _ in due])
    paused = paused_among(conn, sorted({t.workspace_id for t in defs.values()}))
    plans = []
    for jid, score in due:
        trigger = defs.get(jid)
        if trigger is None:
            # Orphan entry (cannot happen through the API): let the commit remove it.
            plans.append(firings.DuePlan(jid, score, "", 0.0, None))
            continue
        plans.append(
            plan_entry(
                jid,
                score,
                trigger.cron,
                trigger.version,
                now=now,
                grace=settings.misfire_grace_seconds,
                tz=trigger.timezone,
                fire=trigger.enabled and trigger.workspace_id not in paused,
            )
        )
    return firings.commit_due(conn, new_batch_id(), plans, now=now, retention=retention)


def next_tick_at(now: float, interval: float) -> float:
    """The next multiple of `interval` after `now` (unix seconds), plus 1 ms."""
    return (math.floor(now / interval) + 1) * interval + 0.001


def read_due(conn: Redis, now: float) -> list[tuple[str, float]]:
    """Up to READ_CHUNK schedule entries due at `now`: (jobId, scheduled time)."""
    rows: list[tuple[bytes, float]] = conn.zrangebyscore(  # type: ignore[assignment]
        keys.SCHEDULE, "-inf", now, start=0, num=READ_CHUNK, withscores=True
    )
    return [(member.decode(), float(score)) for member, score in rows]


def new_batch_id() -> str:
    return uuid.uuid4().hex


def batch_job_timeout(settings: Settings) -> int:
    """RQ timeout of one batch job: every firing of a full batch, `concurrency` at a time, may
    take the whole delivery timeout; plus a minute. Beyond it RQ kills the job and the lease
    mechanism hands the undelivered firings to another worker."""
    waves = math.ceil(settings.scheduler_batch_size / settings.worker_concurrency)
    return int(waves * (settings.delivery_timeout_seconds + 1) + 60)


def push_outbox(conn: Redis, queue: Queue, settings: Settings, *, now: float) -> int:
    """Push the batches waiting in the outbox to RQ, one job each; return how many were pushed.

    A batch stays in the outbox until a worker claims it (scheduler_api.storage.firings), and comes due
    here again every `OUTBOX_RETRY_SECONDS`. One already pushed is pushed again unless its RQ job
    is still queued (so: failed, removed, or started without claiming the batch): a batch is never
    left to an RQ job that will not deliver it. Pushing twice is harmless: the second job finds the
    batch claimed or done.
    """
    pushed = 0
    while True:
        batch_ids = firings.claim_outbox(conn, now=now, retry_after=OUTBOX_RETRY_SECONDS)
        if not batch_ids:
            return pushed
        to_push = _needing_a_job(conn, batch_ids)
        if to_push:
            with conn.pipeline(transaction=True) as pipe:
                for bid in to_push:
                    job = queue.enqueue_call(
                        "scheduler_api.delivery.batch.run_batch",
                        args=(bid,),
                        timeout=batch_job_timeout(settings),
                        result_ttl=0,
                        failure_ttl=settings.completed_keep_seconds or 86_400,
                        description=f"deliver batch {bid}",
                        pipeline=pipe,
                    )
                    pipe.hset(keys.PUSHED, bid, job.id)
                pipe.execute()
        pushed += len(to_push)
        if len(batch_ids) < 1000:
            return pushed


def _needing_a_job(conn: Redis, batch_ids: list[str]) -> list[str]:
    """Of `batch_ids` (due in the outbox), those with no RQ job that may still deliver them."""
    job_ids: list[bytes | None] = conn.hmget(keys.PUSHED, batch_ids)  # type: ignore[assignment]
    job_of = {bid: jid.decode() for bid, jid in zip(batch_ids, job_ids, strict=True) if jid is not None}
    if not job_of:
        return batch_ids
    pipe = conn.pipeline(transaction=False)
    for jid in job_of.values():
        pipe.hget(Job.key_for(jid), "status")
    statuses = dict(zip(job_of, pipe.execute(), strict=True))
    out = []
    for bid in batch_ids:
        if bid not in statuses:
            out.append(bid)
            continue
        status = statuses[bid]
        if status == b"queued":
            continue  # still waiting for a free worker: checked again later
        # Failed, stopped, gone, or started and still not claimed (claiming is the job's first
        # step, so its worker died in between; if it was only just started, the second job finds
        # the batch claimed).
        log.warning(
            "batch %s: its RQ job %s is %s without having taken the batch; pushing it again",
            bid,
            job_of[bid],
            (status or b"gone").decode(),
        )
        out.append(bid)
    return out


def sweep_step(conn: Redis, settings: Settings, *, now: float, cursor: int = 0) -> tuple[int, int]:
    """One step of the retention sweep (scheduler_api.storage.firings.sweep) over the workspaces with a
    history; return (the cursor of the next step, 0 when the sweep is complete; histories dropped)."""
    cursor, found = conn.scan(cursor, match=keys.HISTORY_PREFIX + "*", count=SWEEP_SCAN_COUNT)
    n = len(keys.HISTORY_PREFIX)
    workspace_ids = [(k.decode() if isinstance(k, bytes) else k)[n:] for k in found]
    retention = firings.Retention.from_settings(settings)
    dropped = firings.sweep(conn, workspace_ids, now=now, retention=retention) if workspace_ids else 0
    return int(cursor), dropped


class TriggerScheduler(Scheduler):  # type: ignore[misc]
    """rq-scheduler's Scheduler with our schedule key and our move step (see module docstring)."""

    redis_scheduler_namespace_prefix = keys.PREFIX + "scheduler_instance:"
    scheduler_key = keys.PREFIX + "scheduler"
    scheduler_lock_key = keys.PREFIX + "scheduler_lock"
    scheduled_jobs_key = keys.SCHEDULE

    def __init__(self, settings: Settings, *, connection: Redis, clock: Callable[[], float] = time.time):
        super().__init__(
            queue_name=settings.queue_name,
            interval=settings.scheduler_interval_seconds,
            connection=connection,
        )
        self.settings = settings
        self.clock = clock
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

    def acquire_lock(self) -> bool:
        # No lock: the per-entry compare-and-set makes concurrent schedulers safe.
        return True

    def remove_lock(self) -> None:
        return None

    def get_jobs(
        self, until: Any = None, with_times: bool = False, offset: Any = None, length: Any = None
    ) -> list[Any]:
        # The stock implementation fetches an RQ job per entry and *cancels* entries without one;
        # our entries are trigger definitions, so it must never run against this schedule.
        raise NotImplementedError("schedule entries are triggers; use scheduler_api.storage.triggers.list_triggers")

    def enqueue_jobs(self) -> TickResult:
        queue = Queue(self.settings.queue_name, connection=self.connection)
        started = time.perf_counter()
        try:
            result = tick(self.connection, queue, self.settings, now=self.clock())
        except (redis.ConnectionError, redis.TimeoutError) as e:
            log.error("tick skipped, Redis unreachable: %s", e)
            return TickResult()
        except Exception:
            # Redis refusing writes (out of memory, read-only) or a bug: the process stays up and
            # ticks again (crash-looping would stop every workspace's firings, not one).
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

    def _install_signal_handlers(self) -> None:
        import signal

        def stop(signum: int, frame: Any) -> None:
            log.info("scheduler: signal %d, stopping after this tick", signum)
            self.stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    def run(self, burst: bool = False) -> None:
        """Poll every `interval` seconds until SIGTERM/SIGINT; a tick in progress is finished."""
        try:
            self.register_birth()
        except redis.RedisError as e:  # ticking needs no registration: carry on
            log.error("registering the scheduler failed: %s", e)
        self._install_signal_handlers()
        try:
            while not self.stopping:
                try:
                    self.heartbeat()
                except redis.RedisError as e:
                    log.error("heartbeat failed: %s", e)
                self.enqueue_jobs()
                self.sweep_retention()
                if burst:
                    break
                # Sleep to the next multiple of the interval on the wall clock (+1 ms): due times are
                # whole seconds, so a tick right after them adds no phase delay to every firing.
                # Small steps, so that a signal stops us soon.
                wake = self.next_tick = next_tick_at(self.clock(), self._interval)
                self.prefetcher.run_once(self.clock())
                while not self.stopping and (remaining := wake - self.clock()) > 0:
                    time.sleep(min(remaining, 0.1))
        finally:
            try:
                self.register_death()
            except redis.RedisError:  # unreachable, or refusing writes (OOM, READONLY)
                pass
            log.info("scheduler stopped")
