"""`scheduler_api.storage.connection`: the Redis URL forms (Sentinel included), what is refused at
startup, credentials, and what an unreachable Redis means for the API (a real Sentinel set:
tests/processes/test_sentinel.py).

A TLS Redis is not available here (the bundled redis-server is built without TLS), so for
``rediss://`` only the client side is checked: the settings accept it and it builds SSL connections.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import ValidationError
from redis import Redis
from rq import Queue

from scheduler_api.api import create_app
from scheduler_api.delivery import worker
from scheduler_api.embedded_redis import RedisServer, free_port
from scheduler_api.engine import tick as ticking
from scheduler_api.storage import connection, edits, firings
from scheduler_api.triggers import Trigger
from tests.support.clock import T
from tests.support.factories import WS, make_settings
from tests.support.receiver import Receiver

SERVICE = "svc"


TRIGGERS = "/api/workspaces/ws/triggers"


def test_sentinel_url_lists_sentinels_service_and_database() -> None:
    target = connection.parse_sentinel_url("redis+sentinel://s1,s2:26380,[::1]:26381/mymaster/2")
    assert target.sentinels == (("s1", 26379), ("s2", 26380), ("::1", 26381))
    assert target.service_name == "mymaster"
    assert target.primary_kwargs == {"db": 2}
    assert target.sentinel_kwargs == {}


def test_sentinel_url_credentials_of_the_primary_and_of_the_sentinels() -> None:
    target = connection.parse_sentinel_url(
        "rediss+sentinel://app:p%40ss@h:26379/mymaster?sentinel_username=sen&sentinel_password=s%26p"
        "&ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem"
    )
    assert target.primary_kwargs == {
        "db": 0,
        "username": "app",
        "password": "p@ss",
        "ssl": True,  # rediss+: the Sentinel pool makes TLS connections to the primary
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": "/etc/ca.pem",
    }
    assert target.sentinel_kwargs == {"username": "sen", "password": "s&p"}


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://h:26379", "service name"),
        ("redis+sentinel://h:26379/", "service name"),
        ("redis+sentinel://h/svc/0/extra", "/service or /service/db"),
        ("redis+sentinel://h/svc/zero", "must be a number"),
        ("redis+sentinel://h:notaport/svc", "bad port"),
        ("redis+sentinel://h:0/svc", "bad port"),
        ("redis+sentinel://h1,,h2/svc", "comma-separated"),
        ("redis+sentinel://:pw@/svc", "comma-separated"),
        ("sentinel://h/svc", "redis+sentinel://"),
        ("http://h:6379/0", "redis://"),
        ("localhost:6379", "redis://"),
    ],
)
def test_malformed_redis_urls_stop_the_service_at_startup(url: str, problem: str) -> None:
    with pytest.raises(ValidationError) as e:
        make_settings(url.replace("pw", "hunter2"))
    message = str(e.value)
    assert "redis_url" in message and problem in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://u:p@h:6380/1",
        "unix:///run/redis.sock?db=2",
        "redis+sentinel://a:26379,b:26379/mymaster/0",
        "rediss+sentinel://:p@a/mymaster",
    ],
)
def test_every_supported_url_form_is_accepted(url: str) -> None:
    assert make_settings(url).redis_url == url


def test_the_urls_own_options_win_over_the_callers() -> None:
    client = connection.connect("redis+sentinel://h1,h2/svc/3?socket_timeout=5&health_check_interval=7", timeout=2)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"], kwargs["db"]) == (5.0, 2, 3)
    assert kwargs["health_check_interval"] == 7


def test_unreachable_sentinels_are_a_503_not_a_hang() -> None:
    settings = make_settings(f"redis+sentinel://127.0.0.1:{free_port()}/{SERVICE}", redis_timeout_seconds=0.5)
    with TestClient(create_app(settings)) as c:
        started = time.monotonic()
        r = c.get(TRIGGERS)
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["success"] is False and "Redis" in body["error"]
        assert c.get("/ready").status_code == 503
        assert c.get("/health").status_code == 200
        assert time.monotonic() - started < 5


PASSWORD = "s3cret-redis-Passw0rd"


USER, USER_PASSWORD = "scheduler", "user-s3cret-Passw0rd"


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
        edits.replace(conn, WS, [Trigger(cron="* * * * * *", url=receiver.url + "/hook", method="GET")], now=lambda: T)
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
