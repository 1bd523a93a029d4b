"""Redis credentials and TLS (issue #6): ``redis://user:pass@...`` works for the API, the scheduler
and the workers; a wrong password is a 503 from the API, never a leak of the password.

A TLS Redis is not available here (the bundled redis-server is built without TLS), so for
``rediss://`` only the client side is checked: the settings accept it and it builds SSL connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import Receiver, make_settings
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from scheduler_api.api import create_app
from scheduler_api.delivery import worker
from scheduler_api.embedded_redis import RedisServer
from scheduler_api.engine import tick as ticking
from scheduler_api.storage import connection, firings
from scheduler_api.storage import triggers as store
from scheduler_api.triggers import Trigger

PASSWORD = "s3cret-redis-Passw0rd"
USER, USER_PASSWORD = "scheduler", "user-s3cret-Passw0rd"
T = 1_800_000_000.0
WS = "ws"


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    server = RedisServer(password=PASSWORD).start()
    admin = Redis.from_url(server.url)
    # An ACL user with its own password, as a managed Redis would hand out.
    admin.acl_setuser(
        USER, enabled=True, passwords=[f"+{USER_PASSWORD}"], keys=["*"], channels=["*"], commands=["+@all"]
    )
    admin.close()
    yield server
    server.stop()


@pytest.fixture
def admin(locked_redis: RedisServer) -> Iterator[Redis]:
    client = Redis.from_url(locked_redis.url)
    client.flushall()
    yield client
    client.close()


def urls(server: RedisServer) -> dict[str, str]:
    return {
        "password": f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0",
        "acl-user": f"redis://{USER}:{USER_PASSWORD}@127.0.0.1:{server.port}/0",
    }


pytestmark = pytest.mark.usefixtures("no_rq_command_channel")  # conftest


@pytest.mark.parametrize("kind", ["password", "acl-user"])
def test_api_scheduler_and_worker_with_credentials(
    locked_redis: RedisServer, admin: Redis, receiver: Receiver, kind: str
) -> None:
    url = urls(locked_redis)[kind]
    settings = make_settings(url)
    trigger = {"cron": "*/5 * * * *", "url": receiver.url + "/api-made", "method": "GET"}
    with TestClient(create_app(settings)) as c:
        assert c.get("/ready").status_code == 200
        r = c.post(f"/api/workspaces/{WS}/triggers", json={"triggers": [trigger]})
        assert r.status_code == 200, r.text
        assert c.get(f"/api/workspaces/{WS}/triggers").json()["count"] == 1
    assert admin.hlen(f"sa:ws:{WS}") == 1  # really written to the password-protected server

    conn = connection.connect(url, timeout=5)
    try:
        store.replace(conn, WS, [Trigger(cron="* * * * * *", url=receiver.url + "/hook", method="GET")], now=lambda: T)
        queue = Queue(settings.queue_name, connection=conn)
        assert ticking.tick(conn, queue, settings, now=T + 1.2).fired == 1
        worker.run_worker(settings, conn, burst=True)
    finally:
        conn.close()
    assert [r.path for r in receiver.requests] == ["/hook"]
    rec = firings.get_record(admin, f"{WS}:0@2027-01-15T08:00:01Z")
    assert rec is not None and rec["outcome"] == "delivered"


@pytest.mark.parametrize(
    "bad",
    [
        "redis://:wrong-password-123@127.0.0.1:{port}/0",
        "redis://127.0.0.1:{port}/0",  # no password at all
        "redis://" + USER + ":wrong-password-123@127.0.0.1:{port}/0",
        "redis://nobody:" + PASSWORD + "@127.0.0.1:{port}/0",
    ],
)
def test_wrong_credentials_answer_503(locked_redis: RedisServer, admin: Redis, bad: str) -> None:
    settings = make_settings(bad.format(port=locked_redis.port), redis_timeout_seconds=1)
    trigger = {"cron": "*/5 * * * *", "url": "https://example.com/", "method": "GET"}
    with TestClient(create_app(settings)) as c:
        responses: list[Any] = [
            c.post(f"/api/workspaces/{WS}/triggers", json={"triggers": [trigger]}),
            c.get(f"/api/workspaces/{WS}/triggers"),
            c.delete(f"/api/workspaces/{WS}/triggers"),
            c.get("/ready"),
        ]
        for r in responses:
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["success"] is False and "Redis" in body["error"]
            assert "wrong-password" not in r.text and PASSWORD not in r.text
        assert c.get("/health").status_code == 200
    assert admin.exists(f"sa:ws:{WS}") == 0


def test_rediss_url_is_accepted_and_uses_tls() -> None:
    url = "rediss://user:pw@cache.example.com:6380/0"
    settings = make_settings(url)
    assert settings.redis_url == url
    client = connection.connect(url, timeout=1)
    try:
        assert client.connection_pool.connection_class is redis.SSLConnection
        assert client.connection_pool.connection_kwargs["username"] == "user"
        assert client.connection_pool.connection_kwargs["password"] == "pw"
    finally:
        client.close()
    plain = connection.connect("redis://127.0.0.1:6390/0")
    try:
        assert plain.connection_pool.connection_class is redis.Connection
    finally:
        plain.close()
    create_app(settings)  # builds without connecting (Redis is opened in the lifespan)
