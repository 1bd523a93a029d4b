"""`scheduler_api.api.errors`: every error in one shape (``success``, ``error``, ``details``): malformed
JSON, unknown routes and methods (405 with ``Allow``), and Redis unreachable, refusing writes or not
answering (503, saying which).
"""

from __future__ import annotations

import signal
import time
from typing import Any

from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.api import create_app
from scheduler_api.embedded_redis import RedisServer, free_port
from tests.support.assertions import assert_error
from tests.support.factories import README_TRIGGERS, SECRET, make_settings, trigger_body, triggers_url
from tests.support.redis_state import workspace_state


def test_malformed_json(client: TestClient, conn: Redis) -> None:
    client.post(triggers_url("ws"), json={"triggers": [trigger_body(1)]})
    before = workspace_state(conn, "ws")
    for raw in (b'{"triggers": [', b"{bad json}", b"", b"\xff\xfe"):
        r = client.post(triggers_url("ws"), content=raw, headers={"Content-Type": "application/json"})
        body = assert_error(r, 400)
        assert body["details"] and body["details"][0]["path"] == "body"
    r = client.post(triggers_url("ws"), content=b'{"triggers": [', headers={"Content-Type": "application/json"})
    assert r.json()["error"] == "Malformed JSON body"
    assert workspace_state(conn, "ws") == before


def test_unknown_routes_and_wrong_methods(client: TestClient) -> None:
    body = assert_error(client.get("/nope"), 404)
    assert body["error"] == "Not Found"
    assert_error(client.get("/api/workspaces/ws"), 404)
    assert_error(client.post("/api/workspaces/ws/trigger", json={"triggers": []}), 404)
    body = assert_error(client.put(triggers_url("ws"), json={"triggers": []}), 405)
    assert body["error"] == "Method Not Allowed"
    assert_error(client.patch(triggers_url("ws"), json={"triggers": []}), 405)
    assert_error(client.post("/health"), 405)


def test_redis_unreachable_answers_503(redis_url: str) -> None:
    dead = make_settings(f"redis://127.0.0.1:{free_port()}/0", redis_timeout_seconds=0.5)
    with TestClient(create_app(dead)) as c:
        started = time.monotonic()
        for method in ("POST", "GET", "DELETE"):
            kwargs: dict[str, Any] = {"json": {"triggers": README_TRIGGERS}} if method == "POST" else {}
            r = c.request(method, triggers_url("ws"), **kwargs)
            body = assert_error(r, 503)
            assert "Redis" in body["error"] and "unavailable" in body["error"]
            assert SECRET not in r.text
        assert time.monotonic() - started < 5
        assert c.get("/health").status_code == 200
        assert c.get("/health").json()["status"] == "ok"
        assert_error(c.get("/ready"), 503)
        # Validation still comes first: an invalid request is a 400, not a 503.
        assert_error(c.post(triggers_url("ws"), json={"triggers": [trigger_body(0, cron="nope")]}), 400)


def test_redis_refusing_writes_or_not_answering_is_a_503_that_says_which(tmp_path: Any) -> None:
    with RedisServer() as server:
        settings = make_settings(server.url, redis_timeout_seconds=0.5)
        admin = Redis.from_url(server.url)
        with TestClient(create_app(settings)) as c:
            assert c.post(triggers_url("ws"), json={"triggers": [trigger_body(0)]}).status_code == 200
            admin.config_set("maxmemory", 1)  # full: Redis answers OOM to writes
            r = c.post("/api/workspaces/ws/pause")
            assert "refusing writes" in assert_error(r, 503)["error"]
            assert "nothing was changed" in r.json()["error"]
            admin.config_set("maxmemory", 0)
            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)  # alive but silent: the command may be applied later
            try:
                r = c.post(triggers_url("ws"), json={"triggers": [trigger_body(1)]})
                assert "may or may not have been made" in assert_error(r, 503)["error"]
            finally:
                server.process.send_signal(signal.SIGCONT)
        admin.close()


def test_405_lists_every_method_of_the_path(client: TestClient) -> None:
    """Starlette named only the first route's method (POST) although GET and DELETE exist too."""
    for method in ("PUT", "PATCH", "OPTIONS"):
        r = client.request(method, "/api/workspaces/ws/triggers")
        assert r.status_code == 405
        assert r.headers["allow"] == "DELETE, GET, POST"
        assert r.json() == {"success": False, "error": "Method Not Allowed", "details": []}
    assert client.post("/health").headers["allow"] == "GET"
