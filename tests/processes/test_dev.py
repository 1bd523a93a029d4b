"""`scheduler-api dev` as a real process: from a clean directory, with its own redis-server, stopped by
Ctrl-C (the whole group) or by a signal to dev alone.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from scheduler_api.embedded_redis import answers, free_port
from tests.support.processes import Child, alive, clean_env, descendants, port_answers


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find child processes")
def test_dev_from_a_clean_directory(tmp_path: Path, spawned: list[Child]) -> None:
    port = free_port()
    env = clean_env(ALLOW_PRIVATE_TARGETS="true", PORT=str(port))
    assert "REDIS_URL" not in env
    base = f"http://127.0.0.1:{port}"
    trigger = {"cron": "0 0 1 1 *", "url": "http://127.0.0.1:9/never", "method": "POST", "payload": {"a": 1}}
    seen_children: dict[int, str] = {}

    def run_once(n: int) -> tuple[Child, str]:
        dev = Child(
            [sys.executable, "-m", "scheduler_api.cli", "dev", "--embedded-redis"],
            env=env,
            cwd=tmp_path,
            log=tmp_path / f"dev{n}.log",
            new_group=True,
        )
        spawned.append(dev)
        dev.wait_http(f"{base}/health", timeout=30)
        out = dev.output()
        assert f"API on {base}" in out, out
        assert f"docs on {base}/docs" in out, out
        assert f"dashboard on {base}/ui" in out, out
        match = re.search(r"started redis-server on (redis://127\.0\.0\.1:(\d+)/0)", out)
        assert match, out
        children = descendants(dev.pid)
        seen_children.update(children)
        assert any("redis-server" in c for c in children.values()), children
        roles = {c.split()[-1] for c in children.values() if "scheduler_api.cli" in c}
        assert {"serve", "scheduler", "worker"} <= roles, children
        return dev, match.group(1)

    def interrupt(dev: Child, redis_url: str, *, whole_group: bool) -> None:
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
        for p in spawned:
            if p.popen.poll() is None:
                seen_children.update(descendants(p.pid))
            p.close()
        for pid in seen_children:  # the redis-server runs in a session of its own
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
