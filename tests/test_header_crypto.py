"""`scheduler_api.header_crypto`: header values at rest. With SECRETS_KEY they are stored AES-GCM-encrypted,
bound to their workspace and header name, decrypted only by the worker that sends them, and never shown in
responses or logs. SECRETS_KEY="new,old" rotates; a value no configured key opens (or one moved to another
workspace or header) fails its firing for good, sending nothing. First-version `enc:` Fernet values are read.
"""

from __future__ import annotations

import base64
import json
import logging
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from scheduler_api.api import create_app
from scheduler_api.delivery import worker
from scheduler_api.engine import tick as ticking
from scheduler_api.errors import SecretsError, SettingsError
from scheduler_api.header_crypto import FERNET_PREFIX, PREFIX, HeaderCipher
from scheduler_api.settings import Settings, load_settings
from scheduler_api.storage import edits, firings, keys
from scheduler_api.triggers import Trigger
from tests.support.clock import T
from tests.support.factories import WS, make_settings
from tests.support.receiver import Receiver

SECRET_1 = "Bearer s3cr3t-T0KEN-aaaaaaaaaaaaaaaa"


SECRET_2 = "k3y-VALUE-bbbbbbbbbbbbbbbbbbbbbbbbbbb"


HEADERS = {"Authorization": SECRET_1, "X-Api-Key": SECRET_2}


def new_key() -> str:
    return Fernet.generate_key().decode()


def everything_in_redis(conn: Redis) -> bytes:
    """Every key and value of every type, plus zlib-decompressed values (RQ compresses job data)."""
    parts: list[bytes] = []
    for key in conn.scan_iter(count=1000):
        parts.append(key)
        kind = conn.type(key)
        values: list[Any]
        if kind == b"string":
            values = [conn.get(key)]
        elif kind == b"hash":
            values = [x for kv in conn.hgetall(key).items() for x in kv]
        elif kind == b"list":
            values = conn.lrange(key, 0, -1)
        elif kind == b"set":
            values = list(conn.smembers(key))
        elif kind == b"zset":
            values = [m for m, _ in conn.zrange(key, 0, -1, withscores=True)]
        elif kind == b"stream":
            values = [json.dumps([str(e) for e in conn.xrange(key)]).encode()]
        else:
            raise AssertionError(f"unexpected type {kind!r} of {key!r}")
        for v in values:
            if v is None:
                continue
            parts.append(v)
            try:
                parts.append(zlib.decompress(v))
            except zlib.error:
                pass
    return b"\n".join(parts)


def fire(conn: Redis, settings: Settings, *, second: int = 1) -> None:
    queue = Queue(settings.queue_name, connection=conn)
    assert ticking.tick(conn, queue, settings, now=T + second + 0.2).fired >= 1
    worker.run_worker(settings, conn, burst=True)


def record(conn: Redis, index: int = 0, second: int = 1) -> dict[str, Any]:
    rec = firings.get_record(conn, f"{WS}:{index}@2027-01-15T08:00:{second:02d}Z")
    assert rec is not None
    return rec


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@pytest.fixture
def key() -> str:
    return new_key()


@pytest.fixture
def sealed_settings(redis_url: str, conn: Redis, key: str) -> Settings:
    return make_settings(redis_url, secrets_key=key)


@pytest.fixture
def c(sealed_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(sealed_settings)) as client:
        yield client


