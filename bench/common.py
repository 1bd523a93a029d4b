"""What the benchmarks share: child processes, the receiver, /proc readings, statistics, output."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis

from scheduler_api.embedded_redis import free_port

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.jsonl"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# A key for this run only: the API is started with API_KEYS set, as in production.
API_KEY = "bench-" + secrets.token_urlsafe(24)
RECEIVER_CIDR = "127.0.0.1/32"

# The settings a benchmark may pass to the service's processes; recorded with each result.
SETTING_NAMES = (
    "REDIS_URL",
    "PORT",
    "HOST",
    "APP_ENV",
    "LOG_LEVEL",
    "QUEUE_NAME",
    "DELIVERY_TIMEOUT_SECONDS",
    "DELIVERY_MAX_RETRIES",
    "DELIVERY_BACKOFF_SECONDS",
    "WORKER_CONCURRENCY",
    "WORKER_LEASE_SECONDS",
    "SCHEDULER_INTERVAL_SECONDS",
    "MISFIRE_GRACE_SECONDS",
    "SCHEDULER_BATCH_SIZE",
    "COMPLETED_KEEP_SECONDS",
    "COMPLETED_KEEP_COUNT",
    "FAILED_KEEP_COUNT",
    "MAX_TRIGGERS_PER_WORKSPACE",
    "MAX_BODY_BYTES",
    "TARGET_ALLOWLIST",
    "ALLOW_PRIVATE_TARGETS",
)


# --- child processes ---------------------------------------------------------------------------


@dataclass
class Child:
    """A process the benchmark started; its output goes to `log_path`."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def peak_rss_kb(self) -> int | None:
        """VmHWM (peak resident set) in kB, from /proc; None once the process is gone."""
        return _proc_status_kb(self.pid, "VmHWM")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time so far, from /proc/<pid>/stat."""
        try:
            raw = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        fields = raw[raw.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (a warm shutdown for workers); then a second SIGTERM; then SIGKILL."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                return self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.poll()


def spawn(name: str, args: Sequence[str], *, env: dict[str, str], cwd: Path, log_dir: Path) -> Child:
    """Start `args` in its own session (a Ctrl-C of the benchmark does not reach it directly)."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            list(args), env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Child(name, proc, log_path)


def spawn_service(name: str, command: str, *, env: dict[str, str], cwd: Path, log_dir: Path) -> Child:
    """`python -m scheduler_api.cli <command>`, the production command line.

    `cwd` should be an empty directory, so that no `.env` file adds settings the benchmark did not
    pass through the environment.
    """
    return spawn(name, [sys.executable, "-m", "scheduler_api.cli", command], env=env, cwd=cwd, log_dir=log_dir)


def loopback_allowlist(current: str | None) -> str:
    """TARGET_ALLOWLIST with the receiver's loopback address added: the SSRF guard stays on for
    everything else, as in production."""
    entries = [e for e in (current or "").split(",") if e.strip()]
    return ",".join([*entries, RECEIVER_CIDR]) if RECEIVER_CIDR not in entries else ",".join(entries)


def service_env(redis_url: str, **values: str) -> dict[str, str]:
    """The caller's environment plus the benchmark's settings: its Redis, 127.0.0.1, LOG_LEVEL=WARNING,
    an API key of its own (`API_KEY`), the receiver allowed as a delivery target, and the per-tenant
    quotas lifted (a benchmark is one tenant writing far faster than any real one)."""
    env = dict(os.environ)
    env.update(
        {
            "REDIS_URL": redis_url,
            "HOST": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            "API_KEYS": API_KEY,
            "TARGET_ALLOWLIST": loopback_allowlist(os.environ.get("TARGET_ALLOWLIST")),
            "WRITES_PER_MINUTE": "100000000",
            "RUN_NOW_PER_MINUTE": "100000000",
            "MAX_WORKSPACES_PER_SCOPE": "100000000",
            "MAX_TRIGGERS_PER_SCOPE": "1000000000",
        }
    )
    env.update(values)
    return env


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def settings_in(env: dict[str, str]) -> dict[str, str]:
    """The service settings set in `env`, for the record (API keys and secrets are left out; the
    Redis URL is local). SECRETS_KEY is only noted as set or not."""
    out = {name: env[name] for name in SETTING_NAMES if name in env}
    out["SECRETS_KEY"] = "set" if env.get("SECRETS_KEY") else "unset"
    out["API_KEYS"] = "set" if env.get("API_KEYS") else "unset"
    return out


def stop_all(children: Sequence[Child], timeout: float = 15.0) -> None:
    """SIGTERM every child first, then wait for each (so they shut down in parallel)."""
    for child in children:
        if child.alive():
            try:
                child.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.stop(5.0)


