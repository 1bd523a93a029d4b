"""The outbox: committed batches become RQ jobs, and go back to RQ when their job did not deliver them.

A batch stays in the outbox (``sa:outbox``) from its commit until a worker claims it (the claim is
its RQ job's first step, scheduler_api.storage.firings.claim_lease). Each batch in the outbox
comes due here every `OUTBOX_RETRY_SECONDS`:
  * never pushed (a scheduler died between committing and pushing, or a worker's lease ran out
    and the batch was handed back): it is pushed;
  * pushed, and its RQ job still queued behind others: left alone;
  * pushed, and its job failed, stopped, vanished or started without claiming the batch (a
    worker killed in between): pushed again, with a warning.
Failure rule: a batch is never left to an RQ job that will not deliver it. Pushing twice is
harmless: the second job finds the batch claimed or done.
"""

from __future__ import annotations

import logging
import math

from redis import Redis
from rq import Queue
from rq.job import Job

from scheduler_api.settings import Settings
from scheduler_api.storage import firings, keys

log = logging.getLogger("scheduler_api.scheduler")

OUTBOX_RETRY_SECONDS = 30.0
RUN_BATCH = "scheduler_api.delivery.dispatch.run_batch"  # the RQ job function


def batch_job_timeout(settings: Settings) -> int:
    """RQ timeout of one batch job: every firing of a full batch, `concurrency` at a time, may
    take the whole delivery timeout (the longest a trigger may set, `MAX_DELIVERY_TIMEOUT_SECONDS`,
    when that is longer); plus a minute. Beyond it RQ kills the job and the lease mechanism hands
    the undelivered firings to another worker."""
    waves = math.ceil(settings.scheduler_batch_size / settings.worker_concurrency)
    timeout = max(settings.delivery_timeout_seconds, settings.max_delivery_timeout_seconds)
    return int(waves * (timeout + 1) + 60)


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
                        RUN_BATCH,
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
