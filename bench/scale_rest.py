"""Triggers at rest, for `bench.scale`: loading them, and what they cost while none is due.

Every function takes a Redis connection to a private redis-server (never a shared one) and, where it
starts a process of the service, that server's URL. The measurements:

* `load`: N triggers spread over N/100 workspaces (100 each), written through the store function
  the API's replace uses, ``scheduler_api.storage.edits.replace``, one call per workspace (one
  ``list.lua`` read and one ``write.lua`` write each; not pipelined: ~10,000 triggers/s, so 1M load in
  ~2 minutes). Their crons (`cron_of`) fire twice a year, half a year from now, at a minute and hour
  that differ by trigger and workspace: none is due while anything is measured, and none draws the
  ``rare`` warning that a once-a-year cron would on every replace.
* `seed_histories`: every workspace gets `records` recent delivered records in the shape
  ``record.lua`` leaves them (history, records, done), written raw with one pipeline per 1,000
  workspaces, so that the retention sweep has histories to visit (none of them old enough to drop).
* `time_sweep`: one full pass of the scheduler's retention sweep (``engine.retention.sweep_step``
  from cursor 0 until it says the pass is complete), timed in this process, with the SCAN commands
  Redis counted meanwhile (INFO commandstats): a pass that scans walks every key in Redis.
* `idle_scheduler`: a real ``scheduler-api scheduler`` process over the loaded Redis for `seconds`,
  its CPU time read from /proc, its ticks from its own tick-duration histogram in Redis, and the
  Redis CPU it caused (INFO cpu).
* `api_latency`: a real ``scheduler-api serve``; sequential requests (one connection, so no queueing
  in the figures) on workspaces picked at random among the loaded ones: GET of a 100-trigger list,
  replace (POST) of that whole list with every payload changed (so each replace writes; an
  unchanged list writes nothing), GET of one trigger. The first replace builds the ``*`` scope's
  quota counts from every stored workspace (scheduler_api.storage.quotas.build); it is timed apart.

Failure rules: a process of the service that exits, a request that does not answer 200, or a
load that does not add what it was given raises (RuntimeError); the caller stops what it started.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
from redis import Redis

from bench.common import (
    Child,
    auth_headers,
    redis_cpu_seconds,
    service_env,
    spawn_service,
    start_api,
    stop_all,
    summary,
    wait_until,
)
from scheduler_api.engine.retention import sweep_step
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, keys
from scheduler_api.triggers import Trigger

PER_WORKSPACE = 100
TARGET = "http://127.0.0.1:9/hook"  # never called: nothing is due
TICK_HISTOGRAM = keys.metric_histogram("tick_duration_seconds")


def workspace_counts(n: int) -> list[int]:
    """`n` triggers as N/100 workspaces of 100 (the last ones take the remainder; at least one)."""
    workspaces = max(1, n // PER_WORKSPACE)
    base, extra = divmod(n, workspaces)
    return [base + (1 if w < extra else 0) for w in range(workspaces)]


def cron_of(i: int, w: int, today: dt.date) -> str:
    """Trigger `i` of workspace `w`: on the 15th of the two months starting half a year after `today`."""
    first = (today.month + 5) % 12 + 1
    return f"{i % 60} {w % 24} 15 {first},{first % 12 + 1} *"


def trigger_dicts(w: int, count: int, today: dt.date, variant: int = 0) -> list[dict[str, Any]]:
    """Workspace `w`'s list as the API takes it; `variant` changes every payload (a replace that writes)."""
    return [
        {
            "cron": cron_of(i, w, today),
            "url": f"{TARGET}/ws-{w}/{i}",
            "method": "POST",
            "payload": {"i": i, "v": variant},
        }
        for i in range(count)
    ]


def load(conn: Redis, counts: list[int], *, today: dt.date) -> float:
    """Write every workspace's list through `edits.replace`; return the seconds it took."""
    started = time.perf_counter()
    for w, count in enumerate(counts):
        triggers = [Trigger.model_validate(d) for d in trigger_dicts(w, count, today)]
        _, written = edits.replace(conn, f"ws-{w}", triggers)
        if len(written) != count:
            raise RuntimeError(f"ws-{w}: {len(written)} triggers written, {count} given")
    return time.perf_counter() - started


def seed_histories(conn: Redis, workspaces: int, *, records: int, now: float) -> None:
    """Give each workspace `records` delivered records, finished a minute ago (module docstring)."""
    for first in range(0, workspaces, 1000):
        pipe = conn.pipeline(transaction=False)
        for w in range(first, min(first + 1000, workspaces)):
            rec, hist, done, _failed = keys.history_keys(f"ws-{w}")
            for r in range(records):
                scheduled = now - 60 * (records - r)
                firing_id = f"ws-{w}:{r}@{dt.datetime.fromtimestamp(scheduled, dt.UTC).isoformat()}"
                pipe.hset(rec, firing_id, json.dumps({"jobId": f"ws-{w}:{r}", "outcome": "delivered"}))
                pipe.zadd(hist, {firing_id: scheduled})
                pipe.zadd(done, {firing_id: scheduled + 0.1})
        pipe.execute()