def wait_until(what: str, predicate: Any, *, timeout: float, children: Sequence[Child] = (), step: float = 0.1) -> None:
    """Poll `predicate()` until true; raise after `timeout` s or when a child died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            child.check()
        try:
            if predicate():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(step)
    raise TimeoutError(f"{what}: not ready within {timeout:g}s")


def http_ok(url: str, timeout: float = 1.0) -> bool:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bool(200 <= response.status < 300)


def http_json(url: str, timeout: float = 30.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def start_api(env: dict[str, str], *, cwd: Path, log_dir: Path, timeout: float = 30.0) -> tuple[Child, str]:
    """`scheduler-api serve` on a free port; returns it and its base URL once /health answers."""
    port = free_port()
    env = dict(env, PORT=str(port))
    api = spawn_service("api", "serve", env=env, cwd=cwd, log_dir=log_dir)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until("api", lambda: http_ok(base + "/ready"), timeout=timeout, children=[api])
    except BaseException:
        api.stop(5.0)
        raise
    return api, base


# --- the receiver ------------------------------------------------------------------------------


class ReceiverProcess:
    """`python -m bench.receiver` on a free port, and a reader of what it recorded."""

    def __init__(self, *, delay_ms: float, log_dir: Path, slow: tuple[str, float] | None = None) -> None:
        """`slow`: (path prefix, milliseconds): requests to those paths are answered after that long."""
        # BENCH_RECEIVER=aiohttp: the aiohttp.web receiver of earlier figures (bench.receiver).
        self.server = os.environ.get("BENCH_RECEIVER", "httptools")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.child = spawn(
            "receiver",
            [
                sys.executable,
                "-m",
                "bench.receiver",
                "--port",
                str(self.port),
                "--delay-ms",
                f"{delay_ms:g}",
                "--server",
                self.server,
                *(["--slow-prefix", slow[0], "--slow-ms", f"{slow[1]:g}"] if slow else []),
            ],
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            cwd=REPO,
            log_dir=log_dir,
        )
        self.offset = 0

    def wait_ready(self, timeout: float = 15.0) -> ReceiverProcess:
        try:
            wait_until("receiver", lambda: http_ok(self.url + "/__bench/stats"), timeout=timeout, children=[self.child])
        except BaseException:
            self.stop()
            raise
        return self

    def count(self) -> int:
        return int(http_json(self.url + "/__bench/stats")["count"])

    def fetch_new(self, max_pages: int = 100) -> list[list[Any]]:
        """Records not fetched yet: [arrived, answered, scheduled_at header, Idempotency-Key]."""
        out: list[list[Any]] = []
        for _ in range(max_pages):
            page = http_json(f"{self.url}/__bench/records?offset={self.offset}")
            out.extend(page["records"])
            self.offset = int(page["next"])
            if not page["records"] or self.offset >= int(page["count"]):
                break
        return out

    def stop(self) -> None:
        self.child.stop(5.0)


# --- Redis -------------------------------------------------------------------------------------


def used_memory(conn: Redis) -> int:
    info: dict[str, Any] = conn.info("memory")
    return int(info["used_memory"])


def redis_cpu_seconds(conn: Redis) -> float:
    """CPU seconds the redis-server process has used (INFO cpu: used_cpu_sys + used_cpu_user)."""
    info: dict[str, Any] = conn.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def redis_version(conn: Redis) -> str:
    info: dict[str, Any] = conn.info("server")
    return str(info.get("redis_version", "?"))


# --- statistics --------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(math.ceil(p / 100 * len(sorted_values)) - 1, 0)
    return sorted_values[min(rank, len(sorted_values) - 1)]


def summary(values: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {
        "min": ordered[0] if ordered else None,
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else None,
    }


def fmt(value: float | int | None, digits: int = 3, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value:,.{digits}f}{unit}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "-+-".join("-" * w for w in widths)
    print()
    print(title)
    print(_row(headers, widths))
    print(line)
    for row in rows:
        print(_row(row, widths))
    print(flush=True)


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    """First column left-aligned, the others right-aligned."""
    return " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


# --- provenance and results --------------------------------------------------------------------


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD") or None
        # Changes outside bench/ (the benchmark and its results do not change what is measured).
        changed = [line for line in git("status", "--porcelain").splitlines() if not line[3:].startswith("bench/")]
        return {"commit": commit, "dirty": bool(changed)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def machine() -> dict[str, Any]:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = _proc_meminfo_kb("MemTotal")
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": model,
        "memory_mb": mem_kb // 1024 if mem_kb else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def provenance_line() -> str:
    g, m = git_commit(), machine()
    commit = (g["commit"] or "?")[:12] + ("+dirty" if g["dirty"] else "")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"commit {commit}  |  {m['usable_cores']} cores ({m['cpu']}), load {load}  |  Python {m['python']}"


def save(record: dict[str, Any], path: Path | None) -> None:
    """Append `record` (with time, commit and machine) as one JSON line to `path`."""
    if path is None:
        return
    full = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **record,
        **git_commit(),
        "machine": machine(),
    }
    with path.open("a") as f:
        f.write(json.dumps(full, separators=(",", ":")) + "\n")
    print(f"appended to {path}")


def _proc_status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _proc_meminfo_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def system_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy since boot (/proc/stat), all processes."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class LoadMeter:
    """Measures, over a window, how many cores the whole machine was busy and how many of those
    were *not* the benchmark's own processes (other work on a shared machine skews results)."""

    def __init__(self, children: Sequence[Child]) -> None:
        self.children = list(children)
        self.start()

    def _ours(self) -> float:
        return self_cpu_seconds() + sum(c.cpu_seconds() or 0.0 for c in self.children)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.busy0 = system_busy_seconds()
        self.ours0 = self._ours()

    def read(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        busy = system_busy_seconds() - self.busy0
        ours = self._ours() - self.ours0
        return {
            "seconds": round(elapsed, 2),
            "busy_cores": round(busy / elapsed, 2),
            "ours_cores": round(ours / elapsed, 2),
            "other_cores": round(max(busy - ours, 0.0) / elapsed, 2),
        }
