"""A real HTTP server on 127.0.0.1 that records every request (the `receiver` fixture serves one)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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


def headers_of(r: Received) -> dict[str, str]:
    """The request's headers with lower-case names (the receiver keeps the sender's case)."""
    return {k.lower(): v for k, v in r.headers.items()}


def scheduled_ats(requests: list[Received]) -> list[str]:
    """The X-Scheduler-Scheduled-At header of each request, in the order they arrived."""
    return [headers_of(r)["x-scheduler-scheduled-at"] for r in requests]


@contextmanager
def serve_receiver() -> Iterator[Receiver]:
    """Start a `Receiver` on a free port; shut it down on exit."""
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
    try:
        yield state["r"]
    finally:
        server.shutdown()
        server.server_close()
