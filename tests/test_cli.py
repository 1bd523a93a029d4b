"""The real processes: `scheduler-api serve`, `uvicorn scheduler_api.main:app` and `scheduler-api dev`."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from redis import Redis

from scheduler_api.embedded_redis import answers, free_port
from scheduler_api.settings import Settings
from scheduler_api.storage import triggers as store
from scheduler_api.triggers import Trigger

SETTING_NAMES = {name.upper() for name in Settings.model_fields}
SECRET = "Bearer cli-Secret-Token-789"


def clean_env(**values: str) -> dict[str, str]:
    """The test's environment without any of the service's settings (nor HOST), plus `values`."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES and k.upper() != "HOST"}
    env["ALLOW_PRIVATE_TARGETS"] = "true"  # triggers point at 127.0.0.1
    env.update(values)
    return env


class Proc:
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


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Every process a test starts goes here; whatever is left is killed at the end."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.close()


# --- scheduler-api serve ---------------------------------------------------------------------------


def test_serve_drains_a_request_in_flight_on_sigterm(
    tmp_path: Path, redis_url: str, conn: Redis, procs: list[Proc]
) -> None:
    """SIGTERM while a request is half received: the API stops accepting, finishes that request
    (its answer is complete and its replace is applied), then exits 0."""
    port = free_port()
    env = clean_env(PORT=str(port), HOST="127.0.0.1", REDIS_URL=redis_url)
    server = Proc([sys.executable, "-m", "scheduler_api.cli", "serve"], env=env, cwd=tmp_path, log=tmp_path / "log")
    procs.append(server)
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


def test_serve_over_http_and_sigterm(tmp_path: Path, redis_url: str, conn: Redis, procs: list[Proc]) -> None:
    port = free_port()
    env = clean_env(PORT=str(port), HOST="127.0.0.1", REDIS_URL=redis_url, MAX_BODY_BYTES="4096")
    server = Proc([sys.executable, "-m", "scheduler_api.cli", "serve"], env=env, cwd=tmp_path, log=tmp_path / "log")
    procs.append(server)
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


def test_uvicorn_main_app(tmp_path: Path, redis_url: str, conn: Redis, procs: list[Proc]) -> None:
    store.replace(conn, "ws", [Trigger(cron="@hourly", url="https://x.example/hook", method="POST")])
    port = free_port()
    server = Proc(
        [sys.executable, "-m", "uvicorn", "scheduler_api.main:app", "--port", str(port)],
        env=clean_env(REDIS_URL=redis_url),
        cwd=tmp_path,
        log=tmp_path / "log",
    )
    procs.append(server)
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


# --- scheduler-api dev ---------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find child processes")
def test_dev_from_a_clean_directory(tmp_path: Path, procs: list[Proc]) -> None:
    port = free_port()
    env = clean_env(PORT=str(port))
    assert "REDIS_URL" not in env
    base = f"http://127.0.0.1:{port}"
    trigger = {"cron": "0 0 1 1 *", "url": "http://127.0.0.1:9/never", "method": "POST", "payload": {"a": 1}}
    seen_children: dict[int, str] = {}

    def run_once(n: int) -> tuple[Proc, str]:
        dev = Proc(
            [sys.executable, "-m", "scheduler_api.cli", "dev", "--embedded-redis"],
            env=env,
            cwd=tmp_path,
            log=tmp_path / f"dev{n}.log",
            new_group=True,
        )
        procs.append(dev)
        dev.wait_http(f"{base}/health", timeout=30)
        out = dev.output()
        assert f"API on {base}" in out, out
        assert f"docs on {base}/docs" in out, out
        match = re.search(r"started redis-server on (redis://127\.0\.0\.1:(\d+)/0)", out)
        assert match, out
        children = descendants(dev.pid)
        seen_children.update(children)
        assert any("redis-server" in c for c in children.values()), children
        roles = {c.split()[-1] for c in children.values() if "scheduler_api.cli" in c}
        assert {"serve", "scheduler", "worker"} <= roles, children
        return dev, match.group(1)

    def interrupt(dev: Proc, redis_url: str, *, whole_group: bool) -> None:
        children = descendants(dev.pid)
        if whole_group:
            os.killpg(dev.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        else:
            dev.popen.send_signal(signal.SIGINT)  # `kill -INT <pid>`: dev alone has to stop its children
        assert dev.wait(20) == 0, dev.output()
        assert "scheduler-api dev: stopped" in dev.output()
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [cmd for pid, cmd in children.items() if alive(pid)]
        assert not answers(redis_url)
        assert not port_answers(port)

    try:
        dev, redis_url = run_once(1)
        assert (tmp_path / ".scheduler-api" / "redis").is_dir()
        with httpx.Client(base_url=base, timeout=10) as http:
            r = http.post("/api/workspaces/dev-ws/triggers", json={"triggers": [trigger]})
            assert r.status_code == 200 and r.json()["added"] == 1
        interrupt(dev, redis_url, whole_group=True)

        dev, redis_url = run_once(2)
        r = httpx.get(f"{base}/api/workspaces/dev-ws/triggers", timeout=10)
        assert r.status_code == 200
        body = r.json()
        assert body["count"] == 1
        assert body["jobs"][0]["url"] == trigger["url"] and body["jobs"][0]["method"] == "POST"
        interrupt(dev, redis_url, whole_group=False)
    finally:
        for p in procs:
            if p.popen.poll() is None:
                seen_children.update(descendants(p.pid))
            p.close()
        for pid in seen_children:  # the redis-server runs in a session of its own
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
