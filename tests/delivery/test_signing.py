"""Every delivery is signed with its workspace's secret (Standard Webhooks), checked by receivers with
the real `standardwebhooks` package: real ticks, the real worker runtime, the local receiver.
"""

from __future__ import annotations

import time

from cryptography.fernet import Fernet
from redis import Redis
from rq import Queue

from scheduler_api.delivery import worker
from scheduler_api.engine import tick as ticking
from scheduler_api.header_crypto import HeaderCipher
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, keys, signing_keys
from scheduler_api.triggers import Trigger
from tests.support.arrivals import verifies
from tests.support.clock import T
from tests.support.factories import make_engine_settings
from tests.support.receiver import Received, Receiver, headers_of


def deliver(conn: Redis, settings: Settings, by_ws: dict[str, list[Trigger]], *nows: float) -> None:
    for ws, triggers in by_ws.items():
        edits.replace(conn, ws, triggers, now=lambda: T - 30)
    queue = Queue(settings.queue_name, connection=conn)
    for now in nows:
        ticking.tick(conn, queue, settings, now=now)
        worker.run_worker(settings, conn, burst=True)


def secret_of(conn: Redis, settings: Settings, ws: str) -> str:
    cipher = HeaderCipher(settings.secrets_key) if settings.secrets_key else None
    return signing_keys.get(conn, cipher, ws, now=time.time()).secret


def test_each_workspace_signs_with_its_own_secret(conn: Redis, redis_url: str, receiver: Receiver) -> None:
    settings = make_engine_settings(redis_url)
    before = int(time.time())
    deliver(
        conn,
        settings,
        {
            "ws-a": [
                Trigger(cron="* * * * *", url=receiver.url + "/a/post", method="POST", payload={"é": [1, 2.5, None]}),
                Trigger(cron="* * * * *", url=receiver.url + "/a/get", method="GET", payload={"not": "sent"}),
                Trigger(cron="* * * * *", url=receiver.url + "/a/delete", method="DELETE"),
            ],
            "ws-b": [Trigger(cron="* * * * *", url=receiver.url + "/b/put", method="PUT", payload={"p": "q"})],
        },
        T + 0.2,
    )
    after = int(time.time())
    assert len(receiver.requests) == 4
    secret_a, secret_b = secret_of(conn, settings, "ws-a"), secret_of(conn, settings, "ws-b")
    assert secret_a != secret_b
    for r in receiver.requests:
        h = headers_of(r)
        assert h["webhook-id"] == h["idempotency-key"]
        assert before <= int(h["webhook-timestamp"]) <= after
        assert len(h["webhook-signature"].split(" ")) == 1 and h["webhook-signature"].startswith("v1,")
        assert "x-scheduler-signature" not in h
        own, other = (secret_a, secret_b) if r.path.startswith("/a/") else (secret_b, secret_a)
        assert verifies(own, r), r.path
        assert not verifies(other, r), r.path  # a tenant's secret never verifies another's delivery
        assert not verifies(own, Received(r.method, r.path, r.headers, r.body + b" ", r.at)), r.path
    assert receiver.to("/a/post")[0].json() == {"é": [1, 2.5, None]}
    assert receiver.to("/a/get")[0].body == b""


def test_every_attempt_of_a_firing_has_the_same_webhook_id_and_a_fresh_signature(
    conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url)
    receiver.on("/again", (500, 0))
    deliver(
        conn,
        settings,
        {"ws": [Trigger(cron="* * * * *", url=receiver.url + "/again", method="PATCH", payload={"n": 1})]},
        T + 0.2,
        T + 0.5,
    )
    first, second = receiver.to("/again")
    assert headers_of(first)["webhook-id"] == headers_of(second)["webhook-id"] == headers_of(first)["idempotency-key"]
    secret = secret_of(conn, settings, "ws")
    assert verifies(secret, first) and verifies(secret, second)


def test_a_trigger_cannot_set_the_signature_headers(conn: Redis, redis_url: str, receiver: Receiver) -> None:
    settings = make_engine_settings(redis_url)
    forged = {"webhook-signature": "v1,forged", "Webhook-Id": "forged-id", "webhook-timestamp": "1"}
    deliver(
        conn,
        settings,
        {"ws": [Trigger(cron="* * * * *", url=receiver.url + "/f", method="POST", payload={}, headers=forged)]},
        T + 0.2,
    )
    [r] = receiver.requests
    names = [k.lower() for k, _ in r.header_lines]
    assert names.count("webhook-signature") == names.count("webhook-id") == names.count("webhook-timestamp") == 1
    assert verifies(secret_of(conn, settings, "ws"), r)


def test_rotation_signs_with_both_during_the_window_then_only_the_new_one(
    conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    trigger = {"ws": [Trigger(cron="* * * * *", url=receiver.url + "/r", method="POST", payload={"x": 1})]}
    settings = make_engine_settings(redis_url)
    old = secret_of(conn, settings, "ws")
    new = signing_keys.rotate(conn, None, "ws", now=time.time(), rotation_seconds=3600).secret
    deliver(conn, settings, trigger, T + 0.2)
    [r] = receiver.requests
    assert len(headers_of(r)["webhook-signature"].split(" ")) == 2
    assert verifies(old, r) and verifies(new, r)
    # A window of 0 seconds: the previous secret stops signing at once.
    newest = signing_keys.rotate(conn, None, "ws", now=time.time(), rotation_seconds=0).secret
    deliver(conn, settings, trigger, T + 60.2)
    r = receiver.requests[-1]
    assert len(headers_of(r)["webhook-signature"].split(" ")) == 1
    assert verifies(newest, r) and not verifies(new, r) and not verifies(old, r)


def test_secret_encrypted_at_rest_and_undecryptable_secret_fails_the_firing_unsent(
    conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    key = Fernet.generate_key().decode()
    settings = make_engine_settings(redis_url, secrets_key=key)
    trigger = {"ws": [Trigger(cron="* * * * *", url=receiver.url + "/e", method="POST", payload={})]}
    deliver(conn, settings, trigger, T + 0.2)
    [r] = receiver.requests
    secret = secret_of(conn, settings, "ws")
    assert verifies(secret, r)
    raw = conn.hgetall(keys.signing("ws"))
    stored = raw[b"secret"].decode()
    assert stored.startswith("enc2:") and secret not in stored
    assert secret.removeprefix("whsec_") not in str(raw)
    # Another SECRETS_KEY cannot open it: the firing fails with error "secrets", nothing is sent.
    other = make_engine_settings(redis_url, secrets_key=Fernet.generate_key().decode())
    deliver(conn, other, trigger, T + 60.2)
    assert len(receiver.requests) == 1
    text = str(conn.hgetall(keys.records("ws")))
    assert '"error":"secrets"' in text and secret not in text
