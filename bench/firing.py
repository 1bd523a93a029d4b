"""End-to-end firing benchmark: ``python -m bench.firing``.

1. Starts a private redis-server on a free port, the receiver (`bench.receiver`, its own process;
   ``--delay-ms`` makes it answer slowly), and the service's processes with the production
   commands - ``python -m scheduler_api.cli serve``, ``... scheduler`` and ``--workers`` times
   ``... worker`` - configured only through the environment (REDIS_URL, PORT, HOST=127.0.0.1,
   LOG_LEVEL=WARNING, API_KEYS with a key of the run's own, TARGET_ALLOWLIST letting the loopback
   receiver past the SSRF guard, WORKER_CONCURRENCY with ``--concurrency``,
   MAX_TRIGGERS_PER_WORKSPACE when a workspace needs more than the default; anything else set in
   the caller's environment passes through). They run in an empty directory, so no ``.env`` file
   adds to that.
2. Registers ``--triggers`` triggers (POST with a small JSON payload, to the receiver) through the
   HTTP API, one whole-list replace per workspace, spread over ``--workspaces``, all on ``--cron``.
   Registration starts right after a due time when the next one is too close, so that every
   trigger is registered before the first measured due time. With ``--rate-limit HOST:PER_SECOND``
   every workspace's settings get that limit on HOST first (``PUT .../settings``).
3. Waits for ``--firings`` due times and reads every arrival at the receiver (arrival time,
   ``X-Scheduler-Scheduled-At``, ``Idempotency-Key``), until all are in or ``--timeout`` seconds after
   the last due time, then ``--settle`` seconds more to catch late duplicates.
4. Prints one table and appends one JSON line to ``bench/results.jsonl``:
   delivered / expected, duplicates (an Idempotency-Key arriving again after an earlier request
   with it was answered 200), missing, lateness (arrival - scheduled time) percentiles,
   deliveries/s from the first to the last arrival of a firing, peak RSS (VmHWM) and CPU time of
   the API, scheduler and each worker (CPU counted from just before the first due time), Redis
   ``used_memory`` per trigger at rest (after registration, before the first firing, minus the
   baseline of the idle service), registration time, how busy the machine was (and how much of
   that was other processes), Redis CPU seconds (INFO cpu) per 10,000 deliveries, the git commit and
   the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from redis import Redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry

from bench import noisy
from bench.common import (
    RESULTS,
    Child,
    LoadMeter,
    ReceiverProcess,
    auth_headers,
    fmt,
    print_table,
    provenance_line,
    redis_cpu_seconds,
    redis_version,
    save,
    service_env,
    settings_in,
    spawn_service,
    start_api,
    stop_all,
    summary,
    used_memory,
    wait_until,
)
from scheduler_api import cron as cronlib
from scheduler_api.embedded_redis import RedisServer
from scheduler_api.settings import Settings
from scheduler_api.storage import keys

DEFAULT_MAX_PER_WORKSPACE = 1000
POLL_SECONDS = 0.5


@dataclass
class Firing:
    """What arrived for one due time."""

    due: float
    expected: int
    arrivals: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))

    def stats(self) -> dict[str, Any]:
        firsts: list[float] = []
        duplicates = 0
        repeats = 0
        for visits in self.arrivals.values():
            visits.sort()
            firsts.append(visits[0][0])
            answered = visits[0][1]
            for arrived, done in visits[1:]:
                repeats += 1
                if arrived >= answered:
                    duplicates += 1
                answered = min(answered, done)
        firsts.sort()
        span = firsts[-1] - firsts[0] if len(firsts) > 1 else None
        return {
            "due": cronlib.iso(self.due),
            "expected": self.expected,
            "delivered": len(self.arrivals),
            "missing": max(self.expected - len(self.arrivals), 0),
            "duplicates": duplicates,
            "repeats": repeats,
            "lateness_s": {k: _r(v) for k, v in summary([t - self.due for t in firsts]).items()},
            "first_to_last_s": _r(span),
            "most_in_one_second": most_in_one_second(firsts),
            "deliveries_per_s": round(len(firsts) / span, 1) if span else None,
        }


def most_in_one_second(times: list[float]) -> int:
    """The most of the sorted `times` in any window [t, t + 1 s) (a sliding second)."""
    most = start = 0
    for end, t in enumerate(times):
        while times[start] <= t - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def rate_limit(text: str) -> tuple[str, float]:
    """``HOST:PER_SECOND`` as (host, per second); argparse's type for --rate-limit."""
    host, _, rate = text.rpartition(":")
    try:
        per_second = float(rate)
    except ValueError:
        per_second = 0.0
    if not host or not per_second > 0:
        raise argparse.ArgumentTypeError(f"expected HOST:PER_SECOND (e.g. 127.0.0.1:100), got {text!r}")
    return host, per_second


