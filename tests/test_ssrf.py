"""The SSRF guard (`scheduler_api.ssrf`): with ALLOW_PRIVATE_TARGETS=false a delivery never connects to an
internal address - not by a literal IP in the url (400 at replace time, refused again at delivery),
not by a host name resolving to one (DNS answers are filtered inside the HTTP client's connector),
not by DNS rebinding, not by a redirect. TARGET_ALLOWLIST lets chosen internal targets through.

DNS is controlled by `FakeResolver`, handed to the worker's runtime (the guard wraps it). The
tests never reach the internet: where a "public" address is needed, 127.0.0.2 plays it and is let
through with TARGET_ALLOWLIST=127.0.0.2/32, with a server of its own listening there.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from scheduler_api import ssrf
from scheduler_api.api import create_app
from scheduler_api.delivery import worker
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, firings, keys
from scheduler_api.triggers import Trigger
from tests.support.clock import T
from tests.support.factories import WS, make_settings
from tests.support.receiver import Receiver

PUBLIC_TRIGGER = {"cron": "* * * * *", "url": "https://example.com/ok", "method": "GET"}


class FakeResolver(AbstractResolver):
    """DNS under the test's control: name -> successive answers (the last one repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        n = sum(1 for h in self.calls if h == host)
        self.calls.append(host)
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        seq = self.answers[host]
        return [
            {
                "hostname": host,
                "host": ip,
                "port": port,
                "family": socket.AF_INET6 if ":" in ip else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for ip in seq[min(n, len(seq) - 1)]
        ]

    async def close(self) -> None:
        return None


def fake_dns(**names: str | list[str]) -> FakeResolver:
    """fake_dns(**{"a.test": "127.0.0.1"}): each name always answers the given address(es)."""
    return FakeResolver({name: [[ips] if isinstance(ips, str) else list(ips)] for name, ips in names.items()})


@dataclass
class Server:
    """A tiny HTTP server on `host`:`port`; answers 200, or 302 to `redirect_to`."""

    host: str
    port: int = 0
    redirect_to: str | None = None
    paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                state.paths.append(self.path)
                self.send_response(302 if state.redirect_to else 200)
                if state.redirect_to:
                    self.send_header("Location", state.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def guarded(redis_url: str, conn: Redis) -> Settings:
    return make_settings(redis_url, allow_private_targets=False)


def fire(
    conn: Redis, settings: Settings, urls: list[str], resolver: AbstractResolver | None, *, second: int = 1
) -> None:
    """Store GET triggers for `urls` (every second), fire the one due at T+`second`, deliver it."""
    triggers = [Trigger(cron="* * * * * *", url=u, method="GET") for u in urls]
    if second == 1:
        edits.replace(conn, WS, triggers, now=lambda: T)
    queue = Queue(settings.queue_name, connection=conn)
    assert ticking.tick(conn, queue, settings, now=T + second + 0.2).fired == len(urls)
    worker.run_worker(settings, conn, burst=True, resolver=resolver)


def record(conn: Redis, index: int = 0, second: int = 1) -> dict[str, Any]:
    rec = firings.get_record(conn, f"{WS}:{index}@2027-01-15T08:00:{second:02d}Z")
    assert rec is not None
    return rec


def assert_blocked(conn: Redis, rec: dict[str, Any], host: str) -> None:
    """`rec` is a blocked firing's record, which names the host of its url and nothing else: not
    the addresses it resolved to, nor why they are blocked (those are in the operator's log)."""
    assert rec["outcome"] == "blocked", rec
    (attempt,) = rec["attempts"]  # exactly one attempt: a blocked target is never retried
    assert attempt["error"] == "blocked"
    assert attempt["status"] is None
    assert attempt["message"] == f"blocked by the SSRF guard (host {host})"
    assert conn.zcard(keys.RETRIES) == 0
    assert conn.zscore(keys.failed(WS), rec["id"]) is not None


# Each blocked class: (address, words its reason contains).
BLOCKED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("169.254.0.1", "link-local"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fc00::1", "unique local"),
    ("fd12:3456:789a::1", "unique local"),
    ("fe80::1", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("fec0::1", "site-local"),
    ("feff:ffff::1", "site-local"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::ffff:169.254.169.254", "IPv4-mapped link-local"),
    ("::127.0.0.1", "loopback"),  # the deprecated IPv4-compatible form
    ("::ffff:0:7f00:1", "IPv4-translated (SIIT) loopback"),
    ("2002:a9fe:a9fe::1", "6to4 link-local"),  # 6to4 of 169.254.169.254
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo private"),  # Teredo client 10.0.0.1
    ("64:ff9b:1::a9fe:a9fe", "local-use NAT64"),
]


IDS = [a for a, _ in BLOCKED]


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@pytest.mark.parametrize(("address", "why"), BLOCKED, ids=IDS)
def test_blocked_reason_for_each_class(address: str, why: str) -> None:
    reason = ssrf.blocked_reason(ipaddress.ip_address(address))
    assert reason is not None and why in reason


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "2001:4860:4860::8888",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",  # the mapped form of a public address is public
        "2002:808:808::1",  # 6to4 of 8.8.8.8
        # Just outside the blocked ranges:
        "11.0.0.1",
        "172.15.255.255",
        "172.32.0.1",
        "192.167.255.255",
        "192.169.0.1",
        "100.63.255.255",
        "100.128.0.1",
        "169.253.255.255",
        "169.255.0.1",
        "223.255.255.255",
        "fbff:ffff::1",
    ],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert ssrf.blocked_reason(ipaddress.ip_address(address)) is None


@pytest.fixture
def guarded_client(guarded: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(guarded)) as c:
        yield c


@pytest.mark.parametrize(("address", "why"), BLOCKED, ids=IDS)
def test_literal_blocked_ip_is_refused_at_replace_time(
    guarded_client: TestClient, conn: Redis, address: str, why: str
) -> None:
    guarded_client.post(f"/api/workspaces/{WS}/triggers", json={"triggers": [PUBLIC_TRIGGER]})
    before = (conn.hgetall(keys.workspace(WS)), conn.zrange(keys.SCHEDULE, 0, -1, withscores=True))
    bad = dict(PUBLIC_TRIGGER, url=f"http://{url_host(address)}:8080/internal")
    r = guarded_client.post(f"/api/workspaces/{WS}/triggers", json={"triggers": [PUBLIC_TRIGGER, bad]})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["success"] is False and body["error"] == "Invalid request"
    assert [d["path"] for d in body["details"]] == ["triggers[1].url"]
    assert why in body["details"][0]["message"]
    assert (conn.hgetall(keys.workspace(WS)), conn.zrange(keys.SCHEDULE, 0, -1, withscores=True)) == before


@pytest.mark.parametrize(
    "host",
    [
        "127.1",
        "127.0.1",
        "2130706433",
        "0x7f000001",
        "0X7F.1",
        "0177.0.0.1",
        "017700000001",
        "0",
        "[fe80::1%25eth0]",
        "[2001:db8::1%25eth0]",  # a zone id, even on a global address
        "%31%32%37.0.0.1",  # a percent-encoded name
        "a%2eb.example",
        "127.0.0.1.",
        "169.254.169.254.",
        "127。0。0。1",
        "1.2.3.4.5",
        "4294967297",
    ],
)
def test_other_notations_of_internal_addresses_are_refused(guarded_client: TestClient, conn: Redis, host: str) -> None:
    """Shorthand, decimal, hex and octal IPv4 forms (read as addresses by the C library), a
    scoped IPv6 literal (any host with `%`), an address with the trailing dot of an absolute name, ideographic dots
    (IDNA turns them into dots), and numbers that are no address but would not be looked up in
    DNS either."""
    bad = dict(PUBLIC_TRIGGER, url=f"http://{host}:8080/internal")
    r = guarded_client.post(f"/api/workspaces/{WS}/triggers", json={"triggers": [bad]})
    assert r.status_code == 400, r.text
    assert r.json()["details"][0]["path"] == "triggers[0].url"
    assert conn.exists(keys.workspace(WS)) == 0


def test_host_names_pass_replace_time(guarded_client: TestClient) -> None:
    """Names are checked when connecting (after DNS), not when stored."""
    ok = dict(PUBLIC_TRIGGER, url="http://internal.example.test/hook")
    assert guarded_client.post(f"/api/workspaces/{WS}/triggers", json={"triggers": [ok]}).status_code == 200


def test_literal_ip_stored_before_the_guard_is_refused_at_delivery(
    conn: Redis, guarded: Settings, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """A definition written while the guard was off (or by hand) is refused when delivered."""
    port = receiver.url.rsplit(":", 1)[1]
    urls = [
        f"http://127.0.0.1:{port}/direct",
        f"http://[::ffff:127.0.0.1]:{port}/mapped",  # would reach the receiver through dual-stack
        f"http://127.1:{port}/short",
        f"http://127.0.0.1.:{port}/absolute",
    ]
    with caplog.at_level(logging.WARNING, logger="scheduler_api.delivery"):
        fire(conn, guarded, urls, fake_dns())
    assert receiver.requests == []
    for i, host in enumerate(["127.0.0.1", "::ffff:127.0.0.1", "127.1", "127.0.0.1."]):
        assert_blocked(conn, record(conn, i), host)
    assert sum("blocked" in r.getMessage() and "loopback" in r.getMessage() for r in caplog.records) == len(urls)


@pytest.mark.parametrize(("address", "why"), BLOCKED, ids=IDS)
def test_name_resolving_to_a_blocked_address_is_not_delivered(
    conn: Redis, guarded: Settings, receiver: Receiver, caplog: pytest.LogCaptureFixture, address: str, why: str
) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    dns = fake_dns(**{"target.test": address})
    with caplog.at_level(logging.INFO, logger="scheduler_api.delivery"):
        fire(conn, guarded, [f"http://target.test:{port}/hook"], dns)
    assert dns.calls == ["target.test"]  # the name went through our resolver, under the guard
    assert receiver.requests == []
    rec = record(conn)
    assert_blocked(conn, rec, "target.test")  # the tenant learns nothing of what the name resolved to
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("blocked" in line and address in line and why in line for line in lines), lines


def test_name_resolving_to_loopback_reaches_the_receiver_when_the_guard_is_off(
    conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    """The control of the test above: the same set-up does reach the receiver without the guard,
    so a bypass of the guard would be seen there."""
    port = receiver.url.rsplit(":", 1)[1]
    settings = make_settings(redis_url, allow_private_targets=True)
    fire(conn, settings, [f"http://target.test:{port}/hook"], fake_dns(**{"target.test": "127.0.0.1"}))
    assert [r.path for r in receiver.requests] == ["/hook"]
    assert record(conn)["outcome"] == "delivered"


def test_localhost_through_the_system_resolver_is_blocked(conn: Redis, guarded: Settings, receiver: Receiver) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    fire(conn, guarded, [f"http://localhost:{port}/hook"], None)
    assert receiver.requests == []
    assert_blocked(conn, record(conn), "localhost")


@pytest.fixture
def public_standin(receiver: Receiver) -> Iterator[Server]:
    """A server on 127.0.0.2 at the receiver's port: what a "public" answer connects to."""
    server = Server("127.0.0.2", int(receiver.url.rsplit(":", 1)[1]))
    yield server
    server.close()


def test_rebinding_to_loopback_after_a_public_answer_is_refused(
    conn: Redis, redis_url: str, receiver: Receiver, public_standin: Server
) -> None:
    settings = make_settings(redis_url, allow_private_targets=False, target_allowlist="127.0.0.2/32")
    dns = FakeResolver({"rebind.test": [["127.0.0.2"], ["127.0.0.1"]]})
    url = f"http://rebind.test:{public_standin.port}/hook"

    fire(conn, settings, [url], dns, second=1)  # first answer: the "public" address, allowed
    assert public_standin.paths == ["/hook"]
    assert record(conn, second=1)["outcome"] == "delivered"

    fire(conn, settings, [url], dns, second=2)  # then the name rebinds to 127.0.0.1
    assert dns.calls == ["rebind.test", "rebind.test"]
    assert public_standin.paths == ["/hook"]
    assert receiver.requests == []
    assert_blocked(conn, record(conn, second=2), "rebind.test")


def test_blocked_addresses_are_dropped_from_a_mixed_answer(conn: Redis, redis_url: str, receiver: Receiver) -> None:
    """An answer with an allowed address first and 127.0.0.1 second: the client may only try the
    first. Nothing listens there, so without the filter it would fall back to the receiver."""
    settings = make_settings(
        redis_url, allow_private_targets=False, target_allowlist="127.0.0.2/32", delivery_max_retries=0
    )
    port = receiver.url.rsplit(":", 1)[1]
    dns = fake_dns(**{"mixed.test": ["127.0.0.2", "127.0.0.1"]})
    fire(conn, settings, [f"http://mixed.test:{port}/hook"], dns)
    assert receiver.requests == []
    rec = record(conn)
    assert rec["outcome"] == "failed"  # a connection error to 127.0.0.2, not a delivery
    assert rec["attempts"][0]["status"] is None


def test_guarded_resolver_checks_every_answer() -> None:
    import asyncio

    dns = FakeResolver({"rebind.test": [["93.184.216.34"], ["127.0.0.1"], ["93.184.216.34", "10.1.2.3"]]})
    guard = ssrf.GuardedResolver(ssrf.TargetPolicy(), dns)

    async def run() -> None:
        first = await guard.resolve("rebind.test", 80)
        assert [a["host"] for a in first] == ["93.184.216.34"]
        with pytest.raises(ssrf.BlockedTarget, match="127.0.0.1 \\(loopback\\)"):
            await guard.resolve("rebind.test", 80)
        third = await guard.resolve("rebind.test", 80)
        assert [a["host"] for a in third] == ["93.184.216.34"]

    asyncio.run(run())


@pytest.mark.parametrize("allow_private", [False, True])
def test_redirects_to_internal_addresses_are_not_followed(
    conn: Redis, redis_url: str, receiver: Receiver, allow_private: bool
) -> None:
    """The redirector is an allowed target (by name); its 302 points at the receiver's literal
    127.0.0.1, which a followed redirect would reach without any DNS. It is not followed."""
    redirector = Server("127.0.0.1", redirect_to=f"{receiver.url}/internal")
    try:
        settings = make_settings(
            redis_url,
            allow_private_targets=allow_private,
            target_allowlist="redirector.test",
            delivery_max_retries=0,
        )
        dns = fake_dns(**{"redirector.test": "127.0.0.1"})
        fire(conn, settings, [f"http://redirector.test:{redirector.port}/start"], dns)
        assert redirector.paths == ["/start"]
        assert receiver.to("/internal") == [] and receiver.requests == []
        rec = record(conn)
        assert rec["outcome"] == "failed"
        assert [a["status"] for a in rec["attempts"]] == [302]
    finally:
        redirector.close()


def test_allow_private_targets_lifts_the_guard(conn: Redis, redis_url: str, receiver: Receiver) -> None:
    settings = make_settings(redis_url, allow_private_targets=True)
    with TestClient(create_app(settings)) as c:
        for address, _ in BLOCKED:
            t = dict(PUBLIC_TRIGGER, url=f"http://{url_host(address)}:8080/x")
            assert c.post(f"/api/workspaces/{WS}/triggers", json={"triggers": [t]}).status_code == 200, address
    port = receiver.url.rsplit(":", 1)[1]
    fire(
        conn,
        settings,
        [f"{receiver.url}/literal", f"http://name.test:{port}/named"],
        fake_dns(**{"name.test": "127.0.0.1"}),
    )
    assert sorted(r.path for r in receiver.requests) == ["/literal", "/named"]


def test_allowlisted_cidr_lets_only_that_network_through(conn: Redis, redis_url: str, receiver: Receiver) -> None:
    settings = make_settings(redis_url, allow_private_targets=False, target_allowlist="127.0.0.0/8")
    port = receiver.url.rsplit(":", 1)[1]
    with TestClient(create_app(settings)) as c:
        ok = dict(PUBLIC_TRIGGER, url=f"{receiver.url}/literal")
        assert c.post(f"/api/workspaces/{WS}/triggers", json={"triggers": [ok]}).status_code == 200
        for address in ("10.0.0.1", "169.254.169.254", "::1", "192.168.0.1"):
            bad = dict(PUBLIC_TRIGGER, url=f"http://{url_host(address)}/x")
            r = c.post(f"/api/workspaces/{WS}/triggers", json={"triggers": [bad]})
            assert r.status_code == 400, address
    dns = fake_dns(**{"loop.test": "127.0.0.1", "meta.test": "169.254.169.254", "lan.test": "10.0.0.1"})
    urls = [
        f"{receiver.url}/literal",
        f"http://loop.test:{port}/named",
        f"http://meta.test:{port}/meta",
        f"http://lan.test:{port}/lan",
    ]
    fire(conn, settings, urls, dns)
    assert sorted(r.path for r in receiver.requests) == ["/literal", "/named"]
    assert record(conn, 0)["outcome"] == "delivered"
    assert record(conn, 1)["outcome"] == "delivered"
    assert_blocked(conn, record(conn, 2), "meta.test")
    assert_blocked(conn, record(conn, 3), "lan.test")


def test_allowlisted_host_name_lets_only_that_name_through(conn: Redis, redis_url: str, receiver: Receiver) -> None:
    settings = make_settings(redis_url, allow_private_targets=False, target_allowlist=" Internal.Test , other.example")
    port = receiver.url.rsplit(":", 1)[1]
    with TestClient(create_app(settings)) as c:
        literal = dict(PUBLIC_TRIGGER, url=f"{receiver.url}/literal")  # the name does not open its address
        assert c.post(f"/api/workspaces/{WS}/triggers", json={"triggers": [literal]}).status_code == 400
    dns = fake_dns(**{"internal.test": "127.0.0.1", "sneaky.test": "127.0.0.1"})
    fire(conn, settings, [f"http://internal.test:{port}/allowed", f"http://sneaky.test:{port}/sneaky"], dns)
    assert [r.path for r in receiver.requests] == ["/allowed"]
    assert record(conn, 0)["outcome"] == "delivered"
    assert_blocked(conn, record(conn, 1), "sneaky.test")


def test_the_tenant_sees_blocked_by_the_guard_and_only_the_operator_log_has_the_addresses(
    conn: Redis, guarded: Settings, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """What the tenant reads in GET .../deliveries: "blocked by the SSRF guard" and the host it wrote;
    the internal addresses the name resolves to, and their class, only in the worker's warning."""
    port = receiver.url.rsplit(":", 1)[1]
    dns = fake_dns(**{"meta.test": ["169.254.169.254", "10.1.2.3"]})
    with caplog.at_level(logging.WARNING, logger="scheduler_api.delivery"):
        fire(conn, guarded, [f"http://meta.test:{port}/latest/meta-data"], dns)
    with TestClient(create_app(guarded)) as c:
        r = c.get(f"/api/workspaces/{WS}/deliveries")
    assert r.status_code == 200, r.text
    [rec] = r.json()["deliveries"]
    assert rec["outcome"] == "blocked"
    assert [a["message"] for a in rec["attempts"]] == ["blocked by the SSRF guard (host meta.test)"]
    for hidden in ("169.254", "10.1.2.3", "link-local", "private"):
        assert hidden not in r.text
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "blocked" in r.getMessage()]
    assert f"workspace={WS}" in line and "meta.test" in line
    assert "169.254.169.254 (link-local" in line and "10.1.2.3 (private)" in line


@pytest.mark.parametrize("host", ["a%62c.test", "[fe80::1%25eth0]", "[2001:db8::1%25lo]", "%31%32%37.0.0.1"])
def test_a_host_with_percent_is_refused_at_replace_time_even_with_the_guard_off(
    conn: Redis, redis_url: str, host: str
) -> None:
    settings = make_settings(redis_url, allow_private_targets=True)
    with TestClient(create_app(settings)) as c:
        bad = dict(PUBLIC_TRIGGER, url=f"http://{host}:8080/x")
        r = c.post(f"/api/workspaces/{WS}/triggers", json={"triggers": [PUBLIC_TRIGGER, bad]})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["success"] is False
    assert [d["path"] for d in body["details"]] == ["triggers[1].url"]
    assert "'%'" in body["details"][0]["message"] and "zone id" in body["details"][0]["message"]
    assert conn.exists(keys.workspace(WS)) == 0


def test_a_stored_host_with_percent_is_blocked_at_delivery_even_with_the_guard_off(
    conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    """Definitions written before this rule (or by hand): refused before any DNS, although the guard
    is off and the name would resolve to the receiver."""
    settings = make_settings(redis_url, allow_private_targets=True)
    port = receiver.url.rsplit(":", 1)[1]
    dns = fake_dns(**{"a%62c.test": "127.0.0.1", "abc.test": "127.0.0.1"})
    fire(conn, settings, [f"http://a%62c.test:{port}/encoded", f"http://[::1%25lo]:{port}/zone"], dns)
    assert receiver.requests == [] and dns.calls == []
    assert_blocked(conn, record(conn, 0), "a%62c.test")
    assert_blocked(conn, record(conn, 1), "::1%25lo")
