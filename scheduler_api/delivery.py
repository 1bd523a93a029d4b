"""Delivery: the RQ job that sends the HTTP requests of one batch of firings.

`run_batch(batch_id)` is the RQ job function. It runs under our `scheduler-api worker` (no fork,
one event loop and one shared `httpx.AsyncClient` kept across jobs) and under the plain
`rq worker` command as well (then each job builds its own loop and client).

What is sent: the trigger's method and url, its headers, `payload` as a JSON body for POST, PUT
and PATCH (none for GET and DELETE), plus `User-Agent: scheduler-api/<version>`,
`X-Scheduler-Workspace`, `X-Scheduler-Trigger` (the jobId), `X-Scheduler-Scheduled-At`
(ISO 8601 UTC), `X-Scheduler-Attempt` (1 for the first try) and `Idempotency-Key` (the firing id,
the same for every attempt of one firing). Redirects are not followed.

Outcome rules:
* a 2xx response is **delivered** - final;
* any other status (3xx and 4xx included), a timeout (`DELIVERY_TIMEOUT_SECONDS` for the whole
  exchange) or a transport error (refused, reset, DNS, TLS) is a failed attempt: it is **retried**
  while retries remain (`DELIVERY_MAX_RETRIES`, 3 = four attempts in all), after
  `DELIVERY_BACKOFF_SECONDS * 2**(n-1)` seconds scaled by a random factor in [0.5, 1]
  (n = retries so far + 1); the retry is its own firing entry, due at that time, that the
  scheduler moves into a new batch; then the firing is **failed** - final;
* a firing whose trigger was removed or replaced since it was scheduled is **dropped** unsent:
  a replace or delete takes effect for every firing not yet started (a batch being delivered
  reads the definitions again every 0.25 s for its firings still waiting for a free slot).
Outcomes are written every 0.25 s and when the batch ends. A worker that dies mid-batch stops
renewing its lease; the scheduler then hands the firings without an outcome to another worker,
so a firing is delivered at least once (possibly twice if it was sent but not yet recorded: the
Idempotency-Key lets the receiver tell).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx
from redis import Redis

from scheduler_api import __version__, firings
from scheduler_api import cron as cronlib
from scheduler_api.firings import Firing, Outcome
from scheduler_api.settings import Settings, load_settings
from scheduler_api.store import StoredTrigger, load_definitions
from scheduler_api.triggers import BODY_METHODS

log = logging.getLogger("scheduler_api.delivery")

RESPONSE_EXCERPT_BYTES = 256
FLUSH_EVERY_SECONDS = 0.25


def build_headers(trigger: StoredTrigger, firing: Firing, *, has_body: bool) -> httpx.Headers:
    headers = httpx.Headers(trigger.headers)
    if has_body and "content-type" not in headers:
        headers["Content-Type"] = "application/json"
    headers["User-Agent"] = f"scheduler-api/{__version__}"
    headers["X-Scheduler-Workspace"] = trigger.workspace_id
    headers["X-Scheduler-Trigger"] = trigger.job_id
    headers["X-Scheduler-Scheduled-At"] = cronlib.iso(firing.scheduled_at)
    headers["X-Scheduler-Attempt"] = str(firing.attempt)
    headers["Idempotency-Key"] = firing.id
    return headers


def backoff_seconds(base: float, retry_number: int, rand: float) -> float:
    """Delay before retry `retry_number` (1-based): base * 2**(n-1), scaled into [0.5, 1] by rand."""
    return float(base * (2 ** (retry_number - 1)) * (0.5 + rand / 2))


@dataclass
class Attempt:
    started_at: float
    duration: float
    status: int | None = None
    error: str | None = None
    message: str | None = None
    body: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def as_dict(self, number: int) -> dict[str, Any]:
        return {
            "attempt": number,
            "started_at": cronlib.iso(self.started_at),
            "duration_ms": round(self.duration * 1000, 1),
            "status": self.status,
            "error": self.error,
            "message": self.message,
            "body": self.body,
        }


async def send(client: httpx.AsyncClient, trigger: StoredTrigger, firing: Firing, timeout: float) -> Attempt:
    """Send one attempt; never raises (every failure becomes the Attempt's `error`)."""
    has_body = trigger.method in BODY_METHODS and trigger.payload is not None
    content = json.dumps(trigger.payload).encode() if has_body else None
    headers = build_headers(trigger, firing, has_body=has_body)
    started = time.time()
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            request = client.build_request(
                trigger.method, trigger.url, headers=headers, content=content, timeout=timeout
            )
            response = await client.send(request, stream=True)
            try:
                excerpt = b""
                async for chunk in response.aiter_raw():
                    excerpt += chunk
                    if len(excerpt) >= RESPONSE_EXCERPT_BYTES:
                        break
            finally:
                await response.aclose()
        return Attempt(
            started,
            time.perf_counter() - t0,
            status=response.status_code,
            body=excerpt[:RESPONSE_EXCERPT_BYTES].decode("utf-8", "replace") or None,
        )
    except (TimeoutError, httpx.TimeoutException):
        return Attempt(
            started, time.perf_counter() - t0, error="timeout", message=f"no complete response within {timeout:g}s"
        )
    except httpx.HTTPError as e:
        return Attempt(started, time.perf_counter() - t0, error=type(e).__name__, message=str(e)[:300])
    except Exception as e:  # an unexpected transport failure is still a failed attempt, not a crash
        log.exception("unexpected error delivering %s", firing.id)
        return Attempt(started, time.perf_counter() - t0, error=type(e).__name__, message=str(e)[:300])


def classify(firing: Firing, trigger: StoredTrigger, attempt: Attempt, settings: Settings, *, now: float) -> Outcome:
    """Turn an attempt into the firing's outcome (see the module docstring for the rules)."""
    tries = [*firing.attempts, attempt.as_dict(firing.attempt)]
    retries_used = firing.attempt - 1
    if not attempt.ok and retries_used < settings.delivery_max_retries:
        delay = backoff_seconds(settings.delivery_backoff_seconds, retries_used + 1, random.random())
        nxt = Firing(firing.id, firing.job_id, firing.version, firing.scheduled_at, firing.attempt + 1, tries)
        return Outcome("r", firing.id, nxt.to_json(), now + delay)
    record = {
        "id": firing.id,
        "jobId": firing.job_id,
        "workspace_id": trigger.workspace_id,
        "scheduled_at": cronlib.iso(firing.scheduled_at),
        "outcome": "delivered" if attempt.ok else "failed",
        "finished_at": cronlib.iso(now),
        "attempts": tries,
    }
    return Outcome("d" if attempt.ok else "f", firing.id, json.dumps(record, separators=(",", ":")))


class DeliveryRuntime:
    """An event loop and one shared HTTP client that live as long as the worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.stopping = False
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            from httpx_aiohttp import AiohttpTransport

            limits = httpx.Limits(
                max_connections=self.settings.worker_concurrency,
                max_keepalive_connections=self.settings.worker_concurrency,
            )
            self._client = httpx.AsyncClient(
                transport=AiohttpTransport(limits=limits, trust_env=False),
                timeout=self.settings.delivery_timeout_seconds,
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self.loop.run_until_complete(self._client.aclose())
            self._client = None
        self.loop.run_until_complete(asyncio.sleep(0))  # let aiohttp close its sockets
        self.loop.close()

    def run_batch(self, conn: Redis, batch_id: str) -> dict[str, int]:
        """Deliver what is left of a batch; see the module docstring for the rules."""
        settings = self.settings
        claim = firings.claim_lease(conn, batch_id, now=time.time(), lease_seconds=settings.worker_lease_seconds)
        if claim != 1:
            log.info("batch %s: %s", batch_id, "already done" if claim == 0 else "held by another worker")
            return {"delivered": 0, "failed": 0, "retrying": 0, "dropped": 0}
        batch = firings.load_batch(conn, batch_id)
        defs = load_definitions(conn, sorted({f.job_id for f in batch}))
        work: list[tuple[Firing, StoredTrigger]] = []
        dropped: list[Outcome] = []
        for f in batch:
            trigger = defs.get(f.job_id)
            if trigger is None or trigger.version != f.version:
                log.info("firing %s dropped: its trigger was removed or replaced", f.id)
                dropped.append(Outcome("x", f.id))
            else:
                work.append((f, trigger))
        return self.loop.run_until_complete(self._deliver(conn, batch_id, work, dropped))

    async def _deliver(
        self, conn: Redis, batch_id: str, work: list[tuple[Firing, StoredTrigger]], dropped: list[Outcome]
    ) -> dict[str, int]:
        settings = self.settings
        client = self.client()
        pending: list[Outcome] = list(dropped)
        counts = {"delivered": 0, "failed": 0, "retrying": 0, "dropped": len(dropped)}
        sem = asyncio.Semaphore(settings.worker_concurrency)

        def flush(finished: bool) -> None:
            nonlocal pending
            out, pending = pending, []
            firings.record(
                conn,
                batch_id,
                out,
                now=time.time(),
                keep_seconds=settings.completed_keep_seconds,
                keep_done=settings.completed_keep_count,
                keep_failed=settings.failed_keep_count,
                finished=finished,
            )

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
            try:
                attempt = await send(client, trigger, firing, settings.delivery_timeout_seconds)
            finally:
                sem.release()
            outcome = classify(firing, trigger, attempt, settings, now=time.time())
            counts[{"d": "delivered", "f": "failed", "r": "retrying"}[outcome.kind]] += 1
            pending.append(outcome)
            log.info(
                "delivery workspace=%s trigger=%s scheduled_at=%s attempt=%d status=%s error=%s "
                "duration_ms=%.1f outcome=%s",
                trigger.workspace_id,
                trigger.job_id,
                cronlib.iso(firing.scheduled_at),
                firing.attempt,
                attempt.status,
                attempt.error,
                attempt.duration * 1000,
                {"d": "delivered", "f": "failed", "r": "retrying"}[outcome.kind],
            )

        keeper_task = asyncio.create_task(keeper())
        tasks: list[asyncio.Task[None]] = []
        # Firings waiting for a free slot have not started: a replace or delete made meanwhile must
        # drop them too, so definitions are read again when the last read is FLUSH_EVERY_SECONDS old.
        current: dict[str, StoredTrigger] | None = None
        checked = time.monotonic()
        try:
            for i, (firing, trigger) in enumerate(work):
                await sem.acquire()
                if self.stopping:
                    sem.release()
                    log.info("batch %s: stopping, %d firing(s) left for another worker", batch_id, len(work) - i)
                    break
                if time.monotonic() - checked >= FLUSH_EVERY_SECONDS:
                    current = load_definitions(conn, sorted({f.job_id for f, _ in work[i:]}))
                    checked = time.monotonic()
                if current is not None:
                    latest = current.get(firing.job_id)
                    if latest is None or latest.version != firing.version:
                        sem.release()
                        log.info("firing %s dropped: its trigger was removed or replaced", firing.id)
                        pending.append(Outcome("x", firing.id))
                        counts["dropped"] += 1
                        continue
                tasks.append(asyncio.create_task(one(firing, trigger)))
            await asyncio.gather(*tasks)
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