async def put_rate_limits(base: str, workspaces: int, host: str, per_second: float) -> None:
    """Give every workspace one rate limit: `per_second` requests a second to `host`."""
    body = {
        "alerts": None,
        "auto_disable_after_failures": None,
        "rate_limits": [{"host": host, "per_second": per_second}],
    }
    async with aiohttp.ClientSession(headers=auth_headers()) as session:
        for w in range(workspaces):
            async with session.put(f"{base}/api/workspaces/ws-{w}/settings", json=body) as response:
                if response.status != 200:
                    raise RuntimeError(f"settings of ws-{w}: HTTP {response.status}: {(await response.read())[:300]!r}")


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def spread(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal counts (the first ones get the remainder)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def trigger_list(count: int, workspace: str, cron: str, receiver_url: str, overlap: str | None = None) -> bytes:
    triggers: list[dict[str, Any]] = [
        {"cron": cron, "url": f"{receiver_url}/hook/{workspace}/{i}", "method": "POST", "payload": {"i": i}}
        for i in range(count)
    ]
    if overlap is not None:
        for t in triggers:
            t["overlap"] = overlap
    return json.dumps({"triggers": triggers}).encode()


async def register(
    base: str, counts: list[int], cron: str, receiver_url: str, overlap: str | None = None
) -> list[float]:
    """Replace each workspace's list, one request after the other; return each request's seconds."""
    timings: list[float] = []
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout, headers=auth_headers()) as session:
        for w, count in enumerate(counts):
            body = trigger_list(count, f"ws-{w}", cron, receiver_url, overlap)
            t0 = time.perf_counter()
            async with session.post(
                f"{base}/api/workspaces/ws-{w}/triggers", data=body, headers={"Content-Type": "application/json"}
            ) as response:
                answer = await response.read()
                if response.status != 200 or json.loads(answer).get("added") != count:
                    raise RuntimeError(f"registering ws-{w}: HTTP {response.status}: {answer[:300]!r}")
            timings.append(time.perf_counter() - t0)
    return timings


def sleep_until(ts: float, children: list[Child]) -> None:
    """Sleep until wall-clock `ts`, checking the children every second."""
    while (left := ts - time.time()) > 0:
        for child in children:
            child.check()
        time.sleep(min(left, 1.0))


def start_service(
    args: argparse.Namespace, env: dict[str, str], conn: Redis, tmpdir: Path, children: list[Child]
) -> tuple[Child, str, Child, list[Child]]:
    api, base = start_api(env, cwd=tmpdir, log_dir=tmpdir)
    children.append(api)
    scheduler = spawn_service("scheduler", "scheduler", env=env, cwd=tmpdir, log_dir=tmpdir)
    children.append(scheduler)
    workers = [spawn_service(f"worker-{i}", "worker", env=env, cwd=tmpdir, log_dir=tmpdir) for i in range(args.workers)]
    children.extend(workers)
    queue = Queue(queue_name(env), connection=conn)
    wait_until(
        "workers",
        lambda: Worker.count(connection=conn, queue=queue) >= args.workers,
        timeout=30,
        children=children,
    )
    wait_until(
        "scheduler",
        lambda: any(True for _ in conn.scan_iter(match=keys.PREFIX + "scheduler_instance:*", count=100)),
        timeout=30,
        children=children,
    )
    return api, base, scheduler, workers


def queue_name(env: dict[str, str]) -> str:
    return env.get("QUEUE_NAME") or str(Settings.model_fields["queue_name"].default)


