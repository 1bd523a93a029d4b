"""The HTTP API alone: ``python -m bench.api``.

Starts a private redis-server and a real ``scheduler-api serve`` process (the production command,
configured through the environment only), then, for ``--duration`` seconds each:

1. ``replace``: ``--concurrency`` clients (10) each POST a ``--size``-trigger list (100) to their own
   workspace, over and over - the whole-list replace users do on every change;
2. ``get``: the same clients GET their workspace's list.

Prints requests/s and latency p50/p99/max per operation, plus the API's peak RSS and CPU time.
The client is aiohttp in one asyncio loop (one connection per client, kept alive).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    RESULTS,
    Child,
    LoadMeter,
    auth_headers,
    fmt,
    print_table,
    provenance_line,
    save,
    service_env,
    settings_in,
    start_api,
    stop_all,
    summary,
)
from scheduler_api.embedded_redis import RedisServer

WARMUP_PER_CLIENT = 5
MAX_REQUESTS = 1_000_000


def trigger_list(size: int, workspace: str) -> bytes:
    triggers = [
        {
            "cron": "*/5 * * * *",
            "url": f"http://127.0.0.1:9/hook/{workspace}/{i}",
            "method": "POST",
            "payload": {"i": i},
            "headers": {"Authorization": "Bearer bench"},
        }
        for i in range(size)
    ]
    return json.dumps({"triggers": triggers}).encode()


async def run_phase(
    op: str, base: str, *, concurrency: int, size: int, duration: float
) -> tuple[float, list[float], int, int]:
    """Run `op` ('replace' or 'get') from `concurrency` clients; return (elapsed, latencies, sent, errors)."""
    bodies = [trigger_list(size, f"bench-{c}") for c in range(concurrency)]
    latencies: list[float] = []
    sent = 0
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=auth_headers()) as session:

        async def once(c: int, op: str = op) -> bool:
            url = f"{base}/api/workspaces/bench-{c}/triggers"
            if op == "replace":
                request = session.post(url, data=bodies[c], headers={"Content-Type": "application/json"})
            else:
                request = session.get(url)
            async with request as response:
                await response.read()
                return response.status == 200

        async def client(c: int, deadline: float) -> None:
            nonlocal sent, errors
            while time.perf_counter() < deadline and sent < MAX_REQUESTS:
                sent += 1
                t0 = time.perf_counter()
                try:
                    ok = await once(c)
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                if not ok:
                    errors += 1

        for c in range(concurrency):  # the list each client's workspace holds, then a warm-up
            if not await once(c, "replace"):
                raise RuntimeError(f"replace on workspace bench-{c} did not answer 200")
            for _ in range(WARMUP_PER_CLIENT):
                if not await once(c):
                    raise RuntimeError(f"{op} on workspace bench-{c} did not answer 200")
        started = time.perf_counter()
        await asyncio.gather(*(client(c, started + duration) for c in range(concurrency)))
        return time.perf_counter() - started, latencies, sent, errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per operation (default 10)")
    parser.add_argument("--concurrency", type=int, default=10, help="concurrent clients (default 10)")
    parser.add_argument("--size", type=int, default=100, help="triggers per workspace (default 100)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines file to append to")
    parser.add_argument("--no-save", action="store_true", help="do not append to the results file")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600:
        parser.error("--duration must be in (0, 600]")

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        tmpdir = Path(tmp)
        env_extra = {"MAX_TRIGGERS_PER_WORKSPACE": str(args.size)} if args.size > 1000 else {}
        redis = RedisServer().start()
        env = service_env(redis.url, **env_extra)
        api = None
        try:
            api, base = start_api(env, cwd=tmpdir, log_dir=tmpdir)
            assert redis.process is not None
            redis_child = Child("redis-server", redis.process, tmpdir / "redis.log")
            for op in ("replace", "get"):
                cpu0 = api.cpu_seconds() or 0.0
                meter = LoadMeter([api, redis_child])
                elapsed, latencies, sent, errors = asyncio.run(
                    run_phase(op, base, concurrency=args.concurrency, size=args.size, duration=args.duration)
                )
                rows.append(
                    {
                        "op": op,
                        "requests": sent,
                        "errors": errors,
                        "seconds": round(elapsed, 3),
                        "rps": round(sent / elapsed, 1) if elapsed > 0 else None,
                        "latency_ms": {
                            k: round(v * 1000, 2) if v is not None else None for k, v in summary(latencies).items()
                        },
                        "api_cpu_s": round((api.cpu_seconds() or 0.0) - cpu0, 2),
                        "load": meter.read(),
                    }
                )
            api_rss_kb = api.peak_rss_kb()
            settings = settings_in(env)
        finally:
            if api is not None:
                stop_all([api])
            redis.stop()
        if api is not None and api.proc.returncode not in (0, -15, None):
            print(f"warning: the API exited with {api.proc.returncode}:\n{api.tail()}")

    table = [
        [
            f"{r['op']} ({args.size} triggers)",
            fmt(r["requests"]),
            fmt(r["errors"]),
            fmt(r["rps"], 0),
            fmt(r["latency_ms"]["p50"], 1),
            fmt(r["latency_ms"]["p99"], 1),
            fmt(r["latency_ms"]["max"], 1),
            fmt(r["api_cpu_s"], 1),
            fmt(r["load"]["other_cores"], 2),
        ]
        for r in rows
    ]
    print_table(
        f"bench.api: scheduler-api serve, concurrency {args.concurrency}, {args.duration:g} s per operation  |  "
        + provenance_line(),
        ["operation", "requests", "errors", "req/s", "p50 ms", "p99 ms", "max ms", "api cpu s", "other cores"],
        table,
    )
    print(f"API peak RSS (VmHWM): {fmt((api_rss_kb or 0) / 1024, 1)} MB")
    save(
        {
            "bench": "api",
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "settings": settings,
            "rows": rows,
            "rss_kb": {"api": api_rss_kb},
        },
        None if args.no_save else args.results,
    )


if __name__ == "__main__":
    main()
