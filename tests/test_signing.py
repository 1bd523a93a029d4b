"""`scheduler_api.signing`: ``X-Scheduler-Signature: t=<unix s>,v1=<hex HMAC-SHA256("t.body")>``, one ``v1``
per secret of ``SIGNING_SECRETS`` (current, next), and `signing.verify` for receivers.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
from redis import Redis
from rq import Queue

from scheduler_api import signing
from scheduler_api.delivery import worker
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits
from scheduler_api.triggers import Trigger
from tests.support.clock import T
from tests.support.factories import make_settings
from tests.support.receiver import Received, Receiver

NOW = 1_790_000_000


def sig(r: Received) -> str | None:
    return {k.lower(): v for k, v in r.headers.items()}.get("x-scheduler-signature")


def parts(header: str) -> tuple[int, list[str]]:
    t, *vs = header.split(",")
    assert t.startswith("t=") and all(v.startswith("v1=") for v in vs), header
    return int(t[2:]), [v[3:] for v in vs]


def test_sign_is_hmac_sha256_of_t_dot_body() -> None:
    header = signing.sign(["s3cret"], b'{"a":1}', timestamp=NOW)
    expected = hmac.new(b"s3cret", f"{NOW}.".encode() + b'{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"
    assert signing.verify("s3cret", header, b'{"a":1}', 300, now=NOW)


def test_tampered_body_or_other_secret_is_rejected() -> None:
    header = signing.sign(["s3cret"], b'{"a":1}', timestamp=NOW)
    assert not signing.verify("s3cret", header, b'{"a":2}', now=NOW)
    assert not signing.verify("s3cret", header, b'{"a":1} ', now=NOW)
    assert not signing.verify("s3cret", header, b"", now=NOW)
    assert not signing.verify("other", header, b'{"a":1}', now=NOW)
    # A replayed MAC under another timestamp fails: t is part of what is signed.
    _, [mac] = parts(header)
    assert not signing.verify("s3cret", f"t={NOW + 1},v1={mac}", b'{"a":1}', now=NOW)


def test_timestamp_outside_the_tolerance_is_rejected() -> None:
    header = signing.sign(["s"], b"x", timestamp=NOW)
    assert signing.verify("s", header, b"x", 300, now=NOW + 300)
    assert not signing.verify("s", header, b"x", 300, now=NOW + 301)  # expired
    assert signing.verify("s", header, b"x", 300, now=NOW - 300)
    assert not signing.verify("s", header, b"x", 300, now=NOW - 301)  # from the future
    assert not signing.verify("s", header, b"x", 10, now=NOW + 11)
    # The default tolerance is 300 s, against the real clock.
    assert signing.verify("s", signing.sign(["s"], b"x"), b"x")
    assert not signing.verify("s", signing.sign(["s"], b"x", timestamp=int(time.time()) - 301), b"x")


def test_rotation_carries_one_v1_per_secret_and_each_verifies() -> None:
    header = signing.sign(["current", "next"], b"body", timestamp=NOW)
    t, macs = parts(header)
    assert t == NOW and len(macs) == 2 and macs[0] != macs[1]
    assert signing.verify("current", header, b"body", now=NOW)
    assert signing.verify("next", header, b"body", now=NOW)
    assert not signing.verify("retired", header, b"body", now=NOW)
    assert not signing.verify("next", header, b"tampered", now=NOW)


def test_empty_body_signs_empty_bytes() -> None:
    header = signing.sign(["s"], b"", timestamp=NOW)
    expected = hmac.new(b"s", f"{NOW}.".encode(), hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"
    assert signing.verify("s", header, b"", now=NOW)


def test_field_order_and_spaces_do_not_matter() -> None:
    t, [mac] = parts(signing.sign(["s"], b"x", timestamp=NOW))
    assert signing.verify("s", f"v1={mac},t={t}", b"x", now=NOW)
    assert signing.verify("s", f"t={t}, v1={mac}", b"x", now=NOW)
    assert signing.verify("s", f"t={t},v1=deadbeef,v1={mac}", b"x", now=NOW)  # any v1 may match
    assert signing.verify("s", f"t={t},v0=whatever,v1={mac}", b"x", now=NOW)  # unknown schemes ignored


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        ",,,",
        "t=,v1=",
        "t=abc,v1=00",
        "t=-5,v1=00",
        "t=1.5,v1=00",
        "t=١٧٩٠٠٠٠٠٠٠,v1=00",  # non-ASCII digits
        "v1={mac}",  # no timestamp
        "t={t}",  # no signature
        "t={t},v1=",
        "t={t},v1=é{mac}",  # non-ASCII in the MAC
        "t={t},v1={mac}\x00",
        "t={t},v1={mac_upper}",
        "t={t},V1={mac}",
        "T={t},v1={mac}",
        "t={t}v1={mac}",
        "t=" + "9" * 5000 + ",v1={mac}",
    ],
)
def test_missing_or_malformed_header_is_false_never_an_exception(header: str | None) -> None:
    t, [mac] = parts(signing.sign(["s"], b"x", timestamp=NOW))
    value = (
        header.replace("{t}", str(t)).replace("{mac_upper}", mac.upper()).replace("{mac}", mac) if header else header
    )
    assert signing.verify("s", value, b"x", 300, now=NOW) is False


def deliver(conn: Redis, settings: Settings, triggers: list[Trigger], *nows: float) -> None:
    edits.replace(conn, "ws", triggers, now=lambda: T - 30)
    queue = Queue(settings.queue_name, connection=conn)
    for now in nows:
        ticking.tick(conn, queue, settings, now=now)
        worker.run_worker(settings, conn, burst=True)


def test_every_delivery_is_signed_on_the_bytes_the_receiver_got(
    conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_settings(redis_url, signing_secrets="whsec-current")
    before = int(time.time())
    deliver(
        conn,
        settings,
        [
            Trigger(cron="* * * * *", url=receiver.url + "/post", method="POST", payload={"é": [1, 2.5, None]}),
            Trigger(cron="* * * * *", url=receiver.url + "/get", method="GET", payload={"stored": "not sent"}),
            Trigger(cron="* * * * *", url=receiver.url + "/put", method="PUT", payload={"p": "q"}),
            Trigger(cron="* * * * *", url=receiver.url + "/delete", method="DELETE"),
            Trigger(cron="* * * * *", url=receiver.url + "/empty", method="POST"),
        ],
        T + 0.2,
    )
    after = int(time.time())
    assert len(receiver.requests) == 5
    for r in receiver.requests:
        header = sig(r)
        assert header is not None, r.path
        t, macs = parts(header)
        assert before <= t <= after and len(macs) == 1
        assert signing.verify("whsec-current", header, r.body), r.path
        assert not signing.verify("whsec-current", header, r.body + b" "), r.path
        assert not signing.verify("whsec-other", header, r.body), r.path
    got = {r.path: r for r in receiver.requests}
    assert got["/post"].json() == {"é": [1, 2.5, None]}
    for path in ("/get", "/delete", "/empty"):
        assert got[path].body == b""
        assert signing.verify("whsec-current", sig(got[path]), b"")


def test_rotation_on_the_wire(conn: Redis, redis_url: str, receiver: Receiver) -> None:
    settings = make_settings(redis_url, signing_secrets=" current , next ")
    deliver(conn, settings, [Trigger(cron="* * * * *", url=receiver.url + "/r", method="POST", payload={})], T + 0.2)
    [r] = receiver.requests
    header = sig(r)
    assert header is not None
    _, macs = parts(header)
    assert len(macs) == 2
    assert signing.verify("current", header, r.body)
    assert signing.verify("next", header, r.body)
    assert not signing.verify(" current ", header, r.body)  # the setting's spaces are stripped


def test_each_retry_is_signed_afresh(conn: Redis, redis_url: str, receiver: Receiver) -> None:
    settings = make_settings(redis_url, signing_secrets="s")
    receiver.on("/again", (500, 0))
    deliver(
        conn,
        settings,
        [Trigger(cron="* * * * *", url=receiver.url + "/again", method="PATCH", payload={"n": 1})],
        T + 0.2,
        T + 0.5,
    )
    reqs = receiver.to("/again")
    assert len(reqs) == 2
    for r in reqs:
        assert signing.verify("s", sig(r), r.body)


def test_no_signing_secrets_no_signature_header(conn: Redis, redis_url: str, receiver: Receiver) -> None:
    settings = make_settings(redis_url)
    assert settings.signing_secrets == ""
    deliver(conn, settings, [Trigger(cron="* * * * *", url=receiver.url + "/n", method="POST", payload={})], T + 0.2)
    [r] = receiver.requests
    assert sig(r) is None


def test_a_trigger_cannot_set_the_signature_header(client: object) -> None:
    from fastapi.testclient import TestClient

    assert isinstance(client, TestClient)
    body = {
        "triggers": [
            {
                "cron": "* * * * *",
                "url": "https://example.com/x",
                "method": "GET",
                "headers": {"X-Scheduler-Signature": "t=1,v1=forged"},
            }
        ]
    }
    r = client.post("/api/workspaces/ws/triggers", json=body)
    assert r.status_code == 400
    assert r.json()["details"][0]["path"].startswith("triggers[0].headers")
