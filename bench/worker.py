"""The worker's CPU per delivery, in one process and without waiting for due times:
``python -m bench.worker``.

Starts a private redis-server and the receiver (its own process, as in `bench.firing`), registers
``--triggers`` triggers due every minute at second 0 (through `scheduler_api.storage.triggers`, not the API),
then ``--rounds`` times: one scheduler tick at an injected due time, which writes every firing
into batches and RQ jobs, then `scheduler_api.delivery.worker.run_worker` in burst mode in this process
until the queue is empty. It prints the CPU this process spent per delivery in each round and
the deliveries per second. The first round parses every trigger for the first time (what
prefetching does ahead of due times in a running worker, see scheduler_api.storage.prefetch); later
rounds are the steady state. The worker is tuned as `scheduler-api worker` tunes it (gc).

This isolates the worker's own cost from the scheduler's, which `bench.firing` cannot; it is
what the optimisations of issue #3 were measured with. Settings come from the environment
(WORKER_CONCURRENCY, SCHEDULER_BATCH_SIZE, ...), with the receiver allowed past the SSRF guard.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from rq import Queue

from bench.common import (
    RESULTS,
    ReceiverProcess,
    fmt,
    loopback_allowlist,
    print_table,
    provenance_line,
    save,
    self_cpu_seconds,
)
from scheduler_api.delivery.worker import run_worker, tune_gc
from scheduler_api.embedded_redis import RedisServer
from scheduler_api.engine.tick import tick as engine_tick
from scheduler_api.settings import load_settings
from scheduler_api.storage import connection, edits
from scheduler_api.triggers import Trigger

WORKSPACES = 10


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--triggers", type=int, default=10_000, help="triggers due at once (default 10,000)")
    parser.add_argument("--rounds", type=int, default=3, help="due times to deliver (default 3)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines file to append to")
    parser.add_argument("--no-save", action="store_true", help="do not append to the results file")
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp, RedisServer() as redis_server:
        receiver = ReceiverProcess(delay_ms=0, log_dir=Path(tmp)).wait_ready()
        try:
            settings = load_settings(
                redis_url=redis_server.url,
                target_allowlist=loopback_allowlist(os.environ.get("TARGET_ALLOWLIST")),
                max_triggers_per_workspace=max(1000, math.ceil(args.triggers / WORKSPACES)),
                misfire_grace_seconds=10**6,  # the injected due times lie in the past
                log_level="WARNING",
            )
            conn = connection.connect(redis_server.url)
            start = math.floor(time.time() / 60) * 60
            per_ws = math.ceil(args.triggers / WORKSPACES)
            for w in range(WORKSPACES):
                triggers = [
                    Trigger(cron="0 * * * * *", url=f"{receiver.url}/hook/ws-{w}/{i}", method="POST", payload={"i": i})
                    for i in range(w * per_ws, min((w + 1) * per_ws, args.triggers))
                ]
                edits.replace(conn, f"ws-{w}", triggers, now=lambda: start)
            queue = Queue(settings.queue_name, connection=conn)
            tune_gc()
            for n in range(args.rounds):
                tick = engine_tick(conn, queue, settings, now=start + 60 * (n + 1) + 0.01)
                before, cpu0, t0 = receiver.count(), self_cpu_seconds(), time.perf_counter()
                run_worker(settings, conn, burst=True)
                cpu, seconds = self_cpu_seconds() - cpu0, time.perf_counter() - t0
                delivered = receiver.count() - before
                rows.append(
                    {
                        "round": n + 1,
                        "fired": tick.fired,
                        "delivered": delivered,
                        "seconds": round(seconds, 3),
                        "rps": round(delivered / seconds, 1) if seconds else None,
                        "cpu_ms_per_delivery": round(cpu / delivered * 1000, 3) if delivered else None,
                    }
                )
        finally:
            receiver.stop()

    print_table(
        f"bench.worker: {args.triggers:,} triggers, WORKER_CONCURRENCY {settings.worker_concurrency}, "
        f"SCHEDULER_BATCH_SIZE {settings.scheduler_batch_size}  |  " + provenance_line(),
        ["round", "fired", "delivered", "seconds", "deliveries/s", "CPU ms per delivery"],
        [
            [
                str(r["round"]) + (" (first parse)" if r["round"] == 1 else ""),
                fmt(r["fired"]),
                fmt(r["delivered"]),
                fmt(r["seconds"], 2),
                fmt(r["rps"], 0),
                fmt(r["cpu_ms_per_delivery"], 3),
            ]
            for r in rows
        ],
    )
    save(
        {
            "bench": "worker",
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "worker_concurrency": settings.worker_concurrency,
            "scheduler_batch_size": settings.scheduler_batch_size,
            "rows": rows,
        },
        None if args.no_save else args.results,
    )


if __name__ == "__main__":
    main()