def key_memory(conn: Redis, workspaces: int) -> int:
    """Bytes Redis reports (MEMORY USAGE, exact) for the schedule and the workspace hashes."""
    names = [keys.SCHEDULE] + [keys.workspace(f"ws-{w}") for w in range(workspaces)]
    return sum(int(conn.memory_usage(name, samples=0) or 0) for name in names)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.firing", description=__doc__.split("\n")[0])
    parser.add_argument("--triggers", type=int, default=10_000, help="triggers to register (default 10,000)")
    parser.add_argument("--workspaces", type=int, default=10, help="workspaces they are spread over (default 10)")
    parser.add_argument("--cron", default="* * * * *", help="cron of every trigger (default '* * * * *')")
    parser.add_argument("--firings", type=int, default=2, help="due times to measure (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--concurrency", type=int, default=None, help="WORKER_CONCURRENCY (default: the service's)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="the receiver answers after this long")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="give up this many seconds after the last due time (default 120)"
    )
    parser.add_argument(
        "--overlap", choices=("allow", "skip", "buffer_one"), default=None, help="every trigger's overlap policy"
    )
    parser.add_argument(
        "--rate-limit",
        type=rate_limit,
        default=None,
        metavar="HOST:PER_SECOND",
        help="give every workspace this rate limit (the receiver's host is 127.0.0.1)",
    )
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to watch for duplicates at the end")
    parser.add_argument("--noisy", action="store_true", help="the noisy-neighbour case instead (bench.noisy)")
    noisy.add_arguments(parser)
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines file to append to")
    parser.add_argument("--no-save", action="store_true", help="do not append to the results file")
    args = parser.parse_args(argv)
    if args.noisy:
        noisy.main(args)
        return
    if not (1 <= args.triggers <= 1_000_000 and 1 <= args.workspaces <= args.triggers):
        parser.error("need 1 <= --workspaces <= --triggers <= 1,000,000")
    if not (1 <= args.firings <= 100 and 1 <= args.workers <= 64):
        parser.error("need 1 <= --firings <= 100 and 1 <= --workers <= 64")
    if not 0 < args.timeout <= 3600 or not 0 <= args.settle <= 600:
        parser.error("need 0 < --timeout <= 3600 and 0 <= --settle <= 600")
    try:
        cron = cronlib.parse(args.cron)
    except cronlib.CronError as e:
        parser.error(f"--cron: {e}")
    counts = spread(args.triggers, args.workspaces)

    with tempfile.TemporaryDirectory(prefix="bench-firing-") as tmp:
        tmpdir = Path(tmp)
        children: list[Child] = []
        with contextlib.ExitStack() as stack:  # stops everything it started, in reverse order
            redis = RedisServer().start()
            stack.callback(redis.stop)
            conn = Redis.from_url(redis.url, socket_timeout=30)
            stack.callback(conn.close)
            receiver = ReceiverProcess(delay_ms=args.delay_ms, log_dir=tmpdir)
            stack.callback(receiver.stop)
            stack.callback(stop_all, children, 40.0)
            extra = {}
            if max(counts) > DEFAULT_MAX_PER_WORKSPACE:
                extra["MAX_TRIGGERS_PER_WORKSPACE"] = str(max(counts))
            if args.concurrency is not None:
                extra["WORKER_CONCURRENCY"] = str(args.concurrency)
            env = service_env(redis.url, **extra)
            result = run(args, cron, counts, env, conn, redis, receiver, tmpdir, children)
        for child in children:
            if child.proc.returncode not in (0, -15):
                print(f"warning: {child.name} exited with {child.proc.returncode}:\n{child.tail()}")
    report(args, result)


