"""`scheduler_api.delivery.attempt`: one HTTP attempt, end to end: what the receiver gets (payload,
headers, methods, bodies), and what is recorded of the answer (status, error, timeout, body excerpt).

The engine runs in-process: `tick` with an injected `now` moves due firings into RQ jobs, and
`run_worker(burst=True)` delivers them to a real local HTTP receiver.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from scheduler_api import __version__
from scheduler_api.api import create_app
from scheduler_api.delivery.attempt import redact
from scheduler_api.embedded_redis import free_port
from scheduler_api.engine import tick as ticking
from scheduler_api.header_crypto import HeaderCipher
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, keys
from scheduler_api.triggers import Trigger
from tests.support.api import deliveries
from tests.support.clock import T
from tests.support.engine import attempts, deliver, drive, fire_now, is_final, record_of, tick_and_deliver
from tests.support.factories import WS, make_engine_settings, make_settings, make_trigger
from tests.support.receiver import Receiver, headers_of


def test_post_sends_payload_custom_headers_and_scheduler_headers(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    payload = {"hello": "world", "n": 3, "nested": {"list": [1, 2, None]}, "unicode": "é✓"}
    edits.replace(
        conn,
        WS,
        [
            make_trigger(
                receiver.url + "/hook", payload=payload, headers={"X-Custom": "secret-value", "Authorization": "B x"}
            )
        ],
        now=lambda: T,
    )
    assert ticking.tick(conn, queue, settings, now=T + 1.3).fired == 1
    deliver(conn, settings)

    reqs = receiver.to("/hook")
    assert len(reqs) == 1
    r = reqs[0]
    assert r.method == "POST"
    assert r.json() == payload
    assert headers_of(r)["content-type"] == "application/json"
    assert headers_of(r)["x-custom"] == "secret-value"
    assert headers_of(r)["authorization"] == "B x"
    assert headers_of(r)["user-agent"] == f"scheduler-api/{__version__}"
    assert headers_of(r)["x-scheduler-workspace"] == WS
    assert headers_of(r)["x-scheduler-trigger"] == "ws:0"
    assert headers_of(r)["x-scheduler-scheduled-at"] == "2027-01-15T08:00:01Z"
    assert datetime.fromisoformat(headers_of(r)["x-scheduler-scheduled-at"]).timestamp() == T + 1
    assert headers_of(r)["x-scheduler-attempt"] == "1"
    assert headers_of(r)["idempotency-key"] == "ws:0@2027-01-15T08:00:01Z"

    rec = record_of(conn, "ws:0", T + 1)
    assert rec is not None
    assert rec["outcome"] == "delivered"
    assert rec["workspace_id"] == WS
    assert rec["scheduled_at"] == "2027-01-15T08:00:01Z"
    assert [a["status"] for a in rec["attempts"]] == [200]
    assert rec["attempts"][0]["body"] == '{"ok":true}'
    # The header values are secrets: the record does not carry them.
    assert "secret-value" not in json.dumps(rec)


def test_methods_bodies_and_content_type(conn: Redis, settings: Settings, queue: Queue, receiver: Receiver) -> None:
    """PUT and PATCH send the payload like POST; GET and DELETE send no body even with a stored
    payload and no Content-Type; a POST without payload has no body; a trigger's own Content-Type
    wins over ours."""
    url = receiver.url
    triggers = [
        make_trigger(url + "/put", method="PUT", payload={"m": "PUT"}),
        make_trigger(url + "/patch", method="PATCH", payload={"m": "PATCH"}),
        make_trigger(url + "/get", method="GET", payload={"stored": "not sent"}),
        make_trigger(url + "/delete", method="DELETE", payload={"stored": "not sent"}),
        make_trigger(url + "/empty", method="POST"),
        make_trigger(url + "/ct", payload={"a": 1}, headers={"content-type": "application/vnd.x+json"}),
    ]
    edits.replace(conn, WS, triggers, now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.2).fired == len(triggers)
    deliver(conn, settings)

    got = {r.path: r for r in receiver.wait_for(lambda rs: len(rs) >= len(triggers), 1)}
    assert sorted(got) == sorted(["/put", "/patch", "/get", "/delete", "/empty", "/ct"])
    for i, t in enumerate(triggers):
        r = got[t.url.removeprefix(url)]
        assert r.method == t.method
        assert headers_of(r)["x-scheduler-trigger"] == f"ws:{i}"
        assert headers_of(r)["idempotency-key"] == f"ws:{i}@2027-01-15T08:00:01Z"
        assert headers_of(r)["x-scheduler-scheduled-at"] == "2027-01-15T08:00:01Z"
        assert headers_of(r)["x-scheduler-attempt"] == "1"
        assert headers_of(r)["user-agent"] == f"scheduler-api/{__version__}"
    for path, method in (("/put", "PUT"), ("/patch", "PATCH")):
        assert got[path].json() == {"m": method}
        assert headers_of(got[path])["content-type"] == "application/json"
    for path in ("/get", "/delete", "/empty"):
        r = got[path]
        assert r.body == b""
        assert int(headers_of(r).get("content-length", "0")) == 0
        assert "transfer-encoding" not in headers_of(r)
    for path in ("/get", "/delete", "/empty"):
        assert "content-type" not in headers_of(got[path])  # no body, no type
    assert headers_of(got["/ct"])["content-type"] == "application/vnd.x+json"
    assert got["/ct"].json() == {"a": 1}


@pytest.mark.parametrize("name", ["User-Agent", "user-agent"])
def test_a_user_agent_of_the_trigger_is_replaced_by_ours(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver, name: str
) -> None:
    edits.replace(conn, WS, [make_trigger(receiver.url + "/ua", headers={name: "mine/1", "X-A": "1"})], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).fired == 1
    deliver(conn, settings)
    (r,) = receiver.to("/ua")
    # One User-Agent line on the wire (with two, many servers would read the first).
    assert [v for k, v in r.header_lines if k.lower() == "user-agent"] == [f"scheduler-api/{__version__}"]
    assert headers_of(r)["x-a"] == "1"


def test_a_compressed_response_is_recorded_as_text(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    text = '{"status":"accepted","detail":"' + "x" * 40 + '"}'
    receiver.on("/gz", (200, 0, {"Content-Encoding": "gzip"}, gzip.compress(text.encode())))
    edits.replace(conn, WS, [make_trigger(receiver.url + "/gz")], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).fired == 1
    deliver(conn, settings)
    (r,) = receiver.to("/gz")
    assert "gzip" in headers_of(r)["accept-encoding"]
    rec = record_of(conn, "ws:0", T + 1)
    assert rec is not None and rec["outcome"] == "delivered"
    assert rec["attempts"][0]["body"] == text


def test_connection_refused_is_a_failed_attempt(conn: Redis, redis_url: str, queue: Queue) -> None:
    settings = make_engine_settings(redis_url, delivery_max_retries=0)

    due = fire_now(conn, queue, settings, [make_trigger(f"http://127.0.0.1:{free_port()}/x")])
    deliver(conn, settings)
    rec = record_of(conn, "ws:0", due)
    assert rec is not None and rec["outcome"] == "failed"
    (attempt,) = rec["attempts"]
    assert attempt["status"] is None
    assert attempt["error"]


@pytest.mark.slow
def test_timeout_is_a_failed_attempt_and_is_retried(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url, delivery_timeout_seconds=0.3, delivery_max_retries=1)
    receiver.on("/slow", (200, 1.0))  # the first answer comes too late; the retry is answered at once
    due = fire_now(conn, queue, settings, [make_trigger(receiver.url + "/slow")])
    deliver(conn, settings)
    rec = record_of(conn, "ws:0", due)
    assert rec is not None and rec["outcome"] == "retrying"
    assert [a["error"] for a in rec["attempts"]] == ["timeout"]
    assert conn.zcard(keys.RETRIES) == 1

    drive(conn, queue, settings, lambda: is_final(conn, "ws:0", due))
    assert attempts(receiver.to("/slow")) == [1, 2]
    rec = record_of(conn, "ws:0", due)
    assert rec is not None
    assert rec["outcome"] == "delivered"
    first, second = rec["attempts"]
    assert first["error"] == "timeout"
    assert first["status"] is None
    assert 250 <= first["duration_ms"] < 900  # gave up after ~0.3 s, not after the 1 s answer
    assert second["status"] == 200 and second["error"] is None
    time.sleep(0.8)  # let the receiver's late answer finish before it is shut down


def test_timeout_covers_a_response_body_that_never_ends(conn: Redis, redis_url: str, queue: Queue) -> None:
    """The timeout bounds the whole exchange: a target that answers its headers at once and then
    trickles the body is a timed-out attempt, not a request that hangs the lane."""
    import socket

    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def trickle() -> None:
        try:
            conn_, _ = server.accept()
        except OSError:  # closed by the test before any request came (it failed earlier)
            return
        with conn_:
            conn_.recv(65536)
            conn_.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            while not stop.wait(0.1):
                try:
                    conn_.sendall(b"x")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        settings = make_engine_settings(redis_url, delivery_timeout_seconds=0.5, delivery_max_retries=0)
        due = fire_now(conn, queue, settings, [make_trigger(f"http://127.0.0.1:{port}/trickle")])
        started = time.monotonic()
        deliver(conn, settings)
        assert time.monotonic() - started < 5
        rec = record_of(conn, "ws:0", due)
        assert rec is not None and rec["outcome"] == "failed"
        (attempt,) = rec["attempts"]
        assert attempt["error"] == "timeout" and attempt["status"] is None
        assert 400 <= attempt["duration_ms"] < 2000
    finally:
        stop.set()
        server.close()
        thread.join(5)


@pytest.mark.parametrize(("excerpt", "body"), [(5, '{"ok"'), (0, None), (256, '{"ok":true}')])
def test_response_body_is_cut_to_the_excerpt_size(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver, excerpt: int, body: str | None
) -> None:
    settings = make_settings(redis_url, response_excerpt_bytes=excerpt)
    edits.replace(conn, "ws", [Trigger(cron="* * * * *", url=receiver.url + "/x", method="GET")], now=lambda: T - 30)
    tick_and_deliver(conn, settings, T + 0.2)
    [rec] = deliveries(client)
    assert rec["outcome"] == "delivered"
    assert rec["attempts"][0]["body"] == body


@contextmanager
def echo_server() -> Iterator[str]:
    """A target that answers every request with its request headers as a JSON object (as httpbin's
    /headers does); yields its base url."""

    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"headers": dict(self.headers.items())}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def every_value(conn: Redis) -> bytes:
    """Every key and value Redis holds (of any type, RQ's included), read as they are, joined."""
    parts: list[Any] = []
    for key in conn.keys("*"):
        kind = conn.type(key)
        if kind == b"string":
            value = conn.get(key)
            parts.append(value or b"")
        elif kind == b"hash":
            parts += [b for kv in conn.hgetall(key).items() for b in kv]
        elif kind == b"zset":
            parts += conn.zrange(key, 0, -1)
        elif kind == b"list":
            parts += conn.lrange(key, 0, -1)
        elif kind == b"set":
            parts += list(conn.smembers(key))
        parts.append(key)
    return b"\n".join(p if isinstance(p, bytes) else str(p).encode() for p in parts)


SECRET = "Bearer s3cr3t-t0ken-VALUE"
API_KEY = "k3y-0123456789"


def test_an_echoed_header_value_is_redacted_from_the_stored_excerpt(conn: Redis, redis_url: str) -> None:
    """A target that echoes its request puts the trigger's header values in its answer: the record
    shows `[redacted]` in their place, and (with SECRETS_KEY) the values are nowhere in Redis in plain
    text. A value under 4 characters is left as it is (it is no secret)."""
    key = Fernet.generate_key().decode()
    settings = make_settings(redis_url, secrets_key=key, response_excerpt_bytes=4096)
    headers = {"Authorization": SECRET, "X-Api-Key": API_KEY, "X-Flag": "yes"}
    with echo_server() as url:
        edits.replace(conn, WS, [make_trigger(url + "/echo", headers=headers)], now=lambda: T, cipher=HeaderCipher(key))
        tick_and_deliver(conn, settings, T + 1.2)
    with TestClient(create_app(settings)) as client:
        [rec] = deliveries(client, WS)
    assert rec["outcome"] == "delivered"
    echoed = json.loads(rec["attempts"][0]["body"])["headers"]
    assert echoed["Authorization"] == "[redacted]"
    assert echoed["X-Api-Key"] == "[redacted]"
    assert echoed["X-Flag"] == "yes"
    assert echoed["X-Scheduler-Workspace"] == WS  # the rest of the echo is intact
    stored = every_value(conn)
    for secret in (SECRET, API_KEY, "s3cr3t"):
        assert secret.encode() not in stored


@pytest.mark.parametrize(("kept", "shown"), [(16, "[redacted]"), (12, "Bea")])
def test_a_header_value_cut_off_by_the_excerpt_is_redacted_too(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver, kept: int, shown: str
) -> None:
    """The excerpt's byte limit can fall inside an echoed value: the part of it that was kept is
    redacted when it is 4 characters or more (`Bearer` cut to `Bear`...), like a whole value."""
    receiver.on("/cut", (200, 0, {}, b"token is " + SECRET.encode() + b" - end"))
    settings = make_settings(redis_url, response_excerpt_bytes=kept)
    edits.replace(conn, WS, [make_trigger(receiver.url + "/cut", headers={"Authorization": SECRET})], now=lambda: T)
    tick_and_deliver(conn, settings, T + 1.2)
    [rec] = deliveries(client, WS)
    assert rec["attempts"][0]["body"] == "token is " + shown


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("no headers", [], "no headers"),
        ("a=abcd b=abcd", ["abcd"], "a=[redacted] b=[redacted]"),
        ("case ABCD", ["abcd"], "case ABCD"),  # case-sensitive: the value as sent
        ("short abc", ["abc"], "short abc"),  # under 4 characters: not a secret, not redacted
        ("tail: s3cr", ["s3cr3t"], "tail: [redacted]"),  # cut off by the excerpt's end
        ("tail: s3c", ["s3cr3t"], "tail: s3c"),
        ("s3cr3t and s3cr", ["s3cr3t"], "[redacted] and [redacted]"),
        ("one two", ["one two", "two"], "[redacted]"),
    ],
)
def test_redact(text: str, values: list[str], expected: str) -> None:
    assert redact(text, values) == expected
