"""The HTTP edge of a real `scheduler-api serve` (scheduler_api.api.server), driven with raw sockets:
header size caps, slow heads and bodies dropped, the connection cap, the parser's own 400s, all JSON.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler_api.embedded_redis import free_port
from tests.support.processes import Child, clean_env

pytestmark = pytest.mark.slow


@pytest.fixture
def serve(tmp_path: Path, redis_url: str, spawned: list[Child]) -> Iterator[int]:
    """A `serve` process with short timeouts and a small connection cap; yields its port."""
    port = free_port()
    env = clean_env(
        PORT=str(port),
        HOST="127.0.0.1",
        REDIS_URL=redis_url,
        REQUEST_HEADER_TIMEOUT_SECONDS="1",
        REQUEST_BODY_TIMEOUT_SECONDS="1",
        MAX_CONNECTIONS="5",
    )
    server = Child([sys.executable, "-m", "scheduler_api.cli", "serve"], env=env, cwd=tmp_path, log=tmp_path / "log")
    spawned.append(server)
    server.wait_http(f"http://127.0.0.1:{port}/health", timeout=20)
    yield port
    assert "Traceback" not in server.output()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """Read until the server closes: (status, headers, JSON body)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    assert headers["content-type"] == "application/json", data[:300]
    return int(status_line.split()[1]), headers, json.loads(body)


def send_all(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before reading it all


def test_a_header_over_8_kib_is_a_431_in_json(serve: int) -> None:
    with connect(serve) as s:
        send_all(s, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n")
        status, headers, body = read_answer(s)
    assert status == 431 and headers["connection"] == "close"
    assert body == {
        "success": False,
        "error": "Request header fields too large",
        "details": [{"path": "headers.X-Big", "message": "at most 8192 bytes (name and value), got 10005"}],
    }


def test_an_unterminated_50_mb_header_is_cut_at_64_kib(serve: int) -> None:
    with connect(serve) as s:
        send_all(s, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        try:
            while sent < 50_000_000:
                s.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, body = read_answer(s)
    assert sent < 50_000_000, "the server read 50 MB of one header"
    assert status == 431
    assert body["details"] == [
        {"path": "headers", "message": "the request line and headers must be at most 65536 bytes"}
    ]


def test_many_headers_over_64_kib_in_all_are_a_431(serve: int) -> None:
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 4000) for i in range(20))
    with connect(serve) as s:
        send_all(s, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        status, _, body = read_answer(s)
    assert status == 431 and body["error"] == "Request header fields too large"


def test_a_slow_head_is_dropped_with_a_408_after_the_header_timeout(serve: int) -> None:
    with connect(serve) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        status, _, body = read_answer(s)
        waited = time.monotonic() - started
    assert status == 408
    assert body["details"] == [{"path": "headers", "message": "not received within 1 s"}]
    assert 0.5 < waited < 5


def test_a_silent_connection_is_closed_after_the_header_timeout(serve: int) -> None:
    with connect(serve) as s:
        assert s.recv(100) == b""  # closed without an answer


def test_a_slow_body_is_dropped_with_a_408_after_the_body_timeout(serve: int) -> None:
    with connect(serve) as s:
        s.sendall(
            b"POST /api/workspaces/ws/triggers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"trig'
        )
        status, _, body = read_answer(s)
    assert status == 408
    assert body["details"] == [{"path": "body", "message": "not received within 1 s"}]


def test_a_malformed_request_is_a_400_in_json(serve: int) -> None:
    with connect(serve) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n")
        status, _, body = read_answer(s)
    assert status == 400
    assert body["error"] == "Malformed HTTP request"
    assert body["details"][0]["path"] == "request" and body["details"][0]["message"]


def test_over_the_connection_cap_a_request_gets_a_503_in_json(serve: int) -> None:
    # Five connections mid-body (past their head: never shed), then a sixth asks for /health.
    held = [connect(serve) for _ in range(5)]
    try:
        for s in held:
            s.sendall(b"POST /api/workspaces/ws/triggers HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        time.sleep(0.2)
        with connect(serve) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = read_answer(s)
        assert status == 503 and headers["retry-after"] == "1"
        assert body == {
            "success": False,
            "error": "Server busy",
            "details": [
                {
                    "path": "connection",
                    "message": "this API process serves at most 5 connections at once; retry shortly",
                }
            ],
        }
    finally:
        for s in held:
            s.close()


def test_slow_heads_over_the_connection_cap_make_room_for_an_ordinary_client(serve: int) -> None:
    held = [connect(serve) for _ in range(5)]
    try:
        for s in held:
            s.sendall(b"GET /health HTTP/1.1\r\n")  # a slowloris: a head that never ends
        time.sleep(0.6)  # the header timeout (1 s) has not dropped them yet...
        r = httpx.get(f"http://127.0.0.1:{serve}/health", timeout=5)  # ...but they are shed for this one
        assert r.status_code == 200 and r.json()["status"] == "ok"
    finally:
        for s in held:
            s.close()
