"""The chaos soak's processes (`bench.chaos`): Redis and the service's processes, started, killed,
frozen, terminated and replaced, each disruption written into the ledger (bench.chaos_ledger)."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from redis import Redis
from rq import Queue, Worker

from bench.chaos_ledger import Event, Ledger
from bench.common import Child, http_ok, spawn_service, wait_until
from scheduler_api.embedded_redis import RedisServer
from scheduler_api.settings import Settings
from scheduler_api.storage import keys


class Fleet:
    """Redis and the service's processes, started, killed, frozen and replaced; every disruption
    goes into the ledger as an `Event`."""

    def __init__(self, env: dict[str, str], tmpdir: Path, redis: RedisServer, ledger: Ledger) -> None:
        self.env = env
        self.dir = tmpdir
        self.redis = redis
        self.ledger = ledger
        self.base = f"http://127.0.0.1:{env['PORT']}"
        self.procs: dict[str, list[Child]] = {"api": [], "scheduler": [], "worker": []}
        self.ended: set[int] = set()  # pids this fleet stopped on purpose
        self.frozen: set[int] = set()
        self.serial: dict[str, int] = defaultdict(int)
        self.restarted_by_itself = 0

    def spawn(self, kind: str) -> Child:
        name = f"{kind}-{self.serial[kind]}"
        self.serial[kind] += 1
        child = spawn_service(name, "serve" if kind == "api" else kind, env=self.env, cwd=self.dir, log_dir=self.dir)
        self.procs[kind].append(child)
        return child

    def alive(self, kind: str) -> list[Child]:
        return [c for c in self.procs[kind] if c.alive() and c.pid not in self.ended]

    def all(self) -> list[Child]:
        return [c for kind in self.procs.values() for c in kind]

    def start(self, *, schedulers: int, workers: int, conn: Redis) -> None:
        self.spawn("api")
        for _ in range(schedulers):
            self.spawn("scheduler")
        for _ in range(workers):
            self.spawn("worker")
        self.wait_api()
        queue = Queue(Settings.model_fields["queue_name"].default, connection=conn)
        wait_until("workers", lambda: Worker.count(connection=conn, queue=queue) >= workers, timeout=60)
        wait_until("schedulers", lambda: conn.zcard(keys.SCHEDULERS) >= schedulers, timeout=60)

    def wait_api(self) -> None:
        wait_until("api", lambda: http_ok(self.base + "/ready"), timeout=60, children=self.alive("api"))

    def kill(self, kind: str, rng: random.Random) -> None:
        """SIGKILL one (not frozen) process of `kind` and start a new one at once."""
        candidates = [c for c in self.alive(kind) if c.pid not in self.frozen]
        if not candidates:
            return
        victim = rng.choice(candidates)
        self.ended.add(victim.pid)
        now = time.time()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        self.ledger.events.append(Event("kill", victim.name, now, now))
        self.spawn(kind)

    def freeze(self, rng: random.Random) -> Callable[[], None]:
        """SIGSTOP one worker; returns the call that resumes it (SIGCONT) and logs the freeze."""
        victim = rng.choice(self.alive("worker"))
        self.frozen.add(victim.pid)
        start = time.time()
        victim.proc.send_signal(signal.SIGSTOP)

        def resume() -> None:
            victim.proc.send_signal(signal.SIGCONT)
            self.frozen.discard(victim.pid)
            self.ledger.events.append(Event("freeze", victim.name, start, time.time()))

        return resume

    def restart_redis(self, down: float) -> None:
        """SIGKILL redis-server, wait `down` s, start it again on the same port and AOF files."""
        start = time.time()
        process = self.redis.process
        if process is not None:
            process.kill()
            process.wait()
        time.sleep(down)
        self.redis = RedisServer(
            port=self.redis.port, data_dir=self.redis.data_dir, extra_args=self.redis.extra_args
        ).start(timeout=60)
        self.ledger.events.append(Event("redis", "redis-server", start, time.time()))

    def roll(self, child: Child, kind: str, conn: Redis) -> None:
        """SIGTERM `child`, wait for its exit, start its successor and wait until it is ready."""
        start = time.time()
        self.ended.add(child.pid)
        child.proc.send_signal(signal.SIGTERM)
        try:
            child.proc.wait(self.rolling_grace())
            how = "term"
        except subprocess.TimeoutExpired:  # not graceful after all: it counts as a kill
            child.proc.kill()
            child.proc.wait()
            how = "kill"
        successor = self.spawn(kind)
        if kind == "api":
            self.wait_api()
        elif kind == "worker":
            queue = Queue(Settings.model_fields["queue_name"].default, connection=conn)
            wanted = len(self.alive("worker"))
            wait_until("worker", lambda: Worker.count(connection=conn, queue=queue) >= wanted, timeout=60)
        else:
            time.sleep(2.0)
            successor.check()
        self.ledger.events.append(Event(how, child.name, start, time.time()))

    def rolling_grace(self) -> float:
        return float(self.env.get("DELIVERY_TIMEOUT_SECONDS", "30")) + 30.0

    def revive(self) -> None:
        """Log and replace every process that exited without being asked to."""
        for kind, children in self.procs.items():
            for child in list(children):
                if not child.alive() and child.pid not in self.ended:
                    self.ended.add(child.pid)
                    now = time.time()
                    self.ledger.events.append(Event("exit", f"{child.name} ({child.proc.returncode})", now, now))
                    self.restarted_by_itself += 1
                    self.spawn(kind)
                    if kind == "api":
                        self.wait_api()

    def stop(self) -> None:
        for pid in list(self.frozen):
            for child in self.all():
                if child.pid == pid:
                    child.proc.send_signal(signal.SIGCONT)
        for child in self.all():
            if child.alive():
                child.proc.send_signal(signal.SIGTERM)
        for child in self.all():
            try:
                child.proc.wait(20)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        self.redis.stop()
