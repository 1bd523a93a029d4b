"""How the service's cost grows with its triggers (issue #19): ``python -m bench.scale``.

``python -m bench.scale [--sizes 10000,100000,1000000] [--bursts 10000,50000,100000] [--workers 1,2] [--no-save]``

1. **At rest**, for each of ``--sizes``: a private redis-server (scheduler_api.embedded_redis), N
   triggers in N/100 workspaces loaded through the store (``edits.replace`` per workspace, not the
   HTTP API: bench.scale_rest says how, and why none is due), then
   * Redis ``used_memory`` per trigger (the growth over the empty server, divided by N);
   * one full pass of the retention sweep, timed in-process, with the SCANs it sent (after every
     workspace got ``--history`` delivered records);
   * a real ``scheduler-api scheduler`` idle for ``--idle-seconds``: CPU per tick and per hour (from
     /proc) and the Redis CPU its ticks cost;
   * a real ``scheduler-api serve``: p50/p99 of GET and replace of a 100-trigger workspace and of a
     GET of one trigger, ``--api-requests`` of each, one after the other.
2. **Bursts**, for each of ``--bursts`` and of ``--workers``: ``python -m bench.firing`` run as it is
   (its own Redis, receiver, API, scheduler and workers; N triggers in N/100 workspaces registered
   through the API, all due on the same minute, one due time measured; a 2-minute cron above
   50,000 triggers, so that registering ends before the due time), its JSON result read back: time
   to the last delivery, lateness p50/p99, deliveries/s, peak RSS (VmHWM) of every process, Redis
   CPU seconds (INFO cpu) per 10,000 deliveries and the ceiling that follows: deliveries/s one
   Redis core supports = 10,000 / those seconds.

One JSON line per measured case (a size at rest, or a burst) goes to ``bench/results.jsonl``
(``"bench": "scale"``); the tables are printed at the end. Each case is bounded: a burst is given
up after ``--burst-timeout`` seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis import Redis

from bench.common import (
    REPO,
    RESULTS,
    fmt,
    print_table,
    provenance_line,
    redis_version,
    save,
    used_memory,
)
from bench.scale_rest import api_latency, idle_scheduler, load, seed_histories, time_sweep, workspace_counts
from scheduler_api.embedded_redis import RedisServer
from scheduler_api.settings import load_settings


def sizes(text: str) -> list[int]:
    """``10000,100000`` as [10000, 100000]; argparse's type for the size lists."""
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or not all(1 <= v <= 2_000_000 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated counts from 1 to 2,000,000, got {text!r}")
    return values


def at_rest(n: int, args: argparse.Namespace, tmpdir: Path) -> dict[str, Any]:
    """Every at-rest figure of `n` triggers, in a redis-server of its own (module docstring)."""
    counts = workspace_counts(n)
    today = dt.datetime.now(dt.UTC).date()
    with RedisServer() as redis:
        conn = Redis.from_url(redis.url, socket_timeout=120)
        try:
            baseline = used_memory(conn)
            print(f"[{n:,} at rest] loading {n:,} triggers into {len(counts):,} workspaces...", flush=True)
            load_s = load(conn, counts, today=today)
            loaded = used_memory(conn)
            keys_at_rest = int(conn.dbsize())
            seed_histories(conn, len(counts), records=args.history, now=time.time())
            settings = load_settings(redis_url=redis.url)
            print(f"[{n:,} at rest] loaded in {load_s:.1f} s; timing the retention sweep...", flush=True)
            sweep = time_sweep(conn, settings)
            print(f"[{n:,} at rest] idle scheduler for {args.idle_seconds:g} s...", flush=True)
            idle = idle_scheduler(conn, redis.url, seconds=args.idle_seconds, warmup=args.warmup, tmpdir=tmpdir)
            print(f"[{n:,} at rest] API latency...", flush=True)
            api = api_latency(redis.url, counts, requests=args.api_requests, today=today, tmpdir=tmpdir)
            version = redis_version(conn)
        finally:
            conn.close()
    return {
        "case": "rest",
        "triggers": n,
        "workspaces": len(counts),
        "redis_version": version,
        "load": {"seconds": round(load_s, 2), "triggers_per_s": round(n / load_s, 1), "via": "edits.replace"},
        "redis_memory": {
            "baseline_bytes": baseline,
            "at_rest_bytes": loaded,
            "bytes_per_trigger": round((loaded - baseline) / n, 1),
            "keys": keys_at_rest,
        },
        "history_records_per_workspace": args.history,
        "sweep": sweep,
        "idle_scheduler": idle,
        "api_ms": api,
    }


def burst(n: int, workers: int, args: argparse.Namespace, tmpdir: Path) -> dict[str, Any]:
    """`bench.firing` for `n` triggers due at once with `workers` workers; its result, condensed."""
    out = tmpdir / f"firing-{n}-{workers}.jsonl"
    command = [sys.executable, "-m", "bench.firing", "--triggers", str(n), "--workspaces", str(max(1, n // 100))]
    command += ["--workers", str(workers), "--firings", "1", "--cron", "* * * * *" if n <= 50_000 else "*/2 * * * *"]
    command += ["--timeout", "300", "--results", str(out)]
    print(f"[burst {n:,} x {workers} worker(s)] {' '.join(command[1:])}", flush=True)
    subprocess.run(command, cwd=REPO, check=True, timeout=args.burst_timeout)
    result: dict[str, Any] = json.loads(out.read_text().splitlines()[-1])
    firing = result["firings"][0]
    rss = {**result["rss_kb"], **result["other_rss_kb"]}
    per_10k = result.get("redis_cpu_s_per_10k_deliveries")
    return {
        "case": "burst",
        "triggers": n,
        "workers": workers,
        "workspaces": max(1, n // 100),
        "delivered": firing["delivered"],
        "missing": firing["missing"],
        "duplicates": firing["duplicates"],
        "last_delivery_s": firing["lateness_s"]["max"],
        "lateness_s": firing["lateness_s"],
        "deliveries_per_s": firing["deliveries_per_s"],
        "peak_rss_kb": rss,
        "cpu_s": result["cpu_s"],
        "redis_cpu_s": result.get("redis_cpu_s"),
        "redis_cpu_s_per_10k_deliveries": per_10k,
        "deliveries_per_s_per_redis_core": round(10_000 / per_10k) if per_10k else None,
        "registration": result["registration"],
        "load": result["load"],
        "firing_commit": result.get("commit"),
    }


def report(rest: list[dict[str, Any]], bursts: list[dict[str, Any]]) -> None:
    rows = []
    for r in rest:
        idle, api, sw = r["idle_scheduler"], r["api_ms"], r["sweep"]
        rows.append(
            [
                f"{r['triggers']:,}",
                fmt(r["redis_memory"]["bytes_per_trigger"], 0),
                fmt(idle["cpu_ms_per_tick"], 2),
                fmt(idle["cpu_s_per_hour"], 1),
                fmt(idle["redis_cpu_ms_per_tick"], 3),
                f"{fmt(api['get_list']['p50'], 1)} / {fmt(api['get_list']['p99'], 1)}",
                f"{fmt(api['replace']['p50'], 1)} / {fmt(api['replace']['p99'], 1)}",
                f"{fmt(api['get_one']['p50'], 1)} / {fmt(api['get_one']['p99'], 1)}",
                f"{fmt(sw['seconds'], 3)} ({sw['scan_calls']:,} SCANs, {sw['keys_in_redis']:,} keys)",
                fmt(r["load"]["seconds"], 1),
            ]
        )
    if rows:
        print_table(
            "bench.scale: at rest  |  " + provenance_line(),
            ["triggers", "B/trigger", "sched ms/tick", "sched s/hour", "redis ms/tick", "GET list p50/p99 ms"]
            + ["replace p50/p99 ms", "GET one p50/p99 ms", "sweep pass s", "load s"],
            rows,
        )
    rows = []
    for b in bursts:
        rss = b["peak_rss_kb"]
        workers = sorted(k for k in rss if k.startswith("worker"))
        rows.append(
            [
                f"{b['triggers']:,} x {b['workers']}",
                f"{b['delivered']:,}",
                fmt(b["last_delivery_s"], 2),
                f"{fmt(b['lateness_s']['p50'], 2)} / {fmt(b['lateness_s']['p99'], 2)}",
                fmt(b["deliveries_per_s"], 0),
                " / ".join(fmt((rss.get(k) or 0) // 1024, unit=" MB") for k in ["scheduler", *workers, "redis-server"]),
                fmt(b["redis_cpu_s_per_10k_deliveries"], 2),
                fmt(b["deliveries_per_s_per_redis_core"]),
            ]
        )
    if rows:
        print_table(
            "bench.scale: bursts due in the same minute (bench.firing)  |  " + provenance_line(),
            ["triggers x workers", "delivered", "last s", "late p50 / p99 s", "deliv/s"]
            + ["peak RSS sched / workers / redis", "redis cpu s / 10k", "deliv/s per redis core"],
            rows,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=sizes, default=[10_000, 100_000, 1_000_000], help="triggers at rest")
    parser.add_argument("--bursts", type=sizes, default=[10_000, 50_000, 100_000], help="triggers due at once")
    parser.add_argument("--workers", type=sizes, default=[1, 2], help="worker processes for each burst")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="the idle scheduler's window (default 60)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds the scheduler runs before its window")
    parser.add_argument("--api-requests", type=int, default=300, help="requests of each API operation")
    parser.add_argument("--history", type=int, default=10, help="records in each workspace's history")
    parser.add_argument("--burst-timeout", type=float, default=900.0, help="give up a burst after this long")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines file to append to")
    parser.add_argument("--no-save", action="store_true", help="do not append to the results file")
    parser.add_argument("--rest-only", action="store_true", help="skip the bursts")
    parser.add_argument("--bursts-only", action="store_true", help="skip the at-rest sizes")
    args = parser.parse_args(argv)
    if not (0 < args.idle_seconds <= 3600 and 0 <= args.warmup <= 600 and 1 <= args.api_requests <= 100_000):
        parser.error("need 0 < --idle-seconds <= 3600, 0 <= --warmup <= 600, 1 <= --api-requests <= 100,000")
    results = None if args.no_save else args.results
    rest: list[dict[str, Any]] = []
    bursts: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for n in [] if args.bursts_only else args.sizes:
            rest.append(at_rest(n, args, Path(tmp)))
            save({"bench": "scale", "args": _args(args)} | rest[-1], results)
        for n in [] if args.rest_only else args.bursts:
            for workers in args.workers:
                bursts.append(burst(n, workers, args, Path(tmp)))
                save({"bench": "scale", "args": _args(args)} | bursts[-1], results)
    report(rest, bursts)


def _args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


if __name__ == "__main__":
    main()
