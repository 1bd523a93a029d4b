"""The noisy-neighbour case: ``python -m bench.firing --noisy`` (issue #17).

One workspace (``noisy``) has ``--noisy-triggers`` triggers due every second to an endpoint of the
receiver that answers after ``--slow-ms``; ``--quiet-workspaces`` others (``quiet-0`` ...) have
``--quiet-triggers`` each, due every second, to endpoints that answer at once. The service runs
with its defaults (``serve``, one ``scheduler``, ``--workers`` workers) against a private
redis-server for ``--seconds`` due seconds. Then, ``--settle`` seconds later:

* quiet firings: due, delivered (once), missing, lateness (arrival - due second) p50/p99/max;
* noisy firings: due, delivered, their rate, and where the rest are: waiting in batches (in a
  worker's lanes or in the outbox), retries, records - and **lost** (due, nowhere), which must be 0.

Prints a table and appends one JSON line (``"case": "noisy"``) to ``bench/results.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
from redis import Redis

from bench.common import (
    Child,
    ReceiverProcess,
    auth_headers,
    fmt,
    print_table,
    provenance_line,
    save,
    service_env,
    settings_in,
    stop_all,
    summary,
)
from scheduler_api import cron as cronlib
from scheduler_api.embedded_redis import RedisServer
from scheduler_api.storage import keys

NOISY = "noisy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("--noisy case")
    group.add_argument("--seconds", type=int, default=120, help="due seconds measured (default 120)")
    group.add_argument("--noisy-triggers", type=int, default=100, help="the noisy workspace's triggers (default 100)")
    group.add_argument("--slow-ms", type=float, default=3000.0, help="its endpoint answers after this (default 3000)")
    group.add_argument("--quiet-workspaces", type=int, default=10, help="quiet workspaces (default 10)")
    group.add_argument("--quiet-triggers", type=int, default=10, help="triggers of each quiet one (default 10)")


def triggers_of(workspace: str, count: int, receiver_url: str) -> bytes:
    triggers = [
        {"cron": "* * * * * *", "url": f"{receiver_url}/hook/{workspace}/{i}", "method": "POST", "payload": {"i": i}}
        for i in range(count)
    ]
    return json.dumps({"triggers": triggers}).encode()


async def register(base: str, lists: dict[str, int], receiver_url: str) -> None:
    async with aiohttp.ClientSession(headers=auth_headers()) as session:
        for workspace, count in lists.items():
            async with session.post(
                f"{base}/api/workspaces/{workspace}/triggers",
                data=triggers_of(workspace, count, receiver_url),
                headers={"Content-Type": "application/json"},
            ) as response:
                if response.status != 200:
                    raise RuntimeError(f"registering {workspace}: HTTP {response.status}: {await response.text()}")


def waiting_firings(conn: Redis) -> tuple[set[str], set[str]]:
    """Firing ids held in batches (in a worker or in the outbox) and in retries (a benchmark may SCAN)."""
    in_batches: set[str] = set()
    for name in conn.scan_iter(match=keys.PREFIX + "batch:*", count=1000):
        in_batches.update(k.decode() for k in conn.hkeys(name))
    retries = {k.decode() for k in conn.zrange(keys.RETRIES, 0, -1)}
    return in_batches, retries


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.firing import start_service  # the same start-up as the other cases (it imports this module)

    quiet = [f"quiet-{q}" for q in range(args.quiet_workspaces)]
    lists = {NOISY: args.noisy_triggers, **dict.fromkeys(quiet, args.quiet_triggers)}
    with tempfile.TemporaryDirectory(prefix="bench-noisy-") as tmp, contextlib.ExitStack() as stack:
        tmpdir = Path(tmp)
        children: list[Child] = []
        redis = RedisServer().start()
        stack.callback(redis.stop)
        conn = Redis.from_url(redis.url, socket_timeout=30)
        stack.callback(conn.close)
        receiver = ReceiverProcess(delay_ms=0, log_dir=tmpdir, slow=(f"/hook/{NOISY}/", args.slow_ms))
        stack.callback(receiver.stop)
        stack.callback(stop_all, children, 40.0)
        env = service_env(redis.url)
        receiver.wait_ready()
        api, base, scheduler, workers = start_service(args, env, conn, tmpdir, children)
        asyncio.run(register(base, lists, receiver.url))
        first = float(int(time.time()) + 2)  # the first measured due second
        last = first + args.seconds - 1
        service = [api, scheduler, *workers]
        cpu_before = {c.name: c.cpu_seconds() or 0.0 for c in service}
        arrivals: dict[str, list[float]] = defaultdict(list)  # firing id -> arrival times
        deadline = last + 1 + args.settle
        while time.time() < deadline:
            for child in service:
                child.check()
            time.sleep(0.5)
        for arrived, _answered, _scheduled, key in receiver.fetch_new():
            arrivals[key].append(arrived)
        cpu_s = {c.name: round((c.cpu_seconds() or 0.0) - cpu_before[c.name], 2) for c in service}
        in_batches, retries = waiting_firings(conn)
        records = {
            k.decode()
            for k in conn.hkeys(keys.records(NOISY))  # final or retrying outcomes of the noisy workspace
        }
        settings = settings_in(env)

    due_seconds = [first + i for i in range(args.seconds)]

    def firing_ids(workspace: str, count: int) -> list[tuple[str, float]]:
        return [(f"{workspace}:{i}@{cronlib.iso(t)}", t) for t in due_seconds for i in range(count)]

    quiet_due = [fid for ws in quiet for fid in firing_ids(ws, args.quiet_triggers)]
    lateness = [min(arrivals[fid]) - t for fid, t in quiet_due if arrivals.get(fid)]
    quiet_missing = [fid for fid, _ in quiet_due if not arrivals.get(fid)]
    quiet_twice = sum(1 for fid, _ in quiet_due if len(arrivals.get(fid, ())) > 1)
    noisy_due = firing_ids(NOISY, args.noisy_triggers)
    noisy_delivered = [fid for fid, _ in noisy_due if arrivals.get(fid)]
    noisy_waiting = [fid for fid, _ in noisy_due if not arrivals.get(fid) and fid in in_batches]
    noisy_retrying = [fid for fid, _ in noisy_due if not arrivals.get(fid) and fid in retries]
    noisy_recorded = [fid for fid, _ in noisy_due if not arrivals.get(fid) and fid not in in_batches and fid in records]
    noisy_lost = len(noisy_due) - len(noisy_delivered) - len(noisy_waiting) - len(noisy_retrying) - len(noisy_recorded)
    noisy_late = [min(arrivals[fid]) - t for fid, t in noisy_due if arrivals.get(fid)]
    worker_cpu = sum(cpu_s[w.name] for w in workers)
    delivered_total = len(lateness) + len(noisy_delivered)
    return {
        "case": "noisy",
        "settings": settings,
        "workers": args.workers,
        "seconds": args.seconds,
        "noisy": {
            "triggers": args.noisy_triggers,
            "slow_ms": args.slow_ms,
            "due": len(noisy_due),
            "delivered": len(noisy_delivered),
            "delivered_per_s": round(len(noisy_delivered) / (args.seconds + args.settle), 2),
            "waiting_in_batches": len(noisy_waiting),
            "retrying": len(noisy_retrying),
            "recorded_not_delivered": len(noisy_recorded),
            "lost": noisy_lost,
            "lateness_s": {k: (round(v, 3) if v is not None else None) for k, v in summary(noisy_late).items()},
        },
        "quiet": {
            "workspaces": args.quiet_workspaces,
            "triggers_each": args.quiet_triggers,
            "due": len(quiet_due),
            "delivered": len(lateness),
            "missing": len(quiet_missing),
            "duplicates": quiet_twice,
            "lateness_s": {k: (round(v, 3) if v is not None else None) for k, v in summary(lateness).items()},
        },
        "cpu_s": cpu_s,
        "worker_cpu_ms_per_delivery": round(1000 * worker_cpu / delivered_total, 3) if delivered_total else None,
    }


def report(result: dict[str, Any], path: Path | None) -> None:
    quiet, noisy = result["quiet"], result["noisy"]
    ql, nl = quiet["lateness_s"], noisy["lateness_s"]
    print_table(
        f"bench.firing --noisy: {result['seconds']} s, {result['workers']} worker(s), defaults",
        ["tenants", "due", "delivered", "missing / lost", "p50 late", "p99 late", "max late"],
        [
            [
                f"quiet ({quiet['workspaces']} x {quiet['triggers_each']}/s)",
                f"{quiet['due']:,}",
                f"{quiet['delivered']:,}",
                f"{quiet['missing']:,}",
                fmt(ql.get("p50"), 3, "s"),
                fmt(ql.get("p99"), 3, "s"),
                fmt(ql.get("max"), 3, "s"),
            ],
            [
                f"noisy ({noisy['triggers']}/s to a {noisy['slow_ms'] / 1000:g} s endpoint)",
                f"{noisy['due']:,}",
                f"{noisy['delivered']:,} ({noisy['delivered_per_s']}/s)",
                f"{noisy['lost']:,} lost; {noisy['waiting_in_batches']:,} waiting",
                fmt(nl.get("p50"), 3, "s"),
                fmt(nl.get("p99"), 3, "s"),
                fmt(nl.get("max"), 3, "s"),
            ],
        ],
    )
    print(f"worker CPU per delivery: {result['worker_cpu_ms_per_delivery']} ms; {provenance_line()}")
    save(result, path)


def main(args: argparse.Namespace) -> None:
    args.workers = args.workers or 1
    report(run(args), None if args.no_save else args.results)