def _scan_calls(conn: Redis) -> int:
    stats: dict[str, Any] = conn.info("commandstats")
    return int(stats.get("cmdstat_scan", {}).get("calls", 0))


def time_sweep(conn: Redis, settings: Settings) -> dict[str, Any]:
    """One full pass of the retention sweep (module docstring)."""
    scans0, cpu0 = _scan_calls(conn), redis_cpu_seconds(conn)
    started = time.perf_counter()
    cursor, steps = 0, 0
    while True:
        cursor, _dropped = sweep_step(conn, settings, now=time.time(), cursor=cursor)
        steps += 1
        if cursor == 0:
            break
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 4),
        "steps": steps,
        "scan_calls": _scan_calls(conn) - scans0,
        "redis_cpu_s": round(redis_cpu_seconds(conn) - cpu0, 4),
        "keys_in_redis": int(conn.dbsize()),
    }


def _ticks(conn: Redis) -> tuple[int, float]:
    count, total = conn.hmget(TICK_HISTOGRAM, ["count", "sum"])
    return int(count or 0), float(total or 0.0)


def idle_scheduler(conn: Redis, redis_url: str, *, seconds: float, warmup: float, tmpdir: Path) -> dict[str, Any]:
    """A real scheduler process, idle for `seconds` after `warmup` (module docstring)."""
    scheduler = spawn_service("scheduler", "scheduler", env=service_env(redis_url), cwd=tmpdir, log_dir=tmpdir)
    try:
        wait_until("scheduler's first tick", lambda: _ticks(conn)[0] > 0, timeout=60, children=[scheduler])
        time.sleep(warmup)  # imports, the first sweep steps and prefetch passes settle
        scheduler.check()
        cpu0, rcpu0, (ticks0, tick_s0), t0 = (
            scheduler.cpu_seconds() or 0.0,
            redis_cpu_seconds(conn),
            _ticks(conn),
            time.monotonic(),
        )
        end = t0 + seconds
        while (left := end - time.monotonic()) > 0:
            scheduler.check()
            time.sleep(min(left, 1.0))
        cpu = (scheduler.cpu_seconds() or 0.0) - cpu0
        elapsed = time.monotonic() - t0
        ticks, tick_s = (a - b for a, b in zip(_ticks(conn), (ticks0, tick_s0), strict=True))
        redis_cpu = redis_cpu_seconds(conn) - rcpu0
        rss_kb = scheduler.peak_rss_kb()
    finally:
        stop_all([scheduler])
    return {
        "seconds": round(elapsed, 2),
        "ticks": int(ticks),
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_tick": round(1000 * cpu / ticks, 3) if ticks else None,
        "cpu_s_per_hour": round(3600 * cpu / elapsed, 2),
        "tick_wall_ms_mean": round(1000 * tick_s / ticks, 3) if ticks else None,
        "redis_cpu_ms_per_tick": round(1000 * redis_cpu / ticks, 3) if ticks else None,
        "rss_kb": rss_kb,
    }


async def _requests(base: str, counts: list[int], *, requests: int, today: dt.date, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    full = [w for w, c in enumerate(counts) if c == max(counts)]
    out: dict[str, list[float]] = {"get_list": [], "replace": [], "get_one": []}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, headers=auth_headers()) as session:

        async def call(method: str, url: str, body: bytes | None = None) -> float:
            headers = {"Content-Type": "application/json"} if body is not None else None
            t0 = time.perf_counter()
            async with session.request(method, url, data=body, headers=headers) as response:
                answer = await response.read()
            if response.status != 200:
                raise RuntimeError(f"{method} {url}: HTTP {response.status}: {answer[:300]!r}")
            return time.perf_counter() - t0

        def replace_body(w: int, variant: int) -> bytes:
            return json.dumps({"triggers": trigger_dicts(w, counts[w], today, variant)}).encode()

        first = await call("POST", f"{base}/api/workspaces/ws-{full[0]}/triggers", replace_body(full[0], -1))
        for k in range(requests):
            w = rng.choice(full)
            url = f"{base}/api/workspaces/ws-{w}/triggers"
            out["get_list"].append(await call("GET", url))
            out["replace"].append(await call("POST", url, replace_body(w, k + 1)))
            out["get_one"].append(await call("GET", f"{url}/{rng.randrange(counts[w])}"))
    result: dict[str, Any] = {"first_replace_s": round(first, 3), "requests_each": requests}
    for op, latencies in out.items():
        result[op] = {k: round(v * 1000, 2) if v is not None else None for k, v in summary(latencies).items()}
    return result


def api_latency(
    redis_url: str, counts: list[int], *, requests: int, today: dt.date, tmpdir: Path, seed: int = 19
) -> dict[str, Any]:
    """A real API process; `requests` of each operation, in milliseconds (module docstring)."""
    env = service_env(redis_url, MAX_TRIGGERS_PER_WORKSPACE=str(max(1000, max(counts))))
    api: Child | None = None
    try:
        api, base = start_api(env, cwd=tmpdir, log_dir=tmpdir)
        result = asyncio.run(_requests(base, counts, requests=requests, today=today, seed=seed))
        result["rss_kb"] = api.peak_rss_kb()
        return result
    finally:
        if api is not None:
            stop_all([api])