def run(
    args: argparse.Namespace,
    cron: cronlib.Cron,
    counts: list[int],
    env: dict[str, str],
    conn: Redis,
    redis: RedisServer,
    receiver: ReceiverProcess,
    tmpdir: Path,
    children: list[Child],
) -> dict[str, Any]:
    receiver.wait_ready()
    api, base, scheduler, workers = start_service(args, env, conn, tmpdir, children)
    time.sleep(1.0)  # let the idle service settle (registrations, first ticks) before the baseline
    baseline = used_memory(conn)

    # Start registering right after a due time when the next one is too close for it to finish first.
    now = time.time()
    nxt = cron.next_after(now)
    period = cron.next_after(nxt) - nxt
    guard = min(2.0 + args.triggers / 1000, 0.8 * period)
    if nxt - now < guard:
        print(f"next due time {cronlib.iso(nxt)} is too close for registering; waiting for it to pass", flush=True)
        sleep_until(nxt + 0.3, children)

    if args.rate_limit is not None:
        asyncio.run(put_rate_limits(base, args.workspaces, *args.rate_limit))
    print(f"registering {args.triggers:,} triggers in {args.workspaces} workspace(s) through the API...", flush=True)
    reg_start = time.time()
    timings = asyncio.run(register(base, counts, args.cron, receiver.url, args.overlap))
    reg_end = time.time()
    at_rest = used_memory(conn)
    keys_bytes = key_memory(conn, args.workspaces)
    overlapped = cron.next_after(reg_start) <= reg_end
    if overlapped:
        print("warning: a due time passed while registering; it is not measured", flush=True)
    dues = cron.next_runs(reg_end, args.firings)
    print(
        f"registered in {reg_end - reg_start:.2f}s; Redis +{(at_rest - baseline) / args.triggers:,.0f} B/trigger; "
        f"measuring due times {', '.join(cronlib.iso(d) for d in dues)} (first in {dues[0] - time.time():.1f}s)",
        flush=True,
    )

    assert redis.process is not None
    redis_child = Child("redis-server", redis.process, tmpdir / "redis.log")
    meter = LoadMeter([*children, receiver.child, redis_child])
    by_iso = {cronlib.iso(d): Firing(d, args.triggers) for d in dues}
    expected_total = args.triggers * args.firings
    outside = 0
    unknown_keys = 0
    valid_keys = {f"ws-{w}:{i}" for w, count in enumerate(counts) for i in range(count)}

    def ingest() -> None:
        nonlocal outside, unknown_keys
        for arrived, answered, scheduled, key in receiver.fetch_new():
            firing = by_iso.get(scheduled)
            if firing is None:
                outside += 1
            elif key.partition("@")[0] not in valid_keys or key.partition("@")[2] != scheduled:
                unknown_keys += 1
            else:
                firing.arrivals[key].append((arrived, answered))

    service = [api, scheduler, *workers]
    sleep_until(dues[0] - 1.0, service)
    meter.start()  # the machine's load is measured from just before the first due time
    cpu_before = {c.name: c.cpu_seconds() or 0.0 for c in service}
    redis_cpu_before = redis_cpu_seconds(conn)
    deadline = dues[-1] + args.timeout
    next_note = time.time() + 10
    while time.time() < deadline:
        ingest()
        got = sum(len(f.arrivals) for f in by_iso.values())
        if got >= expected_total:
            break
        for child in service:
            child.check()
        if time.time() >= next_note:
            print(f"  {got:,}/{expected_total:,} delivered", flush=True)
            next_note = time.time() + 10
        time.sleep(POLL_SECONDS)
    finished = time.time()
    load = meter.read()
    settle_end = time.time() + args.settle
    while time.time() < settle_end:
        time.sleep(min(POLL_SECONDS, max(settle_end - time.time(), 0)))
        ingest()
    redis_cpu = redis_cpu_seconds(conn) - redis_cpu_before  # through the settle: every outcome written

    # Figures of the processes, just before stopping them.
    rss_kb = {c.name: c.peak_rss_kb() for c in service}
    cpu_s = {c.name: _r((c.cpu_seconds() or 0.0) - cpu_before[c.name], 2) for c in service}
    delivered = sum(len(f.arrivals) for f in by_iso.values())
    worker_cpu = sum(cpu_s[w.name] or 0.0 for w in workers)
    extra_rss = {"receiver": receiver.child.peak_rss_kb()}
    extra_rss["redis-server"] = redis_child.peak_rss_kb()
    state = {
        "retries_pending": int(conn.zcard(keys.RETRIES)),
        "failed_firings": sum(int(conn.zcard(keys.failed(f"ws-{w}"))) for w in range(len(counts))),
        "rq_failed_jobs": FailedJobRegistry(queue=Queue(queue_name(env), connection=conn)).count,
        "redis_used_memory_peak": int(conn.info("memory")["used_memory_peak"]),
    }
    return {
        "settings": settings_in(env),
        "overlap": args.overlap or "allow",
        "rate_limit": None
        if args.rate_limit is None
        else {"host": args.rate_limit[0], "per_second": args.rate_limit[1]},
        "redis_version": redis_version(conn),
        "registration": {
            "seconds": round(reg_end - reg_start, 3),
            "requests": len(timings),
            "slowest_request_s": round(max(timings), 3),
            "triggers_per_s": round(args.triggers / (reg_end - reg_start), 1),
            "overlapped_due_time": overlapped,
        },
        "redis_memory": {
            "baseline_bytes": baseline,
            "at_rest_bytes": at_rest,
            "bytes_per_trigger": round((at_rest - baseline) / args.triggers, 1),
            "key_bytes_per_trigger": round(keys_bytes / args.triggers, 1),
        },
        "firings": [f.stats() for f in by_iso.values()],
        "all_lateness_s": {
            k: _r(v)
            for k, v in summary(
                [min(a for a, _ in v) - f.due for f in by_iso.values() for v in f.arrivals.values()]
            ).items()
        },
        "waited_s": round(finished - dues[0], 1),
        "outside_window": outside,
        "unknown_keys": unknown_keys,
        "rss_kb": rss_kb,
        "other_rss_kb": extra_rss,
        "cpu_s": cpu_s,
        "worker_cpu_ms_per_delivery": round(1000 * worker_cpu / delivered, 3) if delivered else None,
        "redis_cpu_s": round(redis_cpu, 3),
        "redis_cpu_s_per_10k_deliveries": round(10_000 * redis_cpu / delivered, 3) if delivered else None,
        "state": state,
        "load": load,
    }


