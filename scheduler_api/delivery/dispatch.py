"""The worker's batches in delivery (`Dispatch`) and the RQ job function (`run_batch`).

`run_batch(batch_id)` is the RQ job function. It runs under our `scheduler-api worker` (no fork,
one event loop in a thread of its own and one shared HTTP client kept across jobs,
scheduler_api.delivery.runtime) and under the plain `rq worker` command as well (then each job
builds its own runtime and delivers its whole batch before it returns). The rules of a batch are
in scheduler_api.delivery.batch; who goes first, in scheduler_api.delivery.lanes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid

from redis import Redis

from scheduler_api import cron as cronlib
from scheduler_api import tracing
from scheduler_api.delivery import alerts
from scheduler_api.delivery.batch import FLUSH_EVERY_SECONDS, BatchRun, Counts, no_counts
from scheduler_api.delivery.lanes import FairLanes
from scheduler_api.delivery.runtime import DeliveryRuntime
from scheduler_api.settings import load_settings
from scheduler_api.storage import firings, keys, leases
from scheduler_api.storage.firings import Firing
from scheduler_api.storage.leases import LeaseClaim

log = logging.getLogger("scheduler_api.delivery")

WAITING_PER_LANE = 100  # firings of one workspace waiting in a worker, per lane it may use
# Beyond that, they wait in the outbox as long as the oldest of them is late already, within these bounds.
DEFER_MIN_SECONDS = 1.0
DEFER_MAX_SECONDS = 60.0
PARK_SECONDS = 0.25  # how long a job waits for its parked firings to start before it returns
# A batch's lease is taken as still held for this share of the lease after it was last renewed;
# past it (the process was stalled) its firings wait until the next renewal says whether it is.
FRESH_SHARE = 0.9
STALE_WAIT_SECONDS = 0.05

Item = tuple[BatchRun, Firing]


class Dispatch:
    """A worker's batches in delivery (module docstring): the fair lanes every batch shares
    (scheduler_api.delivery.lanes), the batches holding firings in them, and one timer that
    writes their outcomes every `FLUSH_EVERY_SECONDS` and renews their leases every third of
    the lease.

    Under `scheduler-api worker` (`start`), the event loop runs in a thread of its own for the
    life of the process and an RQ job returns as soon as its firings are running or parked: the
    worker takes its next batch while slow requests are still in flight. Without it (the plain
    `rq worker` command, tests) a job delivers its whole batch on the calling thread.

    Failure rules: an error while a firing is started (Redis unreachable) marks its batch broken:
    its other firings are not started and go back to the outbox when the batch ends (or, if
    even that write fails, when its lease runs out). A failed outcome write is retried by the
    next timer tick; the batch keeps its lease meanwhile.
    """

    def __init__(self, runtime: DeliveryRuntime) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.lanes: FairLanes[Item] = FairLanes(
            self._run, lanes=settings.max_in_flight, per_workspace=settings.worker_concurrency
        )
        # Firings one workspace may have waiting in this worker; the rest of a batch's firings of
        # that workspace stay in the batch, pushed again later (`finish`).
        self.most_waiting = WAITING_PER_LANE * self.lanes.per_workspace
        self.live: dict[str, BatchRun] = {}
        self.token = uuid.uuid4().hex  # this worker's name on the leases it holds (scheduler_api.storage.leases)
        self.lease = settings.worker_lease_seconds
        self.thread: threading.Thread | None = None
        self._keeper: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """Firings are running or waiting in this worker (prefetching waits meanwhile)."""
        return self.lanes.busy

    def start(self) -> Dispatch:
        """Run the event loop in a thread of its own (`scheduler-api worker`)."""
        loop = self.runtime.loop
        self.thread = threading.Thread(target=loop.run_forever, name="delivery-loop", daemon=True)
        self.thread.start()
        return self

    def deliver(self, conn: Redis, batch_id: str) -> Counts:
        """The RQ job's work: claim the batch, put its firings in the lanes; return once they all
        run or are parked (with a thread), or once they have all ended (without)."""
        runtime = self.runtime
        claim = leases.claim_lease(conn, batch_id, now=time.time(), lease_seconds=self.lease, token=self.token)
        if claim is not LeaseClaim.CLAIMED:
            log.info(
                "batch %s: %s", batch_id, "already done" if claim is LeaseClaim.EMPTY else "held by another worker"
            )
            return no_counts()
        if self.thread is None:
            return runtime.loop.run_until_complete(self.admit(conn, batch_id, wait_all=True))
        return asyncio.run_coroutine_threadsafe(self.admit(conn, batch_id, wait_all=False), runtime.loop).result()

    async def admit(self, conn: Redis, batch_id: str, *, wait_all: bool) -> Counts:
        """Read the batch and queue its firings, each behind its workspace's; with `wait_all` wait
        for all of them to end. Else wait until no firing of any batch is left that could start now,
        and for the batch's parked firings to start, at most `PARK_SECONDS` after it came: a burst
        of one workspace is taken batch after batch as it drains (and other workers take the
        next batches meanwhile), while a workspace whose firings stay parked (its targets are slow)
        holds the queue for no longer than that."""
        run = BatchRun(self.runtime, conn, batch_id, firings.load_batch(conn, batch_id))
        run.done = asyncio.get_running_loop().create_future()
        run.fresh_until = time.monotonic() + self.lease * FRESH_SHARE  # claimed just now
        tracer = tracing.tracer()
        if tracer is not None:  # ends when the batch lets go (`finish`)
            run.span = tracer.start_span("batch", attributes={"batch": batch_id, "firings": len(run.work)})
        self.live[batch_id] = run
        if self._keeper is None:
            self._keeper = asyncio.get_running_loop().create_task(self._keep())
        lanes = self.lanes
        by_workspace: dict[str, list[Item]] = {}
        for firing in run.work:
            workspace = keys.split_job_id(firing.job_id)[0]
            items = by_workspace.get(workspace)
            if items is None:
                items = by_workspace[workspace] = []
            items.append((run, firing))
        for workspace, items in by_workspace.items():
            room = 0 if lanes.stopping else max(self.most_waiting - lanes.waiting(workspace), 0)
            if room < len(items):
                run.left += len(items) - room
                run.left_oldest = min(run.left_oldest, *(f.due_at for _, f in items[room:]))
                items = items[:room]
            run.outstanding += len(items)
            run.parked += lanes.put_many(workspace, items)
        if run.outstanding == 0:
            self.finish(run)
        if wait_all:
            await run.done
            return run.counts
        await lanes.wait_runnable()
        wait = run.admitted + PARK_SECONDS - time.monotonic()
        if run.parked and run.unstarted and wait > 0 and not run.done.done():
            run.started_all = asyncio.get_running_loop().create_future()
            await asyncio.wait((run.started_all, run.done), timeout=wait)
        return run.counts

    async def _run(self, item: Item) -> None:
        run, firing = item
        try:
            while time.monotonic() > run.fresh_until and not run.lost and not self.runtime.stopping:
                await asyncio.sleep(STALE_WAIT_SECONDS)  # the lease may have run out: the timer says
            if not run.broken and not run.lost and not self.runtime.stopping:
                # Its lane's turn has come: send it, or drop it when its trigger changed.
                run.refresh_definitions()
                del run.unstarted[firing.id]
                if firing.alert is not None:  # a workspace's failure alert: no trigger to read
                    run.add(await alerts.deliver(self.runtime, run.conn, firing))
                else:
                    trigger = run.current_trigger(firing)
                    if trigger is not None:
                        await run.deliver_one(firing, trigger)
        except Exception:
            log.exception("batch %s: stopped by an error; its firings not started go back to the outbox", run.batch_id)
            run.broken = True
        finally:
            run.outstanding -= 1
            if run.started_all is not None and not run.unstarted and not run.started_all.done():
                run.started_all.set_result(None)
            if run.outstanding == 0:
                self.finish(run)

    def finish(self, run: BatchRun) -> None:
        """The batch's last firing in the lanes has ended: write its outcomes and let go of it."""
        self.live.pop(run.batch_id, None)
        back_at = None
        if run.left and not self.runtime.stopping and not run.broken:
            now = time.time()
            back_at = now + min(max(now - run.left_oldest, DEFER_MIN_SECONDS), DEFER_MAX_SECONDS)
            log.info("batch %s: %d firing(s) wait in the outbox until %s", run.batch_id, run.left, cronlib.iso(back_at))
        try:
            if not run.lost and not leases.owns(
                run.conn, run.batch_id, until=time.time() + self.lease, token=self.token
            ):
                run.lost = True
                log.warning("batch %s: its lease went to another worker; not letting go of it", run.batch_id)
            # A batch held by another worker now: only the outcomes of what this worker sent are written.
            run.flush(finished=not run.lost, back_at=back_at)
            if not run.lost:
                leases.let_go(run.conn, run.batch_id)
        except Exception:  # its lease runs out and the scheduler hands what is left to another worker
            log.exception("batch %s: its outcomes could not be written", run.batch_id)
        if run.done is not None and not run.done.done():
            run.done.set_result(None)
        if run.span is not None:
            run.span.set_attribute("left", run.left)
            run.span.end()

    async def _keep(self) -> None:
        lease = self.lease
        renew_every = lease / 3
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(min(FLUSH_EVERY_SECONDS, renew_every))
            runs = list(self.live.values())
            for run in runs:
                if run.pending or run.durations:
                    try:
                        run.flush(finished=False)
                    except Exception:
                        log.exception("batch %s: its outcomes could not be written; trying again", run.batch_id)
            if runs and time.monotonic() - renewed >= renew_every:
                try:
                    ids = [r.batch_id for r in runs]
                    lost = leases.renew_leases(runs[0].conn, ids, until=time.time() + lease, token=self.token)
                    renewed = time.monotonic()
                    for run in runs:
                        if run.batch_id in lost:
                            if not run.lost:
                                log.warning(
                                    "batch %s: its lease ran out (this worker was stalled); not sending the rest",
                                    run.batch_id,
                                )
                            run.lost = True
                        else:
                            run.fresh_until = renewed + lease * FRESH_SHARE
                except Exception:
                    log.exception("the leases of %d batch(es) could not be renewed; trying again", len(runs))

    def stop(self) -> None:
        """SIGTERM (any thread): no new request starts; firings not started go back to the outbox
        as soon as their batch's requests in flight have ended."""
        self.runtime.stopping = True
        if self.thread is not None:
            self.runtime.loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        for run, _ in self.lanes.take_all():
            run.outstanding -= 1
            if run.outstanding == 0:
                self.finish(run)

    def close(self, *, drain: bool) -> None:
        """End of the worker: with `drain`, wait for every firing held to end (burst mode), else
        stop (`stop`) and wait for the requests in flight. Then the loop's thread ends."""
        runtime = self.runtime
        if self.thread is None:
            runtime.loop.run_until_complete(self._close(drain))
            return
        asyncio.run_coroutine_threadsafe(self._close(drain), runtime.loop).result()
        runtime.loop.call_soon_threadsafe(runtime.loop.stop)
        self.thread.join()
        self.thread = None

    async def _close(self, drain: bool) -> None:
        if not drain:
            self.runtime.stopping = True
            self._stop()
            await self.lanes.join()
        waiting = [run.done for run in self.live.values() if run.done is not None]
        if waiting:
            await asyncio.gather(*waiting)
        self.lanes.take_all()  # nothing is left: the idle lanes end
        await self.lanes.join()
        if self._keeper is not None:
            self._keeper.cancel()
            try:
                await self._keeper
            except asyncio.CancelledError:
                pass
            self._keeper = None


_dispatch: Dispatch | None = None


def install_runtime(runtime: DeliveryRuntime | None) -> Dispatch | None:
    """Called by `scheduler-api worker` (and tests): jobs in this process share `runtime`'s
    dispatch, which is returned. With None, the installed dispatch is closed (drained) first
    when its loop has no thread of its own."""
    global _dispatch
    if runtime is None:
        if _dispatch is not None and _dispatch.thread is None:
            _dispatch.close(drain=True)
        _dispatch = None
        return None
    _dispatch = Dispatch(runtime)
    return _dispatch


def run_batch(batch_id: str) -> Counts:
    """RQ job: deliver the firings of batch `batch_id`."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        raise RuntimeError("run_batch must run as an RQ job")
    conn: Redis = job.connection
    if _dispatch is not None:
        return _dispatch.deliver(conn, batch_id)
    runtime = DeliveryRuntime(load_settings())  # plain `rq worker`: one loop and client per job
    dispatch = Dispatch(runtime)
    try:
        return dispatch.deliver(conn, batch_id)
    finally:
        dispatch.close(drain=True)
        runtime.close()
