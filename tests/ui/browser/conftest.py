"""The browser tests' fixtures: one real `serve` + scheduler + worker set and one Chromium per module.

Every test here is marked `browser` (tests/ui/browser/test_*.py set `pytestmark`). Without a
Chromium (or Playwright) they are skipped, unless ``REQUIRE_BROWSER=1`` (set by .ci/run): then each
skip is turned into a failure, so CI never passes without having run them.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis import Redis

from scheduler_api.embedded_redis import RedisServer, free_port
from scheduler_api.storage.connection import connect
from tests.support.browser import chromium_path
from tests.support.processes import Procs, start_scheduler, start_worker, wait_until
from tests.support.receiver import Receiver, serve_receiver
from tests.support.ui import ADMIN_KEY, KEYS, UI_SECRET


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("browser") and os.environ.get("REQUIRE_BROWSER") == "1":
        report.outcome = "failed"
        report.longrepr = f"REQUIRE_BROWSER=1 and this browser test was skipped: {report.longrepr}"


@dataclass
class Stack:
    """The running service: its base url, the admin's API client, the receiver, the processes."""

    base: str
    api: httpx.Client
    receiver: Receiver
    procs: Procs
    conn: Redis


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    conn = connect(redis_server.url, timeout=5)
    conn.flushall()
    port = free_port()
    procs = Procs(tmp_path_factory.mktemp("browser"), redis_server.url)
    env = {"API_KEYS": KEYS, "UI_SECRET": UI_SECRET, "HOST": "127.0.0.1", "PORT": str(port)}
    try:
        with serve_receiver() as receiver:
            procs.start("serve", **env)
            start_scheduler(procs, conn, **env)
            start_worker(procs, conn, **env)
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10) as api:
                _wait_http(api, procs)
                yield Stack(base, api, receiver, procs, conn)
    finally:
        procs.stop_all()
        conn.close()


def _wait_http(api: httpx.Client, procs: Procs) -> None:
    def up() -> bool:
        try:
            return api.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 20, "serve to answer", procs)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        pytest.skip(
            "no Chromium at /usr/bin/chromium (apt-get install chromium) or PLAYWRIGHT_CHROMIUM_EXECUTABLE_PATH"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()
