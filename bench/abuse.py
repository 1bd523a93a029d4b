"""Attacks on the HTTP edge of ``scheduler-api serve``: ``python -m bench.abuse``.

Starts a private redis-server and a real ``serve`` on 127.0.0.1 (loopback only; defaults, API keys
set), then runs each attack in turn while a probe GETs ``/health`` every 20 ms on a fresh
connection, and reports the probe's latency (p50/p99/max) and failures per phase:

1. ``baseline``: no attack (3 s);
2. ``big-headers``: ``--big`` (20) connections each send an unterminated header of up to 50 MB;
   reports how much of it the server read before refusing and the API's RSS before and after;
3. ``slow``: ``--slow`` (2000) connections send a request head 1 byte every 10 s for
   ``--slow-seconds`` (25); reports how many the server closed;
4. ``rare-crons``: ``--posts`` (3) POSTs of 1,000 triggers with the rare cron ``0 12 29 2 1#5``
   (validated in full: the slowest crons to check).

Bounded: at most 5000 slow connections, 100 big-header ones and 60 s per phase.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS,
    Child,
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

BIG_HEADER_BYTES = 50_000_000
RARE_CRON = "0 12 29 2 1#5"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Probe:
    """GET /health every `interval` s on a fresh connection; latencies and failures, per phase."""

    def __init__(self, port: int, interval: float = 0.02) -> None:
        self.port, self.interval = port, interval
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _once(self) -> None:
        started = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            if not answer.startswith(b"HTTP/1.1 200"):
                self.failures.append(answer[:40].decode(errors="replace"))
                return
            self.latencies.append(time.perf_counter() - started)
        except OSError as e:
            self.failures.append(type(e).__name__)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._once()
            self._stop.wait(self.interval)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def report(self) -> dict[str, Any]:
        ms = {k: round(v * 1000, 1) if v is not None else None for k, v in summary(sorted(self.latencies)).items()}
        kinds = dict(Counter(self.failures))
        return {"probes": len(self.latencies), "failures": len(self.failures), "failure_kinds": kinds, "health_ms": ms}


def big_header(port: int) -> int:
    """Send an unterminated header of up to 50 MB; the bytes sent before the server refused."""
    sent = 0
    chunk = b"a" * 65536
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
            while sent < BIG_HEADER_BYTES:
                s.sendall(chunk)
                sent += len(chunk)
    except OSError:
        pass
    return sent


def phase_big_headers(port: int, pid: int, count: int) -> dict[str, Any]:
    before = rss_kb(pid)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(big_header(port))) for _ in range(count)]
    with Probe(port) as probe:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        time.sleep(0.5)
    after = rss_kb(pid)
    return {
        **probe.report(),
        "connections": count,
        "max_bytes_sent_before_refusal": max(results, default=0),
        "rss_kb_before": before,
        "rss_kb_after": after,
        "rss_growth_mb": round((after - before) / 1024, 1),
    }


def phase_slow(port: int, pid: int, count: int, seconds: float) -> dict[str, Any]:
    socks: list[socket.socket] = []
    closed = 0
    before = rss_kb(pid)
    with Probe(port) as probe:
        for _ in range(count):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.setblocking(False)
                s.send(b"G")
                socks.append(s)
            except OSError:
                closed += 1
        opened = time.monotonic()
        peak_rss = rss_kb(pid)
        while time.monotonic() - opened < seconds:
            time.sleep(min(10.0, max(0.0, seconds - (time.monotonic() - opened))))
            for s in socks:
                if s.fileno() < 0:
                    continue
                try:
                    s.send(b"E")
                except OSError:
                    closed += 1
                    s.close()
            peak_rss = max(peak_rss, rss_kb(pid))
    for s in socks:
        s.close()
    return {
        **probe.report(),
        "connections": count,
        "seconds": seconds,
        "closed_by_server": closed,
        "rss_growth_mb": round((peak_rss - before) / 1024, 1),
    }


def phase_rare_crons(port: int, posts: int) -> dict[str, Any]:
    triggers = [{"cron": RARE_CRON, "url": f"https://example.com/{i}", "method": "GET"} for i in range(1000)]
    body = json.dumps({"triggers": triggers}).encode()
    headers = "".join(f"{k}: {v}\r\n" for k, v in auth_headers().items())
    head = (
        f"POST /api/workspaces/abuse/triggers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    statuses: list[str] = []
    post_seconds: list[float] = []
    with Probe(port, interval=0.005) as probe:
        time.sleep(0.3)
        for _ in range(posts):
            started = time.perf_counter()
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                s.sendall(head + body)
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            post_seconds.append(round(time.perf_counter() - started, 3))
            statuses.append(answer[9:12].decode())
        time.sleep(0.3)
    return {**probe.report(), "posts": posts, "statuses": statuses, "post_seconds": post_seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.abuse", description=__doc__.split("\n")[0])
    parser.add_argument("--big", type=int, default=20, help="connections with a 50 MB header (default 20)")
    parser.add_argument("--slow", type=int, default=2000, help="slow connections (default 2000)")
    parser.add_argument("--slow-seconds", type=float, default=25.0, help="how long they last (default 25)")
    parser.add_argument("--posts", type=int, default=3, help="POSTs of 1,000 rare crons (default 3)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines file to append to")
    parser.add_argument("--no-save", action="store_true", help="do not append to the results file")
    args = parser.parse_args(argv)
    if not (0 <= args.slow <= 5000 and 0 <= args.big <= 100 and 0 < args.slow_seconds <= 60 and 0 <= args.posts <= 20):
        parser.error("bounded: --slow <= 5000, --big <= 100, --slow-seconds <= 60, --posts <= 20")

    phases: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-abuse-") as tmp:
        tmpdir = Path(tmp)
        redis = RedisServer().start()
        env = service_env(redis.url)
        api: Child | None = None
        try:
            api, base = start_api(env, cwd=tmpdir, log_dir=tmpdir)
            port = int(base.rsplit(":", 1)[1])
            with Probe(port) as probe:
                time.sleep(3)
            phases["baseline"] = probe.report()
            phases["big-headers"] = phase_big_headers(port, api.pid, args.big)
            phases["slow"] = phase_slow(port, api.pid, args.slow, args.slow_seconds)
            phases["rare-crons"] = phase_rare_crons(port, args.posts)
            settings = settings_in(env)
        finally:
            if api is not None:
                stop_all([api])
            redis.stop()

    rows = [
        [
            name,
            fmt(p["probes"]),
            fmt(p["failures"]),
            fmt(p["health_ms"]["p50"], 1),
            fmt(p["health_ms"]["p99"], 1),
            fmt(p["health_ms"]["max"], 1),
            fmt(p.get("rss_growth_mb"), 1),
        ]
        for name, p in phases.items()
    ]
    print_table(
        f"bench.abuse: scheduler-api serve under attack, /health probed every 20 ms  |  {provenance_line()}",
        ["phase", "probes", "failed", "p50 ms", "p99 ms", "max ms", "RSS +MB"],
        rows,
    )
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "health_ms"} for k, v in phases.items()}))
    save(
        {
            "bench": "abuse",
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "settings": settings,
            "phases": phases,
        },
        None if args.no_save else args.results,
    )


if __name__ == "__main__":
    main()
