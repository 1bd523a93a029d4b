"""``GET /api/workspaces/{ws}/signing-secret`` and ``POST .../signing-secret/rotate``: the workspace's
Standard Webhooks secret, created on first use, rotated with a window; scoped keys, Redis down."""

from __future__ import annotations

import base64
import time

from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.api import create_app
from scheduler_api.embedded_redis import free_port
from scheduler_api.storage import keys
from tests.support.assertions import assert_error
from tests.support.clock import parse
from tests.support.factories import make_settings

ADMIN = "admin-key-0123456789_abc"
KEY_A = "tenant-a-key-0123456789"
KEY_B = "tenant-b-key-0123456789"


def url(ws: str, rotate: bool = False) -> str:
    return f"/api/workspaces/{ws}/signing-secret" + ("/rotate" if rotate else "")


def test_get_creates_once_and_answers_the_same_secret(client: TestClient) -> None:
    before = time.time()
    first = client.get(url("ws"))
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) == {"success", "workspace_id", "secret", "created_at", "previous"}
    assert body["success"] is True and body["workspace_id"] == "ws" and body["previous"] is None
    assert body["secret"].startswith("whsec_")
    assert len(base64.b64decode(body["secret"].removeprefix("whsec_"))) == 32
    assert before - 1 <= parse(body["created_at"]) <= time.time() + 1
    assert client.get(url("ws")).json() == body
    assert client.get(url("other")).json()["secret"] != body["secret"]


def test_rotate_answers_a_new_secret_and_the_previous_one_s_expiry(client: TestClient) -> None:
    old = client.get(url("ws")).json()["secret"]
    now = time.time()
    r = client.post(url("ws", rotate=True))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["secret"] != old and body["secret"].startswith("whsec_")
    assert abs(parse(body["previous"]["expires_at"]) - (now + 86_400)) < 5
    assert client.get(url("ws")).json() == body


def test_rotation_window_from_the_setting(redis_url: str, conn: Redis) -> None:
    with TestClient(create_app(make_settings(redis_url, signing_rotation_seconds=0))) as c:
        c.get(url("ws"))
        assert c.post(url("ws", rotate=True)).json()["previous"] is None  # over at once


def test_a_key_of_another_workspace_gets_403(redis_url: str, conn: Redis) -> None:
    settings = make_settings(redis_url, api_keys=f"{ADMIN},{KEY_A}:ws-a,{KEY_B}:ws-b")
    with TestClient(create_app(settings)) as c:
        a = {"Authorization": f"Bearer {KEY_A}"}
        secret_a = c.get(url("ws-a"), headers=a).json()["secret"]
        for path in (url("ws-a"), url("ws-a", rotate=True)):
            r = c.request(
                "GET" if path.endswith("secret") else "POST", path, headers={"Authorization": f"Bearer {KEY_B}"}
            )
            assert_error(r, 403)
            assert secret_a not in r.text
        assert_error(c.get(url("ws-a")), 401)
        assert c.get(url("ws-a"), headers=a).json()["secret"] == secret_a  # nothing rotated
        assert c.get(url("ws-a"), headers={"Authorization": f"Bearer {ADMIN}"}).json()["secret"] == secret_a


def test_redis_down_is_503() -> None:
    dead = make_settings(f"redis://127.0.0.1:{free_port()}/0", redis_timeout_seconds=0.5)
    with TestClient(create_app(dead)) as c:
        assert_error(c.get(url("ws")), 503)
        assert_error(c.post(url("ws", rotate=True)), 503)


def test_stored_encrypted_when_secrets_key_is_set(redis_url: str, conn: Redis) -> None:
    settings = make_settings(redis_url, secrets_key=Fernet.generate_key().decode())
    with TestClient(create_app(settings)) as c:
        old = c.get(url("ws")).json()["secret"]
        new = c.post(url("ws", rotate=True)).json()["secret"]
        assert c.get(url("ws")).json()["secret"] == new
    raw = str(conn.hgetall(keys.signing("ws")))
    for secret in (old, new):
        assert secret.removeprefix("whsec_") not in raw
    assert raw.count("enc2:") == 2


def test_openapi_documents_both_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "get" in paths["/api/workspaces/{workspace_id}/signing-secret"]
    assert "post" in paths["/api/workspaces/{workspace_id}/signing-secret/rotate"]
