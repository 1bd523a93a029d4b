"""A batch of firings in delivery (`BatchRun`): one RQ job's batch, held by the worker's
`Dispatch` (scheduler_api.delivery.dispatch) until its last firing has ended.

What one attempt sends is in `scheduler_api.delivery.attempt`; which outcomes are retried, and
when, is in `scheduler_api.delivery.retry`; who goes first, in `scheduler_api.delivery.lanes`.

Rules of the batch:
* the job first claims the batch's lease; a batch already done or held by another live worker
  is left alone;
* a firing whose trigger was removed or replaced since it was scheduled is **dropped** unsent
  (`BatchRun.current_trigger`): a replace or delete takes effect for every firing not yet
  started. A batch being delivered reads the definitions again, for its firings still waiting
  for a free lane, as soon as the worker hears of a change (scheduler_api.delivery.changes,
  about a millisecond after the API's answer) and in any case every `FLUSH_EVERY_SECONDS`; a
  jittered firing (sent later than its due time) is also dropped when its trigger was disabled or
  its workspace paused while it waited;
* the signing secrets of the batch's workspaces (scheduler_api.storage.signing_keys, created where
  missing) are read with the definitions, at the start and on every re-read, so a rotation takes
  effect for firings not yet started as a change does;
* a header value or signing secret that cannot be decrypted fails its firing at once (error
  ``secrets``), nothing is sent;
* a failure alert's firing (`Firing.alert`) is sent without a trigger (scheduler_api.delivery.alerts);
* the rate limits of the batch's workspaces are read once, at the start; a firing to a limited
  host waits for its turn (scheduler_api.delivery.limits): delayed, never failed or dropped. One
  that waited has its definition read again before it is sent (dropped if its trigger was removed
  or replaced meanwhile);
* the firings wait in the worker's fair lanes, one queue per workspace: at most
  `WORKER_MAX_IN_FLIGHT` requests are in flight in the worker, at most `WORKER_CONCURRENCY` of one
  workspace, and free lanes go to the workspaces in turn. Under `scheduler-api worker` the job
  returns once its firings are running or parked, and the worker takes its next batch; the batch
  keeps its lease until its last firing has ended (scheduler_api.delivery.dispatch). A workspace
  with `WAITING_PER_LANE` x `WORKER_CONCURRENCY` firings already waiting in the worker has the rest
  of the batch's firings left in the batch, which goes back to the outbox when its other firings
  have ended, to be pushed again as much later as the oldest of them is late already (1-60 s:
  a burst's firings come back at once, a slow tenant's backlog once a minute);
  an attempt that waited a second or more in the worker records how long (``queued_ms``);
* outcomes are written every `FLUSH_EVERY_SECONDS` and when the batch ends. A worker that dies
  mid-batch stops renewing its lease; the scheduler then hands the firings without an outcome
  to another worker, so a firing is delivered at least once (possibly twice if it was sent but
  not yet recorded: the Idempotency-Key lets the receiver tell);
* on SIGTERM no batch starts a new request; those in flight finish and the rest go back to
  the outbox at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from redis import Redis

from scheduler_api import cron as cronlib
from scheduler_api import metrics, tracing
from scheduler_api.delivery.attempt import Attempt, send
from scheduler_api.delivery.limits import BatchLimits
from scheduler_api.delivery.retry import classify
from scheduler_api.delivery.runtime import DeliveryRuntime
from scheduler_api.errors import SecretsError
from scheduler_api.header_crypto import open_headers
from scheduler_api.storage import firings, keys, series
from scheduler_api.storage.firings import Firing, Outcome
from scheduler_api.storage.triggers import StoredTrigger, load_definitions, paused_among
from scheduler_api.storage.workspace_settings import RateLimit

log = logging.getLogger("scheduler_api.delivery")

FLUSH_EVERY_SECONDS = 0.25
QUEUED_NOTED_SECONDS = 1.0  # a firing that waited this long in the worker has queued_ms in its attempt
Counts = dict[str, int]


def no_counts() -> Counts:
    return {"delivered": 0, "failed": 0, "blocked": 0, "retrying": 0, "dropped": 0}


class BatchRun:
    """One claimed batch in delivery: its firings wait in the worker's fair lanes (`Dispatch`),
    its outcomes are written by the dispatch's timer, and it lets go of its lease when the last
    of its firings has ended (`Dispatch.finish`)."""

    def __init__(self, runtime: DeliveryRuntime, conn: Redis, batch_id: str, firings_: list[Firing]) -> None:
        self.runtime = runtime
        self.conn = conn
        self.batch_id = batch_id
        self.seen = runtime.changes_seen()  # changes heard of before the definitions are read
        self.work: list[Firing] = firings_
        self.unstarted: dict[str, Firing] = {f.id: f for f in firings_}  # not started (nor dropped) yet
        self.outstanding = 0  # firings in the lanes: waiting or running
        self.parked = 0  # of them, those parked behind their workspace's cap when they came
        self.left = 0  # firings left in the batch for later: their workspace had too many waiting
        self.left_oldest = float("inf")  # the earliest due time among them
        self.started_all: asyncio.Future[None] | None = None  # set when no firing is left unstarted
        self.admitted = time.monotonic()
        self.broken = False  # an error (Redis) stopped the batch: the rest goes back to the outbox
        self.lost = False  # its lease went to another worker (this one was stalled): nothing more starts
        self.fresh_until = 0.0  # monotonic time until which its lease is surely this worker's
        self.done: asyncio.Future[None] | None = None
        self.span: Any = None  # its ``batch`` span when tracing is on (scheduler_api.tracing)
        self.pending: list[Outcome] = []  # outcomes not yet written
        self.counts = no_counts()
        self.durations: list[float] = []
        self.lateness: list[float] = []
        # The definitions as last read, by jobId; refreshed by `refresh_definitions`.
        self.current: dict[str, StoredTrigger] = load_definitions(conn, sorted({f.job_id for f in firings_}))
        jittered = sorted({keys.workspace_of_firing(f.id) for f in firings_ if f.send_at is not None})
        self.paused = paused_among(conn, jittered) if jittered else set()  # read for jittered firings only
        runtime.load_signers(conn, {keys.split_job_id(jid)[0] for jid in self.current})
        workspaces = sorted({keys.split_job_id(jid)[0] for jid in self.current})
        self.limits = BatchLimits(conn, workspaces, timeout=runtime.settings.delivery_timeout_seconds)
        self.checked = time.monotonic()

    def current_trigger(self, firing: Firing) -> StoredTrigger | None:
        """The firing's trigger as it stands, or None (and the firing dropped) when the trigger was
        removed or replaced since the firing was scheduled."""
        trigger = self.current.get(firing.job_id)
        if trigger is not None and trigger.version == firing.version:
            # A replay (sent at once, send_at = now) is an explicit call, like run-now: it is sent.
            if firing.send_at is None or firing.replay or (trigger.enabled and trigger.workspace_id not in self.paused):
                return trigger
            # A jittered firing waited for its send time: a trigger disabled (or a workspace paused)
            # meanwhile does not send it, as it would not have been committed.
            log.info("firing %s dropped: its trigger was disabled or its workspace paused", firing.id)
            self.add(Outcome.dropped(firing.id, held=firing.held))
            return None
        log.info("firing %s dropped: its trigger was removed or replaced", firing.id)
        self.add(Outcome.dropped(firing.id, held=firing.held))
        return None

    def add(self, outcome: Outcome) -> None:
        self.pending.append(outcome)
        self.counts[outcome.kind.value] += 1

    def flush(self, *, finished: bool, back_at: float | None = None) -> None:
        """Write the pending outcomes and metrics; with `finished`, let go of the batch: the firings
        left in it go back to the outbox, to be pushed at `back_at` (default: at once)."""
        out, self.pending = self.pending, []
        now = time.time()
        firings.record(
            self.conn,
            self.batch_id,
            out,
            now=now,
            retention=self.runtime.retention,
            finished=finished,
            back_at=back_at,
        )
        if self.durations or self.lateness:
            pipe = self.conn.pipeline(transaction=False)
            metrics.observe(pipe, "delivery_duration_seconds", self.durations)
            metrics.observe(pipe, "lateness_seconds", self.lateness)
            series.observe_lateness(pipe, self.lateness, now=now)  # the dashboard's per-minute p50/p99
            self.durations, self.lateness = [], []
            pipe.execute()

    def refresh_definitions(self) -> None:
        """Read again the definitions of the firings not started yet: all of them when the last full
        read is `FLUSH_EVERY_SECONDS` old (or changes may have been missed), else those of the
        workspaces changed since (a cheap comparison when nothing changed)."""
        changes = self.runtime.changes
        if time.monotonic() - self.checked >= FLUSH_EVERY_SECONDS:
            self.seen = self.runtime.changes_seen()
            self._reread(self._waiting())
            self.checked = time.monotonic()
        elif changes is not None and changes.generation != self.seen:
            changed, self.seen = changes.changed_since(self.seen)
            if changed is None:
                self._reread(self._waiting())
                self.checked = time.monotonic()
            else:
                self._reread({jid for jid in self._waiting() if keys.split_job_id(jid)[0] in changed})

    def _waiting(self) -> set[str]:
        return {f.job_id for f in self.unstarted.values()}

    def _reread(self, job_ids: set[str]) -> None:
        latest = load_definitions(self.conn, sorted(job_ids))
        self.runtime.load_signers(self.conn, {keys.split_job_id(jid)[0] for jid in latest})
        for jid in job_ids:
            if jid in latest:
                self.current[jid] = latest[jid]
            else:
                self.current.pop(jid, None)

    async def deliver_one(self, firing: Firing, trigger: StoredTrigger) -> None:
        """One attempt of `firing`, its outcome queued for the next flush, and its log line."""
        runtime = self.runtime
        error = runtime.signing_errors.get(trigger.workspace_id)  # its signing secret is undecryptable
        if error is None:
            try:
                headers = open_headers(runtime.cipher, trigger.headers, workspace_id=trigger.workspace_id)
            except SecretsError as e:
                error = e
        if error is not None:
            log.error("firing %s failed: %s", firing.id, error)
            failed = Attempt(time.time(), 0.0, error="secrets", message=str(error), final=True)
            self.add(classify(firing, trigger, failed, runtime.retry, now=time.time()))
            return
        if headers is not trigger.headers:  # decrypted: a copy, the cached definition stays sealed
            trigger = dataclasses.replace(trigger, headers=headers)
        limit = self.limits.limit_of(trigger) if self.limits.by_workspace else None
        waited = 0.0
        # How long it waited in this worker (behind its workspace's other requests, or for a lane).
        queued = time.monotonic() - self.admitted
        if limit is None:
            if tracing.tracer() is None:  # the common case: no span, one coroutine less
                attempt = await send(runtime.client(), trigger, firing, runtime.options)
            else:
                attempt = await self.send(firing, trigger)
        else:
            sent = await self.send_limited(firing, trigger, limit)
            if sent is None:
                return
            attempt, waited = sent
        outcome = classify(firing, trigger, attempt, runtime.retry, now=time.time())
        if waited and outcome.record is not None:  # the record shows how long the rate limit held it
            outcome.record.attempts[-1]["waited_ms"] = round(waited * 1000, 1)
        if queued >= QUEUED_NOTED_SECONDS and outcome.record is not None:  # and a wait in the worker
            outcome.record.attempts[-1]["queued_ms"] = round(queued * 1000, 1)
        self.add(outcome)
        if attempt.error != "blocked":
            self.durations.append(attempt.duration)
        if firing.attempt == 1:
            self.lateness.append(max(attempt.started_at - firing.due_at, 0.0))
        if attempt.error == "blocked":  # say why: the operator must see which address was refused
            log.warning(  # the record says only "blocked by the SSRF guard": the addresses are here
                "delivery blocked by the SSRF guard workspace=%s trigger=%s: %s",
                trigger.workspace_id,
                trigger.job_id,
                attempt.detail or attempt.message,
            )
        if log.isEnabledFor(logging.INFO):  # the arguments cost as much as a request's parsing
            fields = {
                "workspace": trigger.workspace_id,
                "trigger": trigger.job_id,
                "scheduled_at": cronlib.iso(firing.scheduled_at),
                "attempt": firing.attempt,
                "status": attempt.status,
                "error": attempt.error,
                "duration_ms": round(attempt.duration * 1000, 1),
                "outcome": outcome.kind.value,
            }  # never header values; in production each is a field of the JSON log line
            log.info(" ".join(["delivery", *(f"{k}={v}" for k, v in fields.items())]), extra=fields)

    async def send(self, firing: Firing, trigger: StoredTrigger) -> Attempt:
        """One attempt; with tracing on, inside an ``attempt`` span of the firing's trace
        (scheduler_api.tracing) whose id the request's ``traceparent`` carries. `deliver_one` calls
        `attempt.send` directly when tracing is off."""
        runtime = self.runtime
        tracer = tracing.tracer()
        if tracer is None:
            return await send(runtime.client(), trigger, firing, runtime.options)
        attributes = {"workspace": trigger.workspace_id, "trigger": trigger.job_id, "attempt": firing.attempt}
        context = tracing.firing_context(firing.id)
        with tracer.start_as_current_span("attempt", context=context, attributes=attributes) as span:
            span_hex = format(span.get_span_context().span_id, "016x")
            attempt = await send(runtime.client(), trigger, firing, runtime.options, span_hex)
            if attempt.status is not None:
                span.set_attribute("http.response.status_code", attempt.status)
            if attempt.error is not None:
                span.set_attribute("error.type", attempt.error)
            return attempt

    async def send_limited(
        self, firing: Firing, trigger: StoredTrigger, limit: RateLimit
    ) -> tuple[Attempt, float] | None:
        """Send `firing` once the rate limit on its host lets it (scheduler_api.delivery.limits);
        return the attempt and how long it waited, or None, unsent: the worker started stopping
        while it waited (it goes back with the batch), or its trigger was removed or replaced."""
        turn = await self.limits.take_turn(trigger, limit, lambda: self.runtime.stopping)
        if turn is None:
            return None
        attempt: Attempt | None = None
        try:
            if turn.waited:  # a replace or delete while it waited applies to it
                self._reread({firing.job_id})
                if self.current_trigger(firing) is None:
                    return None
            attempt = await self.send(firing, trigger)
        finally:
            self.limits.end_turn(trigger, turn, attempt)
        return attempt, turn.waited
