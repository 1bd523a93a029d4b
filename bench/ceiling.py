"""The machine's raw HTTP ceiling, measured the same way every time: ``python -m bench.ceiling``.

One asyncio loop keeps ``--inflight`` requests (100) in flight to the benchmark's receiver (its own
process, as in `bench.firing`) until ``--requests`` have been sent or ``--duration`` has passed,
three times:

1. ``aiohttp``       a plain ``aiohttp.ClientSession`` (its default pool of 100 connections);
2. ``httpx (worker)`` the httpx client exactly as the worker builds it,
   ``scheduler_api.delivery.runtime.DeliveryRuntime(settings).client()`` on that runtime's loop, with the
   settings from the environment (its pool is ``WORKER_CONCURRENCY`` connections);
3. ``delivery.send`` the worker's own per-request code (`scheduler_api.delivery.attempt.send`: headers,
   JSON body, timeout, streamed excerpt) over that same client, with no Redis or RQ around it.

Every request is a POST of a small JSON body with the headers a delivery carries. Other figures
(deliveries/s of `bench.firing`) can then be quoted as a ratio of the aiohttp row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from redis import Redis

from bench.common import (
    RESULTS,
    LoadMeter,
    ReceiverProcess,
    fmt,
    loopback_allowlist,
    print_table,
    provenance_line,
    save,
    self_cpu_seconds,
    summary,
)
from scheduler_api.delivery import attempt as sending
from scheduler_api.delivery.runtime import DeliveryRuntime
from scheduler_api.settings import Settings, load_settings
from scheduler_api.storage.firings import Firing
from scheduler_api.storage.triggers import StoredTrigger

WARMUP = 200
HEADERS_ROW = [
    "client",
    "pool",
    "requests",
    "errors",
    "req/s",
    "vs aiohttp",
    "p50 ms",
    "p99 ms",
    "cpu s",
    "recv cpu s",
    "other cores",
]
HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": "scheduler-api/bench",
    "X-Scheduler-Workspace": "ws-0",
    "X-Scheduler-Trigger": "ws-0:0",
    "X-Scheduler-Scheduled-At": "2026-01-01T00:00:00Z",
    "X-Scheduler-Attempt": "1",
    "Idempotency-Key": "ws-0:0@2026-01-01T00:00:00Z",
}
PAYLOAD = {"i": 0}
BODY = json.dumps(PAYLOAD).encode()


async def drive(
    send: Callable[[], Awaitable[int]], *, requests: int, duration: float, inflight: int
) -> tuple[float, list[float], int, Counter[str]]:
    """Keep `inflight` sends going; return (elapsed, latencies, sent, errors by kind)."""
    latencies: list[float] = []
    sent = 0
    errors: Counter[str] = Counter()
    deadline = time.perf_counter() + duration

    async def runner() -> None:
        nonlocal sent
        while sent < requests and time.perf_counter() < deadline:
            sent += 1
            t0 = time.perf_counter()
            try:
                status = await send()
                if not 200 <= status < 300:
                    errors[f"HTTP {status}"] += 1
            except Exception as e:
                errors[f"{type(e).__name__}: {str(e)[:80]}"] += 1
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(inflight)))
    return time.perf_counter() - started, latencies, sent, errors


def measure(
    name: str,
    loop: asyncio.AbstractEventLoop,
    send: Callable[[], Awaitable[int]],
    receiver: ReceiverProcess,
    args: argparse.Namespace,
    pool: int | None,
) -> dict[str, Any]:
    loop.run_until_complete(drive(send, requests=WARMUP, duration=10.0, inflight=min(args.inflight, WARMUP)))
    cpu0, rcpu0 = self_cpu_seconds(), receiver.child.cpu_seconds() or 0.0
    meter = LoadMeter([receiver.child])
    elapsed, latencies, sent, errors = loop.run_until_complete(
        drive(send, requests=args.requests, duration=args.duration, inflight=args.inflight)
    )
    cpu, rcpu = self_cpu_seconds() - cpu0, (receiver.child.cpu_seconds() or 0.0) - rcpu0
    return {
        "client": name,
        "pool": pool,
        "requests": sent,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(5)),
        "seconds": round(elapsed, 3),
        "rps": round(sent / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": {k: round(v * 1000, 2) if v is not None else None for k, v in summary(latencies).items()},
        "client_cpu_s": round(cpu, 2),
        "receiver_cpu_s": round(rcpu, 2),
        "load": meter.read(),
    }


def run_aiohttp(receiver: ReceiverProcess, args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.new_event_loop()
    try:
        session = loop.run_until_complete(_session())
        url = receiver.url + "/ceiling"

        async def send() -> int:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()
                return response.status

        try:
            return measure("aiohttp", loop, send, receiver, args, pool=100)
        finally:
            loop.run_until_complete(session.close())
    finally:
        loop.close()


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


def run_httpx(receiver: ReceiverProcess, args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    runtime = DeliveryRuntime(settings)
    try:
        client = runtime.client()
        url = receiver.url + "/ceiling"

        async def send() -> int:
            response = await client.post(url, content=BODY, headers=HEADERS)
            return response.status_code

        return measure("httpx (worker)", runtime.loop, send, receiver, args, pool=settings.worker_concurrency)
    finally:
        runtime.close()


def run_delivery_send(receiver: ReceiverProcess, args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    runtime = DeliveryRuntime(settings)
    runtime.load_signers(Redis.from_url(settings.redis_url), ["ws-0"])  # every delivery is signed
    trigger = StoredTrigger("ws-0", 0, "v", "* * * * *", receiver.url + "/ceiling", "POST", PAYLOAD, {})
    firing = Firing("ws-0:0@2026-01-01T00:00:00Z", "ws-0:0", "v", 1767225600.0)
    try:
        client = runtime.client()

        async def send() -> int:
            attempt = await sending.send(client, trigger, firing, runtime.options)
            if attempt.status is None:
                raise RuntimeError(f"{attempt.error}: {attempt.message}")
            return attempt.status

        return measure("delivery.send", runtime.loop, send, receiver, args, pool=settings.worker_concurrency)
    finally:
        runtime.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per client (default 20,000)")
    parser.add_argument("--duration", type=float, default=30.0, help="at most this many seconds per client")
    parser.add_argument("--inflight", type=int, default=100, help="requests in flight (default 100)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="receiver answers after this long")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines file to append to")
    parser.add_argument("--no-save", action="store_true", help="do not append to the results file")
    args = parser.parse_args(argv)

    # The worker's settings from the environment, with the receiver allowed past the SSRF guard.
    settings = load_settings(target_allowlist=loopback_allowlist(os.environ.get("TARGET_ALLOWLIST")))
    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmp:
        receiver = ReceiverProcess(delay_ms=args.delay_ms, log_dir=Path(tmp)).wait_ready()
        try:
            rows = [
                run_aiohttp(receiver, args),
                run_httpx(receiver, args, settings),
                run_delivery_send(receiver, args, settings),
            ]
        finally:
            receiver.stop()

    for r in rows:
        if r["error_kinds"]:
            print(f"{r['client']} errors: {r['error_kinds']}")
    base = rows[0]["rps"] or 0.0
    table = []
    for r in rows:
        lat = r["latency_ms"]
        table.append(
            [
                r["client"],
                fmt(r["pool"]),
                fmt(r["requests"]),
                fmt(r["errors"]),
                fmt(r["rps"], 0),
                f"{r['rps'] / base:.0%}" if base and r["rps"] else "-",
                fmt(lat["p50"], 2),
                fmt(lat["p99"], 2),
                fmt(r["client_cpu_s"], 2),
                fmt(r["receiver_cpu_s"], 2),
                fmt(r["load"]["other_cores"], 2),
            ]
        )
    print_table(
        f"bench.ceiling: {args.inflight} in flight, one asyncio loop, receiver delay {args.delay_ms:g} ms  |  "
        + provenance_line(),
        HEADERS_ROW,
        table,
    )
    save(
        {
            "bench": "ceiling",
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "worker_concurrency": settings.worker_concurrency,
            "rows": rows,
        },
        None if args.no_save else args.results,
    )


if __name__ == "__main__":
    main()