def test_values_are_encrypted_in_redis_sent_in_clear_and_never_shown(
    c: TestClient,
    conn: Redis,
    sealed_settings: Settings,
    key: str,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    trigger = {"cron": "* * * * * *", "url": receiver.url + "/hook", "method": "POST", "payload": {"a": 1}}
    responses: list[str] = []
    with caplog.at_level(logging.DEBUG):
        r = c.post(f"/api/workspaces/{WS}/triggers", json={"triggers": [dict(trigger, headers=HEADERS)]})
        assert r.status_code == 200
        responses.append(r.text)
        # Re-register at a fixed time so the engine fires it deterministically.
        edits.replace(
            conn, WS, [Trigger.model_validate(dict(trigger, headers=HEADERS))], now=lambda: T, cipher=HeaderCipher(key)
        )

        # At rest: every value is `enc2:<key id>:<nonce + ciphertext>` that opens to the plaintext with
        # SECRETS_KEY for this workspace and header name.
        raw = conn.hget(keys.workspace(WS), "0")
        assert raw is not None
        stored_headers = json.loads(raw)["headers"]
        assert set(stored_headers) == set(HEADERS)
        for name, value in stored_headers.items():
            assert value.startswith(PREFIX)
            assert HeaderCipher(key).open({name: value}, workspace_id=WS) == {name: HEADERS[name]}

        fire(conn, sealed_settings)
        (got,) = receiver.to("/hook")
        assert lower(got.headers)["authorization"] == SECRET_1
        assert lower(got.headers)["x-api-key"] == SECRET_2
        assert record(conn)["outcome"] == "delivered"

        for path in (
            f"/api/workspaces/{WS}/triggers",
            f"/api/workspaces/{WS}/triggers/0",
            f"/api/workspaces/{WS}/deliveries",
        ):
            r = c.get(path)
            assert r.status_code == 200, path
            responses.append(r.text)
        responses.append(c.post(f"/api/workspaces/{WS}/triggers/0/run").text)
        responses.append(c.get("/metrics").text)

    assert sorted(json.loads(responses[1])["jobs"][0]["header_names"]) == ["Authorization", "X-Api-Key"]
    blob = everything_in_redis(conn)
    logged = "\n".join(
        [rec.getMessage() for rec in caplog.records] + [caplog.text] + [str(rec.args) for rec in caplog.records]
    )
    assert caplog.records  # DEBUG logging was captured (the delivery line at least)
    for secret in HEADERS.values():
        token = secret.split()[-1]
        assert token.encode() not in blob
        for text in responses:
            assert token not in text
        assert token not in logged


def test_validation_errors_do_not_echo_values(c: TestClient, conn: Redis, redis_url: str) -> None:
    base = {"cron": "* * * * *", "url": "https://example.com/", "method": "GET"}
    bad_headers = [
        {"Host": SECRET_1},
        {"X-Scheduler-Sig": SECRET_1},
        {"Authorization": SECRET_1, "authorization": SECRET_2},
        {"X-A": SECRET_1 + "\r\nX-Injected: 1"},
        {"X-A": SECRET_1 + "\x01"},
        {"X-A": SECRET_1 + "é"},
    ]
    for headers in bad_headers:
        r = c.post(f"/api/workspaces/{WS}/triggers", json={"triggers": [dict(base, headers=headers)]})
        assert r.status_code == 400, headers
        assert "s3cr3t" not in r.text and "k3y-VALUE" not in r.text
    with TestClient(create_app(make_settings(redis_url, max_header_bytes=20))) as small:
        r = small.post(f"/api/workspaces/{WS}/triggers", json={"triggers": [dict(base, headers=HEADERS)]})
        assert r.status_code == 400 and "s3cr3t" not in r.text
    assert conn.exists(keys.workspace(WS)) == 0


def test_rotation_new_key_first_still_opens_old_values(conn: Redis, redis_url: str, receiver: Receiver) -> None:
    old, new = new_key(), new_key()
    url = receiver.url + "/rotated"
    trigger = Trigger(cron="* * * * * *", url=url, method="GET", headers=HEADERS)
    edits.replace(conn, WS, [trigger], now=lambda: T, cipher=HeaderCipher(old))
    rotating = make_settings(redis_url, secrets_key=f"{new},{old}")
    fire(conn, rotating)
    (got,) = receiver.to("/rotated")
    assert lower(got.headers)["authorization"] == SECRET_1
    assert lower(got.headers)["x-api-key"] == SECRET_2

    # What is written now is sealed with the new key alone.
    with TestClient(create_app(rotating)) as c:
        t = {"cron": "* * * * *", "url": url, "method": "GET", "headers": HEADERS}
        assert c.post(f"/api/workspaces/{WS}/triggers", json={"triggers": [t]}).status_code == 200
    raw = conn.hget(keys.workspace(WS), "0")
    assert raw is not None
    value = json.loads(raw)["headers"]["Authorization"]
    assert value.startswith(PREFIX)
    assert HeaderCipher(new).open({"Authorization": value}, workspace_id=WS) == {"Authorization": SECRET_1}


@pytest.mark.parametrize("configured", ["other-key", None])
def test_undecryptable_value_fails_the_firing_without_sending(
    conn: Redis, redis_url: str, receiver: Receiver, caplog: pytest.LogCaptureFixture, configured: str | None
) -> None:
    """The old key was dropped too early (or SECRETS_KEY removed): that firing fails for good with a
    clear message; nothing is sent, not even the ciphertext; other triggers are unaffected."""
    old = new_key()
    edits.replace(
        conn,
        WS,
        [
            Trigger(cron="* * * * * *", url=receiver.url + "/sealed", method="GET", headers=HEADERS),
            Trigger(cron="* * * * * *", url=receiver.url + "/plain", method="GET"),
        ],
        now=lambda: T,
        cipher=HeaderCipher(old),
    )
    settings = make_settings(redis_url, secrets_key=new_key() if configured else None)
    assert settings.delivery_max_retries == 3
    with caplog.at_level(logging.INFO, logger="scheduler_api"):
        fire(conn, settings)
    assert receiver.to("/sealed") == []
    assert len(receiver.to("/plain")) == 1
    rec = record(conn, 0)
    assert rec["outcome"] == "failed"
    (attempt,) = rec["attempts"]
    assert attempt["error"] == "secrets"
    assert attempt["status"] is None
    expected = "cannot be decrypted with SECRETS_KEY" if configured else "SECRETS_KEY is not set"
    assert expected in attempt["message"]
    assert conn.zcard(keys.RETRIES) == 0 and conn.hlen(keys.RETRY_DATA) == 0
    assert record(conn, 1)["outcome"] == "delivered"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(expected in line for line in errors), errors
    # Later firings do not retry it either; the definition stays as stored.
    fire(conn, settings, second=2)
    assert receiver.to("/sealed") == []
    assert record(conn, 0, second=2)["outcome"] == "failed"


@pytest.mark.parametrize(
    "raw",
    [
        "not-a-fernet-key",
        "c2hvcnQ=",  # base64, but 5 bytes
        "{valid},garbage-key-material",
        "{valid},{truncated}",
    ],
)
def test_invalid_secrets_key_fails_settings(raw: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    valid = new_key()
    raw = raw.replace("{valid}", valid).replace("{truncated}", valid[:30])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SECRETS_KEY", raw)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "SECRETS_KEY" in message
    for part in raw.split(","):
        assert part not in message
        assert part not in str(info.value.__cause__)


def test_valid_secrets_key_forms(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    a, b = new_key(), new_key()
    monkeypatch.setenv("SECRETS_KEY", f" {a} , {b} ")
    settings = load_settings()
    assert settings.secrets_key is not None
    assert a not in repr(settings)
    monkeypatch.setenv("SECRETS_KEY", "")
    assert load_settings().secrets_key is None


def stored_headers(conn: Redis, workspace_id: str, trigger_id: str = "0") -> dict[str, str]:
    raw = conn.hget(keys.workspace(workspace_id), trigger_id)
    assert raw is not None
    headers: dict[str, str] = json.loads(raw)["headers"]
    return headers


def set_stored_headers(conn: Redis, workspace_id: str, headers: dict[str, str], trigger_id: str = "0") -> None:
    """Overwrite the raw definition in Redis, as someone with write access to Redis could."""
    raw = conn.hget(keys.workspace(workspace_id), trigger_id)
    assert raw is not None
    data = json.loads(raw)
    data["headers"] = headers
    conn.hset(keys.workspace(workspace_id), trigger_id, json.dumps(data))


@pytest.mark.parametrize("moved_to", ["another workspace", "another header"])
def test_a_value_moved_to_another_workspace_or_header_fails_without_sending(
    conn: Redis, sealed_settings: Settings, key: str, receiver: Receiver, moved_to: str
) -> None:
    cipher = HeaderCipher(key)
    url = receiver.url + "/moved"
    # The victim's sealed values, written through storage in its own workspace.
    victim = Trigger(cron="0 0 1 1 *", url=url, method="GET", headers=HEADERS)  # not due in this test
    edits.replace(conn, "victim", [victim], now=lambda: T, cipher=cipher)
    stolen = stored_headers(conn, "victim")
    # The attacker's trigger in WS, then its stored values replaced by the copied ciphertexts.
    plain = {"Authorization": "mine", "X-Api-Key": "mine"}
    edits.replace(
        conn, WS, [Trigger(cron="* * * * * *", url=url, method="GET", headers=plain)], now=lambda: T, cipher=cipher
    )
    if moved_to == "another workspace":
        set_stored_headers(conn, WS, stolen)
    else:  # same workspace, values swapped between header names
        own = stored_headers(conn, WS)
        set_stored_headers(conn, WS, {"Authorization": own["X-Api-Key"], "X-Api-Key": own["Authorization"]})

    fire(conn, sealed_settings)
    assert receiver.to("/moved") == []
    rec = record(conn)
    assert rec["outcome"] == "failed"
    (attempt,) = rec["attempts"]
    assert attempt["error"] == "secrets" and attempt["status"] is None
    assert "cannot be decrypted with SECRETS_KEY for this workspace and header name" in attempt["message"]
    assert conn.zcard(keys.RETRIES) == 0

    # The API's PATCH says the stored values cannot be read (and shows none of them).
    with TestClient(create_app(sealed_settings)) as c:
        r = c.patch(
            f"/api/workspaces/{WS}/triggers/0",
            content=json.dumps({"method": "POST"}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["success"] is False
    assert body["details"][0]["path"] == "headers"
    assert "the stored values cannot be read" in body["details"][0]["message"]
    assert "s3cr3t" not in r.text and stolen["Authorization"] not in r.text


def test_binding_is_to_the_lower_cased_name_and_tampering_fails(key: str) -> None:
    cipher = HeaderCipher(key)
    sealed = cipher.seal({"Authorization": SECRET_1}, workspace_id=WS)
    value = sealed["Authorization"]
    assert SECRET_1 not in value
    assert cipher.open({"authorization": value}, workspace_id=WS) == {"authorization": SECRET_1}
    assert cipher.open({"AUTHORIZATION": value}, workspace_id=WS) == {"AUTHORIZATION": SECRET_1}
    assert sealed != cipher.seal({"Authorization": SECRET_1}, workspace_id=WS)  # fresh nonce per seal
    for wrong_ws in (WS + "2", WS.upper(), ""):
        with pytest.raises(SecretsError, match="for this workspace and header name"):
            cipher.open({"Authorization": value}, workspace_id=wrong_ws)
    with pytest.raises(SecretsError):
        cipher.open({"X-Authorization": value}, workspace_id=WS)
    head, _, body = value.rpartition(":")
    data = bytearray(base64.urlsafe_b64decode(body))
    data[-1] ^= 1  # one bit of the tag
    flipped = f"{head}:{base64.urlsafe_b64encode(bytes(data)).decode()}"
    for bad in (flipped, value[:20], PREFIX + "00000000:" + value.split(":", 2)[2]):
        with pytest.raises(SecretsError, match="cannot be decrypted with SECRETS_KEY"):
            cipher.open({"Authorization": bad}, workspace_id=WS)
    # Another key with the same workspace and name does not open it; a cipher holding both keys does.
    other = new_key()
    with pytest.raises(SecretsError, match="key is not configured"):
        HeaderCipher(other).open({"Authorization": value}, workspace_id=WS)
    assert HeaderCipher(f"{other},{key}").open(sealed, workspace_id=WS) == {"Authorization": SECRET_1}


def test_fernet_era_values_are_still_read_and_delivered(
    conn: Redis, sealed_settings: Settings, key: str, receiver: Receiver
) -> None:
    url = receiver.url + "/legacy"
    edits.replace(
        conn, WS, [Trigger(cron="* * * * * *", url=url, method="GET", headers={"X-Api-Key": "x"})], now=lambda: T
    )
    token = Fernet(key.encode()).encrypt(SECRET_2.encode()).decode()
    set_stored_headers(conn, WS, {"X-Api-Key": FERNET_PREFIX + token})
    fire(conn, sealed_settings)
    (got,) = receiver.to("/legacy")
    assert lower(got.headers)["x-api-key"] == SECRET_2
    assert record(conn)["outcome"] == "delivered"
