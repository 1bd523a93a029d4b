"""Redis URLs and Sentinel (scheduler_api.storage.connection): the URL forms, what is refused at startup,
and a real Sentinel set (a primary, a replica and a sentinel, as processes on free ports) whose
primary is killed under the API and under a running scheduler and worker."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Receiver, make_settings
from fastapi.testclient import TestClient
from processes import Procs, header, scheduled_second, snapshot, start_scheduler, start_worker, wait_until
from pydantic import ValidationError
from redis import Redis

from scheduler_api.api import create_app
from scheduler_api.embedded_redis import RedisServer, find_binary, free_port
from scheduler_api.storage import connection
from scheduler_api.storage import triggers as store
from scheduler_api.triggers import Trigger

SERVICE = "svc"
TRIGGERS = "/api/workspaces/ws/triggers"


# --- the URL forms ------------------------------------------------------------------------------


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


# --- a real Sentinel set --------------------------------------------------------------------------


class SentinelSet:
    """A primary, one replica and one sentinel (quorum 1, down after 1 s), each a real process."""

    REPLICATION = ("--repl-diskless-sync-delay", "0")

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        # Their own directories: a replica writes the primary's snapshot to its working directory.
        (tmp / "primary").mkdir()
        (tmp / "replica").mkdir()
        self.primary = RedisServer(extra_args=(*self.REPLICATION, "--dir", str(tmp / "primary"))).start()
        self.replica = RedisServer(
            extra_args=(
                *self.REPLICATION,
                "--dir",
                str(tmp / "replica"),
                "--replicaof",
                "127.0.0.1",
                str(self.primary.port),
            )
        ).start()
        wait_until(lambda: self.client(self.replica).info("replication")["master_link_status"] == "up", 10, "sync")
        self.port = free_port()
        conf = tmp / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {tmp}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        with (tmp / "sentinel.log").open("wb") as log:
            self.sentinel = subprocess.Popen(
                [find_binary(), str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        sentinel = Redis(port=self.port, socket_timeout=1)
        wait_until(lambda: _answers(lambda: sentinel.sentinel_slaves(SERVICE)), 10, "the sentinel to see the replica")

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{SERVICE}/0"

    @staticmethod
    def client(server: RedisServer) -> Redis:
        return Redis(port=server.port, socket_timeout=2)

    def log(self) -> str:
        return (self.tmp / "sentinel.log").read_text(errors="replace")[-3000:]

    def master_port(self) -> int:
        _, port = Redis(port=self.port, socket_timeout=1).sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def kill_primary(self) -> None:
        """SIGKILL the primary once the replica has everything it acknowledged."""
        assert self.client(self.primary).wait(1, 2000) == 1
        assert self.primary.process is not None
        self.primary.process.kill()
        self.primary.process.wait()

    def stop(self) -> None:
        self.sentinel.kill()
        self.sentinel.wait()
        self.replica.stop()
        self.primary.stop()


def _answers(call: Any) -> Any:
    try:
        return call()
    except Exception:
        return None


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    s = SentinelSet(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def test_api_keeps_working_across_a_failover(sentinels: SentinelSet) -> None:
    settings = make_settings(sentinels.url, redis_timeout_seconds=1.0)
    before = [{"cron": "0 9 * * *", "url": f"https://example.com/{i}", "method": "GET"} for i in range(3)]
    after = [{"cron": "0 10 * * *", "url": "https://example.com/after", "method": "POST", "payload": {"v": 2}}]
    with TestClient(create_app(settings)) as c:
        assert c.post(TRIGGERS, json={"triggers": before}).status_code == 200
        sentinels.kill_primary()
        # Until the sentinel promotes the replica (~1-2 s), requests fail as with Redis down:
        # a 503 with the usual error body, never a 500; then the same app writes to the new primary.
        statuses = []
        deadline = time.monotonic() + 30
        while True:
            r = c.post(TRIGGERS, json={"triggers": after})
            statuses.append(r.status_code)
            assert r.status_code in (200, 503), r.text
            if r.status_code == 503:
                assert set(r.json()) == {"success", "error", "details"} and "Redis" in r.json()["error"]
            if r.status_code == 200:
                break
            assert time.monotonic() < deadline, f"no write succeeded after the failover: {statuses}"
            time.sleep(0.2)
        assert r.json()["removed"] == 3
        jobs = c.get(TRIGGERS).json()["jobs"]
        assert [(j["url"], j["cron"]) for j in jobs] == [("https://example.com/after", "0 10 * * *")]

    assert sentinels.master_port() == sentinels.replica.port
    promoted = sentinels.client(sentinels.replica)
    assert promoted.info("replication")["role"] == "master"
    assert [t.url for t in store.list_triggers(promoted, "ws")] == ["https://example.com/after"]


def test_scheduler_and_worker_keep_firing_across_a_failover(
    sentinels: SentinelSet, receiver: Receiver, tmp_path: Path
) -> None:
    procs = Procs(tmp_path, sentinels.url)
    conn = connection.connect(sentinels.url, timeout=5)
    try:
        start_scheduler(procs, conn)
        start_worker(procs, conn)
        store.replace(conn, "ws", [Trigger(cron="* * * * * *", url=f"{receiver.url}/tick", method="POST")])
        receiver.wait_for(lambda rs: len([r for r in rs if r.path == "/tick"]) >= 2, 15)
        killed_at = time.time()
        sentinels.kill_primary()
        # Firings resume by themselves: the processes reconnect to the promoted replica.
        resumed_after = int(killed_at) + 4
        # (Generous: on a starved machine the sentinel may abort a first failover and retry it.)
        arrived = receiver.wait_for(
            lambda rs: any(r.path == "/tick" and scheduled_second(r) >= resumed_after for r in rs), 60
        )
        assert any(r.path == "/tick" and scheduled_second(r) >= resumed_after for r in arrived), (
            f"no firing after the failover\n{procs.logs()}\n{sentinels.log()}"
        )
        assert all(p.alive() for p in procs.procs), procs.logs()
        assert sentinels.master_port() == sentinels.replica.port

        ticks = [r for r in snapshot(receiver) if r.path == "/tick"]
        for r in ticks:
            assert header(r, "Idempotency-Key") == f"ws:0@{header(r, 'X-Scheduler-Scheduled-At')}"
        # Seconds after the promotion are each delivered once (the second the primary died may be
        # delivered again after a failover: same Idempotency-Key, see DEPLOYMENT.md).
        later = [scheduled_second(r) for r in ticks if scheduled_second(r) >= resumed_after]
        assert len(later) == len(set(later)), procs.logs()
    finally:
        procs.stop_all()
        conn.close()


def test_a_sentinel_that_hangs_is_passed_over_even_without_a_timeout(sentinels: SentinelSet) -> None:
    """The worker waits on the primary without a time limit; the sentinels are still asked with one."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        url = f"redis+sentinel://127.0.0.1:{silent.getsockname()[1]},127.0.0.1:{sentinels.port}/{SERVICE}/0"
        client = connection.connect(url, timeout=None)
        started = time.monotonic()
        assert client.ping() is True
        assert time.monotonic() - started < connection.SENTINEL_TIMEOUT_SECONDS + 3
        client.close()


def test_a_primary_that_hangs_is_a_503_within_twice_the_timeout(sentinels: SentinelSet) -> None:
    settings = make_settings(sentinels.url, redis_timeout_seconds=0.5)
    trigger = {"cron": "0 9 * * *", "url": "https://example.com/", "method": "GET"}
    with TestClient(create_app(settings)) as c:
        assert c.post(TRIGGERS, json={"triggers": [trigger]}).status_code == 200
        assert sentinels.primary.process is not None
        sentinels.primary.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            r = c.post(TRIGGERS, json={"triggers": [trigger]})
            took = time.monotonic() - started
        finally:
            sentinels.primary.process.send_signal(signal.SIGCONT)
        assert r.status_code == 503 and "may or may not have been made" in r.json()["error"]
        assert took < 2 * 0.5 + 1.0  # one retry at most, and a command is never sent twice after a timeout
