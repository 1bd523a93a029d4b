"""Delivery: the RQ job that sends the HTTP requests of one batch of firings.

`run_batch(batch_id)` is the RQ job function. It runs under our `scheduler-api worker` (no fork,
one event loop and one shared `httpx.AsyncClient` kept across jobs) and under the plain
`rq worker` command as well (then each job builds its own loop and client). What one attempt
sends and how its outcome is judged is in `scheduler_api.delivery.attempt`; in short:

* a 2xx answer is delivered;
* any other status (3xx included, redirects are not followed), a timeout of the whole exchange
  (`DELIVERY_TIMEOUT_SECONDS`) or a transport error (refused, reset, DNS, TLS) is **retried**, up to
  `DELIVERY_MAX_RETRIES` more times with exponential backoff and jitter, then failed;
* never retried, final at once: a target the SSRF guard refuses (blocked), a header that cannot
  be decrypted or sent, an url that cannot be sent (failed).

Rules of the batch:
* a firing whose trigger was removed or replaced since it was scheduled is **dropped** unsent:
  a replace or delete takes effect for every firing not yet started. A batch being delivered
  reads the definitions again, for its firings still waiting for a free slot, as soon as the
  worker hears of a change (scheduler_api.delivery.changes, about a millisecond after the API's answer)
  and in any case every 0.25 s;
* at most `WORKER_CONCURRENCY` requests are in flight; the client connects only to addresses the
  SSRF guard allows (scheduler_api.ssrf), checked after DNS resolution;
* outcomes are written every 0.25 s and when the batch ends. A worker that dies mid-batch stops
  renewing its lease; the scheduler then hands the firings without an outcome to another worker,
  so a firing is delivered at least once (possibly twice if it was sent but not yet recorded:
  the Idempotency-Key lets the receiver tell);
* on SIGTERM the batch starts no new request; those in flight finish and the rest go back to
  the outbox at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import aiohttp
from redis import Redis

from scheduler_api import cron as cronlib
from scheduler_api import metrics
from scheduler_api.delivery import attempt as sending
from scheduler_api.delivery.attempt import Attempt, SendOptions, classify, send
from scheduler_api.delivery.changes import ChangeWatch
from scheduler_api.delivery.http import DeliveryClient, DeliveryTransport
from scheduler_api.header_crypto import HeaderCipher, SecretsError, open_headers
from scheduler_api.settings import Settings, load_settings
from scheduler_api.ssrf import GuardedResolver
from scheduler_api.storage import firings, keys
from scheduler_api.storage.firings import Firing, Outcome, Retention
from scheduler_api.storage.triggers import StoredTrigger, load_definitions

log = logging.getLogger("scheduler_api.delivery")

FLUSH_EVERY_SECONDS = 0.25
OUTCOME_NAMES = {"d": "delivered", "f": "failed", "b": "blocked", "r": "retrying"}


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (it is a dependency on Linux and macOS), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class DeliveryRuntime:
    """An event loop and one shared HTTP client that live as long as the worker process."""

    def __init__(self, settings: Settings, *, resolver: Any = None) -> None:
        """`resolver`: an aiohttp resolver to ask instead of the system's (tests control DNS with it);
        the SSRF guard always wraps it."""
        self.settings = settings
        self.options = SendOptions.from_settings(settings)
        self.cipher = HeaderCipher(settings.secrets_key) if settings.secrets_key else None
        self.retention = Retention.from_settings(settings)
        self.resolver = resolver
        self.loop = new_event_loop()
        self.stopping = False
        self.busy = False  # a batch is being delivered (prefetching waits)
        self.changes: ChangeWatch | None = None  # set by `scheduler-api worker`
        self._client: DeliveryClient | None = None

    def client(self) -> DeliveryClient:
        """The shared client: httpx over aiohttp, whose connector resolves through the SSRF guard."""
        if self._client is None:
            concurrency = self.settings.worker_concurrency
            guard = GuardedResolver(self.options.policy, self.resolver)

            def session() -> aiohttp.ClientSession:  # built lazily, inside the running loop
                # No cookie jar: one client serves every workspace, and a cookie one target set
                # must never travel with another tenant's request.
                return aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=concurrency, resolver=guard),
                    cookie_jar=aiohttp.DummyCookieJar(),
                    # A request with a body always names its type (sending.build_request); a
                    # bodyless POST gets none, not aiohttp's "application/octet-stream".
                    skip_auto_headers=("Content-Type",),
                )

            self._client = DeliveryClient(
                DeliveryTransport(timeout=self.settings.delivery_timeout_seconds, client=session),
                timeout=self.settings.delivery_timeout_seconds,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self.loop.run_until_complete(self._client.aclose())
            self._client = None
        self.loop.run_until_complete(asyncio.sleep(0))  # let aiohttp close its sockets
        self.loop.close()

    def warm(self, trigger: StoredTrigger) -> None:
        """Prefetching's hook (scheduler_api.storage.prefetch): `sending.warm` with this worker's options."""
        sending.warm(trigger, self.options)

    def run_batch(self, conn: Redis, batch_id: str) -> dict[str, int]:
        """Deliver what is left of a batch; see the module docstring for the rules."""
        self.busy = True
        try:
            return self._run_batch(conn, batch_id)
        finally:
            self.busy = False

    def _run_batch(self, conn: Redis, batch_id: str) -> dict[str, int]:
        settings = self.settings
        claim = firings.claim_lease(conn, batch_id, now=time.time(), lease_seconds=settings.worker_lease_seconds)
        if claim != 1:
            log.info("batch %s: %s", batch_id, "already done" if claim == 0 else "held by another worker")
            return {"delivered": 0, "failed": 0, "blocked": 0, "retrying": 0, "dropped": 0}
        seen = self.changes_seen()
        batch = firings.load_batch(conn, batch_id)
        defs = load_definitions(conn, sorted({f.job_id for f in batch}))
        work: list[tuple[Firing, StoredTrigger]] = []
        dropped: list[Outcome] = []
        for f in batch:
            trigger = defs.get(f.job_id)
            if trigger is None or trigger.version != f.version:
                log.info("firing %s dropped: its trigger was removed or replaced", f.id)
                dropped.append(Outcome("x", f.id))
                continue
            try:
                opened = open_headers(self.cipher, trigger.headers)
                if opened is not trigger.headers:  # decrypted: a copy, the cached definition stays sealed
                    trigger = dataclasses.replace(trigger, headers=opened)
            except SecretsError as e:
                log.error("firing %s failed: %s", f.id, e)
                failed = Attempt(time.time(), 0.0, error="secrets", message=str(e), final=True)
                dropped.append(classify(f, trigger, failed, settings, now=time.time()))
                continue
            work.append((f, trigger))
        return self.loop.run_until_complete(self._deliver(conn, batch_id, work, dropped, seen))

    def changes_seen(self) -> int:
        return self.changes.generation if self.changes is not None else 0

    async def _deliver(
        self,
        conn: Redis,
        batch_id: str,
        work: list[tuple[Firing, StoredTrigger]],
        dropped: list[Outcome],
        seen: int,
    ) -> dict[str, int]:
        settings = self.settings
        client = self.client()
        pending: list[Outcome] = list(dropped)
        counts = {"delivered": 0, "failed": 0, "blocked": 0, "retrying": 0, "dropped": 0}
        for o in dropped:
            counts[OUTCOME_NAMES.get(o.kind, "dropped")] += 1
        durations: list[float] = []
        lateness: list[float] = []

        def flush(finished: bool) -> None:
            nonlocal pending, durations, lateness
            out, pending = pending, []
            firings.record(conn, batch_id, out, now=time.time(), retention=self.retention, finished=finished)
            if durations or lateness:
                pipe = conn.pipeline(transaction=False)
                metrics.observe(pipe, "delivery_duration_seconds", durations)
                metrics.observe(pipe, "lateness_seconds", lateness)
                durations, lateness = [], []
                pipe.execute()

        async def keeper() -> None:
            renew_every = settings.worker_lease_seconds / 3
            renewed = time.monotonic()
            while True:
                await asyncio.sleep(min(FLUSH_EVERY_SECONDS, renew_every))
                if pending:
                    flush(False)
                if time.monotonic() - renewed >= renew_every:
                    firings.renew_lease(conn, batch_id, until=time.time() + settings.worker_lease_seconds)
                    renewed = time.monotonic()

        async def one(firing: Firing, trigger: StoredTrigger) -> None:
            attempt = await send(client, trigger, firing, self.options)
            outcome = classify(firing, trigger, attempt, settings, now=time.time())
            counts[OUTCOME_NAMES[outcome.kind]] += 1
            pending.append(outcome)
            if attempt.error != "blocked":
                durations.append(attempt.duration)
            if firing.attempt == 1:
                lateness.append(max(attempt.started_at - firing.scheduled_at, 0.0))
            if attempt.error == "blocked":  # say why: the operator must see which address was refused
                log.warning(
                    "delivery blocked by the SSRF guard workspace=%s trigger=%s: %s",
                    trigger.workspace_id,
                    trigger.job_id,
                    attempt.message,
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
                    "outcome": OUTCOME_NAMES[outcome.kind],
                }  # never header values; in production each is a field of the JSON log line
                log.info(" ".join(["delivery", *(f"{k}={v}" for k, v in fields.items())]), extra=fields)

        # `WORKER_CONCURRENCY` lanes take the firings in order, one request each at a time.
        # Firings not taken yet have not started: a replace or delete made meanwhile must drop them
        # too. `current` holds the definitions as last read; those of a workspace are read again
        # as soon as a change to it is heard of, and all of them when the last full read is
        # FLUSH_EVERY_SECONDS old (or when changes may have been missed).
        current: dict[str, StoredTrigger] = {f.job_id: t for f, t in work}
        checked = time.monotonic()
        taken = 0

        def reread(job_ids: set[str]) -> None:
            latest = load_definitions(conn, sorted(job_ids))
            for jid in job_ids:
                if jid in latest:
                    current[jid] = latest[jid]
                else:
                    current.pop(jid, None)

        async def lane() -> None:
            nonlocal checked, taken, seen
            while taken < len(work) and not self.stopping:
                firing, trigger = work[taken]
                taken += 1
                if time.monotonic() - checked >= FLUSH_EVERY_SECONDS:
                    seen = self.changes_seen()
                    reread({f.job_id for f, _ in work[taken - 1 :]})
                    checked = time.monotonic()
                elif self.changes is not None and self.changes.generation != seen:
                    changed, seen = self.changes.changed_since(seen)
                    waiting = {f.job_id for f, _ in work[taken - 1 :]}
                    if changed is None:
                        reread(waiting)
                        checked = time.monotonic()
                    else:
                        reread({jid for jid in waiting if keys.split_job_id(jid)[0] in changed})
                latest = current.get(firing.job_id)
                if latest is None or latest.version != firing.version:
                    log.info("firing %s dropped: its trigger was removed or replaced", firing.id)
                    pending.append(Outcome("x", firing.id))
                    counts["dropped"] += 1
                    continue
                await one(firing, trigger)

        keeper_task = asyncio.create_task(keeper())
        try:
            await asyncio.gather(*(lane() for _ in range(min(settings.worker_concurrency, len(work)) or 1)))
            if self.stopping and taken < len(work):
                log.info("batch %s: stopping, %d firing(s) left for another worker", batch_id, len(work) - taken)
        finally:
            keeper_task.cancel()
            try:
                await keeper_task
            except asyncio.CancelledError:
                pass
            flush(True)
        return counts


_runtime: DeliveryRuntime | None = None


def install_runtime(runtime: DeliveryRuntime | None) -> None:
    """Called by `scheduler-api worker`: jobs in this process share `runtime`."""
    global _runtime
    _runtime = runtime


def run_batch(batch_id: str) -> dict[str, int]:
    """RQ job: deliver the firings of batch `batch_id`."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        raise RuntimeError("run_batch must run as an RQ job")
    conn: Redis = job.connection
    if _runtime is not None:
        return _runtime.run_batch(conn, batch_id)
    runtime = DeliveryRuntime(load_settings())  # plain `rq worker`: one loop and client per job
    try:
        return runtime.run_batch(conn, batch_id)
    finally:
        runtime.close()