def report(args: argparse.Namespace, result: dict[str, Any]) -> None:
    rows = []
    for f in result["firings"]:
        lat = f["lateness_s"]
        rows.append(
            [
                f["due"],
                f"{f['delivered']:,} / {f['expected']:,}",
                fmt(f["duplicates"]),
                fmt(f["missing"]),
                fmt(lat["min"]),
                fmt(lat["p50"]),
                fmt(lat["p95"]),
                fmt(lat["p99"]),
                fmt(lat["max"]),
                fmt(f["deliveries_per_s"], 0),
            ]
        )
    fs = result["firings"]
    lat = result["all_lateness_s"]
    rows.append(
        [
            "all",
            f"{sum(f['delivered'] for f in fs):,} / {sum(f['expected'] for f in fs):,}",
            fmt(sum(f["duplicates"] for f in fs)),
            fmt(sum(f["missing"] for f in fs)),
            fmt(lat["min"]),
            fmt(lat["p50"]),
            fmt(lat["p95"]),
            fmt(lat["p99"]),
            fmt(lat["max"]),
            fmt(_mean([f["deliveries_per_s"] for f in fs]), 0),
        ]
    )
    concurrency = result["settings"].get("WORKER_CONCURRENCY", "default")
    print_table(
        f"bench.firing: {args.triggers:,} triggers / {args.workspaces} workspaces, cron '{args.cron}', "
        f"{args.workers} worker(s), WORKER_CONCURRENCY {concurrency}, receiver delay {args.delay_ms:g} ms, "
        f"overlap {args.overlap or 'allow'}  |  " + provenance_line(),
        ["due (UTC)", "delivered / expected", "dups", "missing", "late min s", "p50", "p95", "p99", "max", "deliv/s"],
        rows,
    )
    reg = result["registration"]
    mem = result["redis_memory"]
    print(
        f"registration: {reg['seconds']:.2f} s for {reg['requests']} replace requests "
        f"({reg['triggers_per_s']:,.0f} triggers/s, slowest request {reg['slowest_request_s']:.2f} s)"
        + ("  [a due time passed during registration]" if reg["overlapped_due_time"] else "")
    )
    print(
        f"redis at rest: {mem['bytes_per_trigger']:,.0f} B/trigger used_memory "
        f"({mem['key_bytes_per_trigger']:,.0f} B/trigger in the schedule + workspace keys)"
    )
    procs = ", ".join(
        f"{name} {fmt((kb or 0) / 1024, 1)} MB / {fmt(result['cpu_s'][name], 1)} s"
        for name, kb in result["rss_kb"].items()
    )
    print(f"peak RSS / CPU from the first due time on: {procs}")
    per = result["worker_cpu_ms_per_delivery"]
    if per is not None:
        print(f"worker CPU per delivery: {per:.2f} ms (all workers' CPU / deliveries of the measured due times)")
    if result["redis_cpu_s_per_10k_deliveries"] is not None:
        print(
            f"Redis CPU (INFO cpu, from the first due time to the end of the settle): {result['redis_cpu_s']:.2f} s, "
            f"{result['redis_cpu_s_per_10k_deliveries']:.2f} s per 10,000 deliveries"
        )
    load = result["load"]
    print(
        f"machine from the first due time on ({load['seconds']:.0f} s): {load['busy_cores']:.2f} cores busy, "
        f"{load['ours_cores']:.2f} by the benchmark's processes, {load['other_cores']:.2f} by others"
    )
    if args.rate_limit is not None:
        host, per_second = args.rate_limit
        most = max(f["most_in_one_second"] for f in fs)
        last = max(f["lateness_s"]["max"] or 0.0 for f in fs)
        print(
            f"rate limit {host} {per_second:g}/s per workspace: at most {most} deliveries in any one-second window; "
            f"last delivery {last:.2f} s after its due time"
        )
    st = result["state"]
    print(
        f"after: {st['retries_pending']} retries pending, {st['failed_firings']} failed firings, "
        f"{st['rq_failed_jobs']} failed RQ jobs; {result['outside_window']} arrivals outside the measured due times; "
        f"{result['unknown_keys']} with an unexpected key",
        flush=True,
    )
    save(
        {"bench": "firing", "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
        | result,
        None if args.no_save else args.results,
    )


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


if __name__ == "__main__":
    main()
