"""Helpers that run the service's own commands as child processes for the tests.

`Procs` starts `python -m scheduler_api.cli scheduler|worker|...` against the session's private
redis-server, each child's output going to a file under the test's tmp_path (shown when an
assertion fails), and stops every child (SIGTERM, then SIGKILL) at the end. The `procs` fixture
in conftest.py hands one to a test.

`Child` runs any command (`serve`, `dev`, uvicorn) with the environment it is given; the
`spawned` fixture of tests/processes/conftest.py closes each at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from redis import Redis
from rq import Worker

from scheduler_api.embedded_redis import free_port
from scheduler_api.settings import Settings
from scheduler_api.storage import keys

ROOT = Path(__file__).resolve().parents[2]  # the checkout
DELIVERY_TIMEOUT = 5.0
LEASE = 2.0


# ---------------------------------------------------------------------------------------------
# Process helpers


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started: float

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)


class Procs:
    """Starts service processes with a test environment; `stop_all` ends every one of them."""

    def __init__(self, tmp_path: Path, redis_url: str) -> None:
        self.tmp_path = tmp_path
        self.redis_url = redis_url
        self.procs: list[Proc] = []

    def env(self, **overrides: Any) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            REDIS_URL=self.redis_url,
            SCHEDULER_INTERVAL_SECONDS="0.2",
            DELIVERY_BACKOFF_SECONDS="0.1",
            DELIVERY_TIMEOUT_SECONDS=str(DELIVERY_TIMEOUT),
            WORKER_LEASE_SECONDS=str(LEASE),
            COMPLETED_KEEP_COUNT="100000",
            LOG_LEVEL="INFO",
            APP_ENV="development",
            ALLOW_PRIVATE_TARGETS="true",  # the receiver is on 127.0.0.1
            PYTHONUNBUFFERED="1",
            # The children import the code under test, not whatever else is installed.
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    def start(self, role: str, *, argv: list[str] | None = None, **env: Any) -> Proc:
        name = f"{role}-{len(self.procs) + 1}"
        log_path = self.tmp_path / f"{name}.log"
        cmd = argv or [sys.executable, "-m", "scheduler_api.cli", role]
        with open(log_path, "wb") as out:
            # cwd is tmp_path so that no `.env` file of the checkout is read.
            popen = subprocess.Popen(cmd, env=self.env(**env), cwd=self.tmp_path, stdout=out, stderr=subprocess.STDOUT)
        proc = Proc(name, popen, log_path, time.monotonic())
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        parts = []
        for p in self.procs:
            status = "running" if p.alive() else f"exit {p.popen.returncode}"
            parts.append(f"----- {p.name} (pid {p.pid}, {status}) -----\n{p.log()[-4000:]}")
        return "\n".join(parts)

    def stop_all(self) -> None:
        for p in self.procs:
            p.send(signal.SIGTERM)
        deadline = time.monotonic() + 3
        for p in self.procs:
            try:
                p.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.wait(10)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, procs: Procs | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = f"\n{procs.logs()}" if procs else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{logs}")
        time.sleep(0.05)


def live_schedulers(conn: Redis) -> int:
    n = 0
    for key in conn.scan_iter(keys.PREFIX + "scheduler_instance:*"):
        if not conn.hexists(key, "death"):
            n += 1
    return n


def worker_registered(conn: Redis, proc: Proc) -> bool:
    return any(w.pid == proc.pid for w in Worker.all(connection=conn))


def start_scheduler(procs: Procs, conn: Redis, **env: Any) -> Proc:
    before = live_schedulers(conn)
    proc = procs.start("scheduler", **env)
    wait_until(lambda: live_schedulers(conn) > before, 20, f"{proc.name} to register", procs)
    return proc


def start_worker(procs: Procs, conn: Redis, **env: Any) -> Proc:
    proc = procs.start("worker", **env)
    wait_until(lambda: worker_registered(conn, proc), 20, f"{proc.name} to register", procs)
    return proc


def stop(proc: Proc, procs: Procs, timeout: float = 5.0) -> int:
    proc.send(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{proc.name} did not exit within {timeout}s of SIGTERM\n{procs.logs()}") from None


# ---------------------------------------------------------------------------------------------
# Redis and receiver helpers


def header(request: Any, name: str) -> str | None:
    for k, v in request.headers.items():
        if k.lower() == name.lower():
            return str(v)
    return None


def scheduled_second(request: Any) -> int:
    raw = header(request, "X-Scheduler-Scheduled-At")
    assert raw is not None and raw.endswith("Z"), raw
    ts = datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    assert ts == int(ts), f"scheduled time {raw} is not a whole second"
    return int(ts)


def snapshot(receiver: Any) -> list[Any]:
    with receiver.lock:
        return list(receiver.requests)


def records(conn: Redis, workspace: str = "ws") -> dict[str, dict[str, Any]]:
    return {k.decode(): json.loads(v) for k, v in conn.hgetall(keys.records(workspace)).items()}


def drained(conn: Redis) -> bool:
    """No firing is waiting anywhere: no batch, nothing in the outbox, no retry."""
    return (
        next(conn.scan_iter(keys.BATCH_PREFIX + "*"), None) is None
        and conn.zcard(keys.OUTBOX) == 0
        and conn.zcard(keys.RETRIES) == 0
    )


# ---------------------------------------------------------------------------------------------
# Any command as a child process: serve, dev, uvicorn

SETTING_NAMES = {name.upper() for name in Settings.model_fields}


def clean_env(**values: str) -> dict[str, str]:
    """The test's environment without any of the service's settings (nor HOST), plus `values`."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES and k.upper() != "HOST"}
    env.update(values)
    return env


def unstartable_env(**values: str) -> dict[str, str]:
    """`clean_env` for a command expected to refuse to start: should validation ever let it
    through, it must neither take a real port nor find a real Redis."""
    return clean_env(
        **{"PORT": str(free_port()), "HOST": "127.0.0.1", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", **values}
    )


class Child:
    """A child process whose output goes to a file; always stopped by `close()`."""

    def __init__(self, args: list[str], *, env: dict[str, str], cwd: Path, log: Path, new_group: bool = False):
        self.log_path = log
        self.new_group = new_group
        self._log: IO[bytes] = log.open("ab")
        try:
            self.popen = subprocess.Popen(
                args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=new_group
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_http(self, url: str, timeout: float) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                pytest.fail(f"process exited with {self.popen.returncode} before {url} answered:\n{self.output()}")
            try:
                r = httpx.get(url, timeout=1)
                if r.status_code == 200:
                    return r
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"{url} did not answer within {timeout}s:\n{self.output()}")

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process did not exit within {timeout}s:\n{self.output()}")

    def close(self) -> None:
        if self.new_group:
            try:  # the whole group, even if its leader is gone already
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)
        self._log.close()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of every live descendant of `pid` (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                try:
                    found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                todo.append(child)
    return found


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
