"""Quotas held across API replicas: two real `scheduler-api serve` processes sharing one Redis."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from redis import Redis

from scheduler_api.embedded_redis import free_port
from tests.support.factories import numbered_trigger
from tests.support.processes import Child, clean_env

TEAM = "team-key-0123456789-abcd"
AUTH = {"Authorization": f"Bearer {TEAM}"}


@pytest.fixture
def apis(tmp_path: Path, redis_url: str, conn: Redis, spawned: list[Child]) -> Iterator[list[httpx.Client]]:
    clients = []
    for n in range(2):
        port = free_port()
        env = clean_env(
            PORT=str(port),
            HOST="127.0.0.1",
            REDIS_URL=redis_url,
            API_KEYS=f"{TEAM}:team-*",
            WRITES_PER_MINUTE="4",
            RUN_NOW_PER_MINUTE="3",
            MAX_WORKSPACES_PER_SCOPE="3",
        )
        server = Child(
            [sys.executable, "-m", "scheduler_api.cli", "serve"], env=env, cwd=tmp_path, log=tmp_path / f"serve{n}"
        )
        spawned.append(server)
        server.wait_http(f"http://127.0.0.1:{port}/health", timeout=20)
        clients.append(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=AUTH))
    yield clients
    for c in clients:
        c.close()


def test_per_workspace_rates_hold_across_two_api_processes(apis: list[httpx.Client]) -> None:
    one, two = apis
    url = "/api/workspaces/team-a/triggers"
    statuses = [(one if n % 2 else two).put(f"{url}/t{n}", json=numbered_trigger(n)).status_code for n in range(6)]
    assert statuses == [201, 201, 201, 201, 429, 429]  # 4 a minute in all, not 4 per process
    refused = one.put(f"{url}/t9", json=numbered_trigger(9))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["details"][0]["message"].startswith("WRITES_PER_MINUTE: at most 4 write calls")
    assert two.get(url).json()["count"] == 4
    runs = [(one if n % 2 else two).post(f"{url}/t0/run").status_code for n in range(5)]
    assert runs == [202, 202, 202, 429, 429]


def test_concurrent_creates_on_two_processes_never_exceed_the_workspace_quota(apis: list[httpx.Client]) -> None:
    def create(n: int) -> int:
        return (
            apis[n % 2].post(f"/api/workspaces/team-{n}/triggers", json={"triggers": [numbered_trigger(n)]}).status_code
        )

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(create, range(12)))
    assert sorted(statuses) == [200] * 3 + [403] * 9
    held = [n for n in range(12) if apis[0].get(f"/api/workspaces/team-{n}/triggers").json()["count"] == 1]
    assert len(held) == 3
