"""Liveness of `scheduler-api worker` and `scheduler`: `GET /health` on `HEALTH_PORT`, for Kubernetes.

Each loop of a process stamps the time it last went round (`Liveness.beat`): the scheduler's poll
loop ("scheduler"); in a worker, rq's main loop ("rq", between jobs and every few seconds while it
waits for one) and the event loop delivering the requests ("delivery-loop", stamped from inside the
loop every second by `beat_on_loop`). `HealthServer` answers `GET /health` from a thread of its own:

* 200 ``{"status": "ok", "loops": {"rq": 0.4, ...}, ...}`` while every loop has gone round within
  `HEALTH_STALE_SECONDS` (the values are seconds since each loop's last round);
* 503 ``{"status": "stale", "stale": ["delivery-loop"], ...}`` once one has not (and a warning
  in the log), so that Kubernetes restarts a process whose loop is stuck;
* 200 ``{"status": "stopping"}`` once the process is shutting down on a signal: its loops end on
  purpose while the requests in flight finish.

A probe reads a few numbers in memory: no Redis call, so Redis refusing connections never fails
it (the loops go round, retrying); a loop blocked on a Redis that stopped answering for longer than
`HEALTH_STALE_SECONDS` does fail it, and a restart connects afresh. A process that is
frozen as a whole (SIGSTOP, a stopped VM) does not answer at all: the probe times out, which
Kubernetes counts as a failure too. Nothing here starts at import; `serve_health` starts the server.

Failure rules: a port that cannot be bound raises `SettingsError` naming `HEALTH_PORT` (the
command exits at start-up); any other path than /health is a 404 in the service's error shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from scheduler_api.errors import SettingsError
from scheduler_api.settings import Settings

log = logging.getLogger("scheduler_api.health")

LOOP_BEAT_SECONDS = 1.0  # how often `beat_on_loop` stamps from inside an event loop
REQUEST_TIMEOUT_SECONDS = 5.0  # a probe connection that sends nothing is closed after this


class Liveness:
    """The last round of each loop of this process (monotonic seconds), and whether it is stopping.

    Thread-safe without a lock: each beat replaces one float in a dict (atomic under the GIL).
    """

    def __init__(self, *, stale_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        if stale_after <= 0:
            raise ValueError(f"stale_after must be positive, got {stale_after!r}")
        self.stale_after = stale_after
        self.clock = clock
        self.last: dict[str, float] = {}
        self.stopping = False

    def beat(self, loop: str) -> None:
        """`loop` went round now. Its first beat registers it: from then on it must keep beating."""
        self.last[loop] = self.clock()

    def stop(self) -> None:
        """The process is shutting down on purpose: /health answers 200 "stopping" from now on."""
        self.stopping = True

    def report(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, the JSON body /health answers with)."""
        now = self.clock()
        ages = {loop: round(max(now - at, 0.0), 3) for loop, at in sorted(self.last.items())}
        body: dict[str, Any] = {
            "status": "ok",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "loops": ages,
            "stale_after_seconds": self.stale_after,
        }
        if self.stopping:
            body["status"] = "stopping"
            return True, body
        stale = [loop for loop, age in ages.items() if age > self.stale_after]
        if stale:
            body["status"] = "stale"
            body["stale"] = stale
        return not stale, body


def beat_on_loop(loop: asyncio.AbstractEventLoop, liveness: Liveness, name: str) -> None:
    """Stamp `name` from inside `loop` every `LOOP_BEAT_SECONDS` for as long as the loop runs (a
    chain of timer callbacks, nothing left pending that closing the loop would complain about).
    Callable from any thread; the loop is registered at once, so one that never runs goes stale."""
    liveness.beat(name)

    def stamp() -> None:
        liveness.beat(name)
        loop.call_later(LOOP_BEAT_SECONDS, stamp)

    loop.call_soon_threadsafe(stamp)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    liveness: Liveness


class _V6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_SECONDS

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/health":
            self._send(404, {"success": False, "error": f"no such path: {self.path[:100]}", "details": []})
            return
        healthy, body = self.server.liveness.report()
        if not healthy:
            log.warning(
                "liveness: %s not gone round for more than %gs (%s)",
                body["stale"],
                body["stale_after_seconds"],
                body["loops"],
            )
        self._send(200 if healthy else 503, body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not logged
        pass


class HealthServer:
    """`GET /health` for `liveness` on `host`:`port` (0: a free port), served by a daemon thread."""

    def __init__(self, liveness: Liveness, *, host: str, port: int) -> None:
        server_class = _V6Server if ":" in host else _Server
        try:
            self.httpd = server_class((host, port), _Handler)
        except OSError as e:
            raise SettingsError(f"invalid settings: HEALTH_PORT: cannot listen on {host}:{port} ({e.strerror})") from e
        self.httpd.liveness = liveness
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.5}, name="health")
        self.thread.daemon = True

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def close(self) -> None:
        """Stop answering; returns once the server thread has ended."""
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()


def serve_health(settings: Settings) -> tuple[Liveness | None, HealthServer | None]:
    """With `HEALTH_PORT` set: a `Liveness` for the process's loops and its server, started on
    `HOST`:`HEALTH_PORT`. Unset (0): (None, None), and the loops stamp nothing."""
    if not settings.health_port:
        return None, None
    liveness = Liveness(stale_after=settings.health_stale_seconds)
    server = HealthServer(liveness, host=settings.host, port=settings.health_port).start()
    log.info("liveness: GET /health on %s:%d", settings.host, server.port)
    return liveness, server
