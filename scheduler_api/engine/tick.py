"""The scheduler's tick: due schedule entries and retries become committed batches, pushed to RQ.

Why the move step is our own and not rq-scheduler's: rq-scheduler's own one reuses one job id
for every firing (status and retry counters bleed between firings), computes the next time from
*now* with another cron library (double runs, drift), moves one job per round trip and relies on
a lock two schedulers can both hold. Here:
  * every firing has its own id ``{jobId}@{time}`` and its own attempts;
  * the next time is the cron's next after the *scheduled* time (`plan_entry`), so runs never drift;
  * due entries are read in chunks and committed by one script per batch of
    `SCHEDULER_BATCH_SIZE` (scheduler_api.storage.firings.commit_due), each batch pushed as soon
    as it is committed;
  * the commit is a compare-and-set on each entry's score and version, so any number of
    schedulers can run and each firing is enqueued once; no lock is taken;
  * due times passed while no scheduler ran are not forgotten: the most recent one fires if it is
    at most `MISFIRE_GRACE_SECONDS` late (older ones are logged as skipped); if even the most
    recent one is later than that, it is recorded as ``missed`` and nothing fires;
  * a trigger's ``start_at`` / ``end_at`` bound its run times, a one-off (``at``) runs once, and
    ``max_firings`` is counted in the commit: an ended trigger's entry is removed (it stays listed);
  * its overlap rule is applied in the commit (scheduler_api.storage.firings), and a jittered
    firing is committed at its nominal time into a batch pushed at its send time.

Failure rules: no schedule entry is advanced unless its firing (or its missed record) is written
in the same script, and a written batch stays in the outbox until a worker claims it
(scheduler_api.engine.outbox), so a crash at any point of a tick loses no firing. Errors are
raised to the caller (the scheduler process logs them and ticks again).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from redis import Redis
from rq import Queue

from scheduler_api import cron as cronlib
from scheduler_api import tracing
from scheduler_api.engine.outbox import push_outbox
from scheduler_api.policy import Policy, jitter_offset, last_run, next_run
from scheduler_api.settings import Settings
from scheduler_api.storage import firings, keys, leases
from scheduler_api.storage.history import Record
from scheduler_api.storage.triggers import load_definitions, paused_among

log = logging.getLogger("scheduler_api.scheduler")

READ_CHUNK = 5000  # schedule entries read per round trip


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
    trigger_cron: str | None,
    version: str,
    *,
    now: float,
    grace: float,
    tz: str = "UTC",
    fire: bool = True,
    at: float | None = None,
    policy: Policy | None = None,
) -> firings.DuePlan:
    """Decide what to do with a schedule entry due at `score` (<= now).

    The firing is the most recent run time at or before `now` (within the trigger's ``start_at``
    / ``end_at``; a one-off's is `at`); the next run is computed from it (not from now), so runs
    never drift, and there is none once the trigger has ended (``end_at``; a one-off after its
    firing). Run times passed unseen before it are skipped; it is itself skipped (recorded as
    missed) when later than `grace`. With `fire` false (the trigger is disabled or its workspace
    paused) the schedule advances the same way and nothing fires. The firing id keeps the nominal
    run time; with ``jitter_seconds`` it is sent `jitter_offset` seconds later (`Firing.send_at`).
    """
    schedule = cronlib.parse(trigger_cron, tz) if trigger_cron is not None else None
    latest: float | None
    nxt: float | None
    if schedule is not None and (policy is None or (policy.start_at is None and policy.end_at is None)):
        latest, nxt = score, schedule.next_after(score)
        if nxt <= now:
            latest = schedule.last_at_or_before(now)
            nxt = schedule.next_after(latest)
    else:  # bounded, or a one-off
        latest = last_run(schedule, at, policy, now)
        if latest is not None and latest < score:
            latest = None  # no run time of the trigger from `score` to now (an entry left out of bounds)
        nxt = next_run(schedule, at, policy, now if latest is None else latest)
    if latest is None or not fire:
        return firings.DuePlan(job_id, score, version, nxt, None)
    firing_id = f"{job_id}@{cronlib.iso(latest)}"
    overlap, max_firings = (policy.overlap, policy.max_firings or 0) if policy is not None else ("allow", 0)
    if now - latest <= grace:
        firing = firings.Firing(firing_id, job_id, version, latest, held=overlap != "allow")
        if policy is not None and policy.jitter_seconds > 0:
            firing.send_at = latest + jitter_offset(firing_id, policy.jitter_seconds)
        missed = None
        if latest > score:
            log.warning(
                "trigger %s: run times from %s before %s were missed", job_id, cronlib.iso(score), cronlib.iso(latest)
            )
    else:
        firing = None
        missed = Record.missed(
            firing_id, job_id, keys.split_job_id(job_id)[0], latest, late_seconds=now - latest, missed_since=score
        )
        log.warning(
            "trigger %s: firing %s is %.1fs late (grace %.0fs): skipped as missed",
            job_id,
            cronlib.iso(latest),
            now - latest,
            grace,
        )
    return firings.DuePlan(job_id, score, version, nxt, firing, missed, overlap, max_firings)


def tick(conn: Redis, queue: Queue, settings: Settings, *, now: float | None = None) -> TickResult:
    """One pass of the move step: recover, fire due triggers and retries, push batches to RQ
    (inside a ``tick`` span when tracing is on, scheduler_api.tracing)."""
    tracer = tracing.tracer()
    if tracer is None:
        return _tick(conn, queue, settings, now=now)
    with tracer.start_as_current_span("tick") as span:
        result = _tick(conn, queue, settings, now=now)
        for name in ("fired", "missed", "retried", "pushed", "reaped"):
            span.set_attribute(name, getattr(result, name))
        return result


def _tick(conn: Redis, queue: Queue, settings: Settings, *, now: float | None) -> TickResult:
    now = time.time() if now is None else now
    retention = firings.Retention.from_settings(settings)
    result = TickResult()
    result.reaped = leases.reap_leases(conn, now=now)
    if result.reaped:
        log.warning("%d batch(es) lost their worker; their undelivered firings are requeued", result.reaped)
    for _ in range(1000):  # bounded: each round advances or removes every entry it read
        due = read_due(conn, now)
        if not due:
            break
        # Slice by slice: each batch is planned, committed and pushed before the next slice is
        # planned, so the first firings leave without waiting for the whole chunk.
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
                at=trigger.at,
                policy=trigger.policy,
            )
        )
    return firings.commit_due(conn, new_batch_id(), plans, now=now, retention=retention)


def read_due(conn: Redis, now: float) -> list[tuple[str, float]]:
    """Up to READ_CHUNK schedule entries due at `now`: (jobId, scheduled time)."""
    rows: list[tuple[bytes, float]] = conn.zrangebyscore(  # type: ignore[assignment]
        keys.SCHEDULE, "-inf", now, start=0, num=READ_CHUNK, withscores=True
    )
    return [(member.decode(), float(score)) for member, score in rows]


def new_batch_id() -> str:
    return uuid.uuid4().hex
