"""`scheduler-api serve` and `uvicorn scheduler_api.main:app` as real processes: over HTTP, draining on
SIGTERM, and refusing to start with bad settings or without API keys in production.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from scheduler_api.embedded_redis import free_port
from scheduler_api.storage import edits
from scheduler_api.storage import triggers as store
from scheduler_api.triggers import Trigger
from tests.support.processes import Child, clean_env, port_answers, unstartable_env

SECRET = "Bearer cli-Secret-Token-789"


@pytest.mark.slow
def test_serve_drains_a_request_in_flight_on_sigterm(
    tmp_path: Path, redis_url: str, conn: Redis, spawned: list[Child]
) -> None:
    """SIGTERM while a request is half received: the API stops accepting, finishes that request
    (its answer is complete and its replace is applied), then exits 0."""
    port = free_port()
    env = clean_env(ALLOW_PRIVATE_TARGETS="true", PORT=str(port), HOST="127.0.0.1", REDIS_URL=redis_url)
    server = Child([sys.executable, "-m", "scheduler_api.cli", "serve"], env=env, cwd=tmp_path, log=tmp_path / "log")
    spawned.append(server)
    server.wait_http(f"http://127.0.0.1:{port}/health", timeout=20)
    body = b'{"triggers": [{"cron": "0 * * * *", "url": "https://example.com/drain", "method": "POST"}]}'
    head = (
        f"POST /api/workspaces/drain/triggers HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body[:20])
        time.sleep(0.3)
        server.popen.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.popen.poll() is None, "the server quit with a request in flight"
        sock.sendall(body[20:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", answer
    assert b'"added":1' in rest.replace(b" ", b"")
    assert [t.url for t in store.list_triggers(conn, "drain")] == ["https://example.com/drain"]
    assert server.wait(15) == 0


@pytest.mark.slow
def test_serve_over_http_and_sigterm(tmp_path: Path, redis_url: str, conn: Redis, spawned: list[Child]) -> None:
    port = free_port()
    env = clean_env(
        ALLOW_PRIVATE_TARGETS="true", PORT=str(port), HOST="127.0.0.1", REDIS_URL=redis_url, MAX_BODY_BYTES="4096"
    )
    server = Child([sys.executable, "-m", "scheduler_api.cli", "serve"], env=env, cwd=tmp_path, log=tmp_path / "log")
    spawned.append(server)
    base = f"http://127.0.0.1:{port}"
    health = server.wait_http(f"{base}/health", timeout=20).json()
    assert health["status"] == "ok" and health["timestamp"].endswith("Z")

    trigger: dict[str, Any] = {
        "cron": "0 9 * * 1-5",
        "url": "https://api.example.com/report",
        "method": "get",
        "headers": {"X-API-Key": SECRET},
    }
    with httpx.Client(base_url=base, timeout=10) as http:
        r = http.post("/api/workspaces/workspace-123/triggers", json={"triggers": [trigger]})
        assert r.status_code == 200
        assert r.json() == {
            "success": True,
            "workspace_id": "workspace-123",
            "removed": 0,
            "added": 1,
            "jobs": [
                {
                    "jobId": "workspace-123:0",
                    "jobName": "workspace-123-trigger-0",
                    "cron": "0 9 * * 1-5",
                    "url": "https://api.example.com/report",
                    "method": "GET",
                    "id": "0",
                    "state": "active",
                }
            ],
        }
        r = http.get("/api/workspaces/workspace-123/triggers")
        assert r.status_code == 200
        assert r.json()["count"] == 1 and r.json()["jobs"][0]["jobId"] == "workspace-123:0"
        assert SECRET not in r.text
        assert conn.hlen("sa:ws:workspace-123") == 1
        # HEAD, as Express answers it on every GET route: the GET's headers, no body.
        head = http.head("/api/workspaces/workspace-123/triggers")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(r.content)
        assert http.head("/health").status_code == 200

        # Invalid input over real HTTP: same error shape.
        r = http.post("/api/workspaces/workspace-123/triggers", json={"triggers": [{**trigger, "cron": "H * * * *"}]})
        assert r.status_code == 400
        assert r.json()["details"][0]["path"] == "triggers[0].cron"
        r = http.post(
            "/api/workspaces/workspace-123/triggers", content=b"{oops", headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["success"] is False

        # A chunked body over MAX_BODY_BYTES (no Content-Length) is a 413.
        def chunks() -> Iterator[bytes]:
            yield b'{"triggers": [{"cron": "@hourly", "url": "https://x.example/", "method": "POST", "payload": {"p": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"}}]}'

        r = http.post(
            "/api/workspaces/workspace-123/triggers", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413
        assert r.json()["error"] == "Request body too large"

        r = http.delete("/api/workspaces/workspace-123/triggers")
        assert r.status_code == 200
        assert r.json() == {"success": True, "workspace_id": "workspace-123", "removed": 1}

    # A declared Content-Length over the limit is refused without the body being sent.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            b"POST /api/workspaces/ws/triggers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n"
        )
        head = s.recv(65536).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413")

    server.popen.send_signal(signal.SIGTERM)
    assert server.wait(10) == 0
    assert not port_answers(port)
    assert "Traceback" not in server.output()


@pytest.mark.slow
def test_uvicorn_main_app(tmp_path: Path, redis_url: str, conn: Redis, spawned: list[Child]) -> None:
    edits.replace(conn, "ws", [Trigger(cron="@hourly", url="https://x.example/hook", method="POST")])
    port = free_port()
    server = Child(
        [sys.executable, "-m", "uvicorn", "scheduler_api.main:app", "--port", str(port)],
        env=clean_env(ALLOW_PRIVATE_TARGETS="true", REDIS_URL=redis_url),
        cwd=tmp_path,
        log=tmp_path / "log",
    )
    spawned.append(server)
    base = f"http://127.0.0.1:{port}"
    assert server.wait_http(f"{base}/health", timeout=20).json()["status"] == "ok"
    r = httpx.get(f"{base}/api/workspaces/ws/triggers", timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 1
    assert body["jobs"][0]["jobId"] == "ws:0" and body["jobs"][0]["url"] == "https://x.example/hook"
    assert httpx.get(f"{base}/ready", timeout=10).status_code == 200
    server.popen.send_signal(signal.SIGTERM)
    # uvicorn's own CLI ends "killed by SIGTERM" after its graceful shutdown (it re-raises the signal).
    assert server.wait(10) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.output()


ADMIN = "admin-key-0123456789_abc"  # every workspace


@pytest.mark.slow
def test_serve_in_production_without_keys_exits_naming_api_keys(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scheduler_api.cli", "serve"],
        env=unstartable_env(APP_ENV="production"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "API_KEYS" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Uvicorn running" not in result.stderr + result.stdout


def test_serve_with_an_invalid_key_exits_without_echoing_it(tmp_path: Path) -> None:
    bad = "sh0rt-secret-k"
    result = subprocess.run(
        [sys.executable, "-m", "scheduler_api.cli", "serve"],
        env=unstartable_env(API_KEYS=f"{ADMIN},{bad}"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "API_KEYS" in result.stderr and "entry 2" in result.stderr
    assert bad not in result.stderr + result.stdout and ADMIN not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "abc"), ("APP_ENV", "staging"), ("WORKER_CONCURRENCY", "0")],
)
def test_serve_refuses_to_start_with_a_bad_value(tmp_path: Path, name: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scheduler_api.cli", "serve"],
        env=unstartable_env(**{name: value}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert name in result.stderr
    assert "Traceback" not in result.stderr
    assert "Uvicorn running" not in result.stderr + result.stdout


def test_serve_refuses_a_bad_value_from_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("APP_ENV=staging\n", encoding="utf-8")
    env = unstartable_env()
    result = subprocess.run(
        [sys.executable, "-m", "scheduler_api.cli", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "APP_ENV" in result.stderr and "staging" in result.stderr
