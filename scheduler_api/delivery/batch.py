"""One RQ job: deliver a batch of firings (`run_batch`, run by `BatchRun`).

`run_batch(batch_id)` is the RQ job function. It runs under our `scheduler-api worker` (no fork,
one event loop and one shared HTTP client kept across jobs, scheduler_api.delivery.runtime) and
under the plain `rq worker` command as well (then each job builds its own runtime). What one
attempt sends is in `scheduler_api.delivery.attempt`; which outcomes are retried, and when, is in
`scheduler_api.delivery.retry`.

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
* at most `WORKER_CONCURRENCY` requests are in flight (one per lane);
* outcomes are written every `FLUSH_EVERY_SECONDS` and when the batch ends. A worker that dies
  mid-batch stops renewing its lease; the scheduler then hands the firings without an outcome
  to another worker, so a firing is delivered at least once (possibly twice if it was sent but
  not yet recorded: the Idempotency-Key lets the receiver tell);
* on SIGTERM the batch starts no new request; those in flight finish and the rest go back to
  the outbox at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from redis import Redis

from scheduler_api import cron as cronlib
from scheduler_api import metrics
from scheduler_api.delivery import alerts
from scheduler_api.delivery.attempt import Attempt, send
from scheduler_api.delivery.limits import BatchLimits
from scheduler_api.delivery.retry import classify
from scheduler_api.delivery.runtime import DeliveryRuntime
from scheduler_api.errors import SecretsError
from scheduler_api.header_crypto import open_headers
from scheduler_api.settings import load_settings
from scheduler_api.storage import firings, keys
from scheduler_api.storage.firings import Firing, LeaseClaim, Outcome
from scheduler_api.storage.triggers import StoredTrigger, load_definitions, paused_among
from scheduler_api.storage.workspace_settings import RateLimit

log = logging.getLogger("scheduler_api.delivery")

FLUSH_EVERY_SECONDS = 0.25
Counts = dict[str, int]


def _no_counts() -> Counts:
    return {"delivered": 0, "failed": 0, "blocked": 0, "retrying": 0, "dropped": 0}


class BatchRun:
    """The delivery of one claimed batch: `WORKER_CONCURRENCY` lanes take its firings in order,
    one request each at a time, while `keep_lease` flushes outcomes and renews the lease."""

    def __init__(self, runtime: DeliveryRuntime, conn: Redis, batch_id: str, firings_: list[Firing]) -> None:
        self.runtime = runtime
        self.conn = conn
        self.batch_id = batch_id
        self.seen = runtime.changes_seen()  # changes heard of before the definitions are read
        self.work: list[Firing] = firings_
        self.taken = 0  # firings started (or dropped) so far, in order
        self.pending: list[Outcome] = []  # outcomes not yet written
        self.counts = _no_counts()
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

    def flush(self, *, finished: bool) -> None:
        """Write the pending outcomes and metrics; with `finished`, let go of the batch."""
        out, self.pending = self.pending, []
        firings.record(
            self.conn, self.batch_id, out, now=time.time(), retention=self.runtime.retention, finished=finished
        )
        if self.durations or self.lateness:
            pipe = self.conn.pipeline(transaction=False)
            metrics.observe(pipe, "delivery_duration_seconds", self.durations)
            metrics.observe(pipe, "lateness_seconds", self.lateness)
            self.durations, self.lateness = [], []
            pipe.execute()

    async def keep_lease(self) -> None:
        """Every `FLUSH_EVERY_SECONDS`, write what is pending; every third of the lease, renew it."""
        lease = self.runtime.settings.worker_lease_seconds
        renew_every = lease / 3
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(min(FLUSH_EVERY_SECONDS, renew_every))
            if self.pending:
                self.flush(finished=False)
            if time.monotonic() - renewed >= renew_every:
                firings.renew_lease(self.conn, self.batch_id, until=time.time() + lease)
                renewed = time.monotonic()

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
        return {f.job_id for f in self.work[self.taken - 1 :]}

    def _reread(self, job_ids: set[str]) -> None:
        latest = load_definitions(self.conn, sorted(job_ids))
        self.runtime.load_signers(self.conn, {keys.split_job_id(jid)[0] for jid in latest})
        for jid in job_ids:
            if jid in latest:
                self.current[jid] = latest[jid]
            else:
                self.current.pop(jid, None)

    async def lane(self) -> None:
        """Take the next firing not started, until none is left or the worker stops."""
        while self.taken < len(self.work) and not self.runtime.stopping:
            firing = self.work[self.taken]
            self.taken += 1
            self.refresh_definitions()
            if firing.alert is not None:  # a workspace's failure alert: no trigger to read
                self.add(await alerts.deliver(self.runtime, self.conn, firing))
                continue
            trigger = self.current_trigger(firing)
            if trigger is not None:
                await self.deliver_one(firing, trigger)

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
        if limit is None:
            attempt = await send(runtime.client(), trigger, firing, runtime.options)
        else:
            sent = await self.send_limited(firing, trigger, limit)
            if sent is None:
                return
            attempt, waited = sent
        outcome = classify(firing, trigger, attempt, runtime.retry, now=time.time())
        if waited and outcome.record is not None:  # the record shows how long the rate limit held it
            outcome.record.attempts[-1]["waited_ms"] = round(waited * 1000, 1)
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
            attempt = await send(self.runtime.client(), trigger, firing, self.runtime.options)
        finally:
            self.limits.end_turn(trigger, turn, attempt)
        return attempt, turn.waited

    async def run(self) -> Counts:
        """Deliver the batch; outcomes are flushed and the batch let go whatever happens."""
        keeper = asyncio.create_task(self.keep_lease())
        try:
            lanes = min(self.runtime.settings.worker_concurrency, len(self.work)) or 1
            await asyncio.gather(*(self.lane() for _ in range(lanes)))
            if self.runtime.stopping and self.taken < len(self.work):
                left = len(self.work) - self.taken
                log.info("batch %s: stopping, %d firing(s) left for another worker", self.batch_id, left)
        finally:
            keeper.cancel()
            try:
                await keeper
            except asyncio.CancelledError:
                pass
            self.flush(finished=True)
        return self.counts


def deliver_batch(runtime: DeliveryRuntime, conn: Redis, batch_id: str) -> Counts:
    """Claim the batch and deliver what is left of it (module docstring)."""
    claim = firings.claim_lease(conn, batch_id, now=time.time(), lease_seconds=runtime.settings.worker_lease_seconds)
    if claim is not LeaseClaim.CLAIMED:
        log.info("batch %s: %s", batch_id, "already done" if claim is LeaseClaim.EMPTY else "held by another worker")
        return _no_counts()
    runtime.busy = True
    try:
        run = BatchRun(runtime, conn, batch_id, firings.load_batch(conn, batch_id))
        return runtime.loop.run_until_complete(run.run())
    finally:
        runtime.busy = False


_runtime: DeliveryRuntime | None = None


def install_runtime(runtime: DeliveryRuntime | None) -> None:
    """Called by `scheduler-api worker`: jobs in this process share `runtime`."""
    global _runtime
    _runtime = runtime


def run_batch(batch_id: str) -> Counts:
    """RQ job: deliver the firings of batch `batch_id`."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        raise RuntimeError("run_batch must run as an RQ job")
    conn: Redis = job.connection
    if _runtime is not None:
        return deliver_batch(_runtime, conn, batch_id)
    runtime = DeliveryRuntime(load_settings())  # plain `rq worker`: one loop and client per job
    try:
        return deliver_batch(runtime, conn, batch_id)
    finally:
        runtime.close()
