"""Trigger edits against real processes: a `scheduler-api serve` (uvicorn) taking concurrent PATCHes,
and a real scheduler and worker firing a seconds cron while its workspace is replaced."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from redis import Redis

from scheduler_api.embedded_redis import free_port
from tests.support.factories import numbered_trigger
from tests.support.processes import Child, Procs, clean_env, scheduled_second, start_scheduler, start_worker
from tests.support.receiver import Receiver

WS = "edits"
LIST = f"/api/workspaces/{WS}/triggers"


@pytest.fixture
def api(tmp_path: Path, redis_url: str, conn: Redis, spawned: list[Child]) -> Iterator[httpx.Client]:
    port = free_port()
    env = clean_env(ALLOW_PRIVATE_TARGETS="true", PORT=str(port), HOST="127.0.0.1", REDIS_URL=redis_url)
    server = Child([sys.executable, "-m", "scheduler_api.cli", "serve"], env=env, cwd=tmp_path, log=tmp_path / "serve")
    spawned.append(server)
    server.wait_http(f"http://127.0.0.1:{port}/health", timeout=20)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client


def test_concurrent_patches_of_different_triggers_all_land(api: httpx.Client) -> None:
    assert api.post(LIST, json={"triggers": [numbered_trigger(n) for n in range(20)]}).status_code == 200

    def patch(n: int) -> int:
        return api.patch(f"{LIST}/t{n}", json={"url": f"https://patched.example.com/{n}"}).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(patch, range(20)))
    assert statuses == [200] * 20
    jobs = api.get(LIST).json()["jobs"]
    assert [j["url"] for j in jobs] == [f"https://patched.example.com/{n}" for n in range(20)]


def test_concurrent_patches_with_one_if_match_let_exactly_one_through(api: httpx.Client) -> None:
    etag = api.post(LIST, json={"triggers": [numbered_trigger(n) for n in range(20)]}).headers["etag"]

    def patch(n: int) -> int:
        r = api.patch(f"{LIST}/t{n}", json={"method": "POST"}, headers={"If-Match": etag})
        return r.status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = Counter(pool.map(patch, range(20)))
    assert statuses == {200: 1, 412: 19}
    assert sum(j["method"] == "POST" for j in api.get(LIST).json()["jobs"]) == 1


def test_an_unchanged_trigger_neither_fires_twice_nor_skips_across_replaces(
    procs: Procs, conn: Redis, receiver: Receiver, api: httpx.Client
) -> None:
    """A replace that keeps a seconds trigger as it is leaves its schedule entry alone: through a real
    scheduler and worker, every second is delivered once while the list is replaced around it."""
    kept = {"id": "kept", "cron": "* * * * * *", "url": receiver.url + "/kept", "method": "POST"}
    assert api.post(LIST, json={"triggers": [kept]}).status_code == 200
    start_scheduler(procs, conn)
    start_worker(procs, conn)
    deadline = time.monotonic() + 20
    while not receiver.to("/kept") and time.monotonic() < deadline:
        time.sleep(0.05)
    start = time.time()
    for n in range(12):  # others come and go, in front of it and behind it
        others = [numbered_trigger(i) for i in range(n % 3)]
        triggers = [*others, kept] if n % 2 else [kept, *others]
        assert api.post(LIST, json={"triggers": triggers}).status_code == 200
        time.sleep(0.25)
    end = time.time()
    time.sleep(1.5)  # let the last seconds arrive
    seconds = Counter(scheduled_second(r) for r in receiver.to("/kept"))
    window = range(int(start) + 1, int(end))
    assert len(window) >= 2
    assert [s for s in window if seconds[s] != 1] == [], {s: seconds[s] for s in window}


def test_concurrent_patches_of_one_trigger_merge_into_what_is_stored(api: httpx.Client) -> None:
    """Each PATCH merges into the trigger as stored when its change is written: none is lost."""
    assert api.post(LIST, json={"triggers": [numbered_trigger(0)]}).status_code == 200

    def patch(n: int) -> int:
        return api.patch(f"{LIST}/t0", json={"headers": {f"X-Header-{n}": f"value-{n}"}}).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(patch, range(10)))
    assert statuses == [200] * 10
    (job,) = api.get(LIST).json()["jobs"]
    assert job["header_names"] == sorted(f"X-Header-{n}" for n in range(10))
