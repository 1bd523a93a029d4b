"""API keys (issue #6): every ``/api/...`` request needs ``Authorization: Bearer <key>``.

Missing or unknown key -> 401 in the usual error shape; a key restricted to a workspace-id prefix
used on another workspace -> 403; the key check runs before the body is read; ``/health`` and
``/ready`` stay open; production refuses to start without keys, development runs open and warns.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings, post_without_reading_the_body
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api import auth
from scheduler_api.api import create_app
from scheduler_api.embedded_redis import free_port
from scheduler_api.errors import RequestError, SettingsError
from scheduler_api.settings import Settings, load_settings

ADMIN = "admin-key-0123456789_abc"  # every workspace
TEAM = "team-key-0123456789-abcd"  # only workspaces whose id starts with "team-"
API_KEYS = f"{ADMIN}, {TEAM}:team-"
TRIGGER = {"cron": "*/5 * * * *", "url": "https://example.com/hook", "method": "POST", "payload": {"a": 1}}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def url(ws: str) -> str:
    return f"/api/workspaces/{ws}/triggers"


def assert_error(r: Any, status: int, error: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert body["success"] is False
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["details"], list)
    for d in body["details"]:
        assert set(d) == {"path", "message"}
    if error is not None:
        assert body["error"] == error
    return body


def stored(conn: Redis) -> dict[bytes, Any]:
    """Every trigger-related key: nothing may change on a refused request."""
    return {k: conn.dump(k) for k in sorted(conn.keys("sa:*"))}


@pytest.fixture
def keyed_settings(redis_url: str, conn: Redis) -> Settings:
    return make_settings(redis_url, api_keys=API_KEYS, max_body_bytes=4096)


@pytest.fixture
def app(keyed_settings: Settings) -> FastAPI:
    return create_app(keyed_settings)


@pytest.fixture
def c(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def api_operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, concrete path) of every documented /api operation, on workspace ``team-a``."""
    out = []
    for path, item in app.openapi()["paths"].items():
        if not path.startswith("/api/"):
            continue
        concrete = path.replace("{workspace_id}", "team-a").replace("{index}", "0")
        out += [(method.upper(), concrete) for method in item if method in ("get", "post", "put", "patch", "delete")]
    return out


def request_body(path: str) -> dict[str, Any] | None:
    if path.endswith("/preview"):
        return {"cron": "*/5 * * * *"}
    if path.endswith("/triggers"):
        return {"triggers": [TRIGGER]}
    return None


# --- 401 -----------------------------------------------------------------------------------------


def test_every_api_operation_needs_a_key(app: FastAPI, c: TestClient, conn: Redis) -> None:
    ops = api_operations(app)
    assert len(ops) >= 5  # replace, list, delete and the controls: all of them, not a hand-picked few
    before = stored(conn)
    for method, path in ops:
        for headers in (
            {},
            bearer("wrong-key-0123456789abcdef"),
            bearer(ADMIN + "x"),  # a longer key that starts with a valid one
            bearer(ADMIN[:-1]),  # a prefix of a valid key
            bearer(ADMIN.upper()),
            {"Authorization": ADMIN},  # no scheme
            {"Authorization": f"Basic {ADMIN}"},  # wrong scheme
            {"Authorization": "Bearer "},
            {"X-Api-Key": ADMIN},  # the key in another header
        ):
            r = c.request(method, path, json=request_body(path), headers=headers)
            body = assert_error(r, 401, "Unauthorized")
            assert body["details"] == [
                {"path": "headers.authorization", "message": "send Authorization: Bearer <api key>"}
            ]
            assert r.headers["www-authenticate"] == "Bearer"
            assert ADMIN not in r.text and TEAM not in r.text
    assert stored(conn) == before


def test_the_right_key_is_let_through_everywhere(app: FastAPI, c: TestClient) -> None:
    for key in (ADMIN, TEAM):
        for method, path in api_operations(app):
            r = c.request(method, path, json=request_body(path), headers=bearer(key))
            assert r.status_code not in (401, 403), (key, method, path, r.text)
    # The scheme is case-insensitive, as RFC 9110 says.
    assert c.get(url("ws"), headers={"Authorization": f"bearer {ADMIN}"}).status_code == 200
    assert c.get(url("ws"), headers={"Authorization": f"BEARER {ADMIN}"}).status_code == 200


def test_a_valid_key_works_end_to_end(c: TestClient, conn: Redis) -> None:
    r = c.post(url("ws"), json={"triggers": [TRIGGER]}, headers=bearer(ADMIN))
    assert r.status_code == 200 and r.json()["added"] == 1
    assert c.get(url("ws"), headers=bearer(ADMIN)).json()["count"] == 1
    assert c.delete(url("ws"), headers=bearer(ADMIN)).json()["removed"] == 1


def test_health_ready_stay_open(c: TestClient) -> None:
    assert c.get("/health").status_code == 200
    assert c.get("/ready").status_code == 200
    assert c.get("/health", headers=bearer("nonsense-key-nonsense")).status_code == 200


def test_keys_are_compared_in_constant_time_against_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """`hmac.compare_digest` for each configured key, whatever matches: no early exit, no `==`."""
    keys = auth.parse_api_keys(f"{ADMIN},{TEAM}:team-,third-key-0123456789abc")
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    for token in (ADMIN, TEAM, "wrong-key-0123456789abcdef", ""):
        calls.clear()
        try:
            auth.authorize(keys, f"Bearer {token}", "team-a")
        except RequestError:
            pass
        assert len(calls) == 3, token  # every key, even after the first one matched
        assert all(b == token.encode() for _, b in calls)


# --- 403: workspace-prefix keys -------------------------------------------------------------------


def test_prefix_key_on_its_workspaces(c: TestClient) -> None:
    r = c.post(url("team-a"), json={"triggers": [TRIGGER]}, headers=bearer(TEAM))
    assert r.status_code == 200
    assert c.get(url("team-a"), headers=bearer(TEAM)).json()["count"] == 1
    # Endpoints without a workspace are not restricted by the prefix.
    assert c.post("/api/cron/preview", json={"cron": "* * * * *"}, headers=bearer(TEAM)).status_code == 200


def test_prefix_key_on_another_workspace_is_403(app: FastAPI, c: TestClient, conn: Redis) -> None:
    c.post(url("other"), json={"triggers": [TRIGGER]}, headers=bearer(ADMIN))
    before = stored(conn)
    for ws in ("other", "team", "Team-a", "xteam-a"):
        for method, path in api_operations(app):
            if "/team-a/" not in path:
                continue
            path = path.replace("/team-a/", f"/{ws}/")
            r = c.request(method, path, json=request_body(path), headers=bearer(TEAM))
            body = assert_error(r, 403, "Forbidden")
            assert body["details"][0]["path"] == "workspace_id"
            assert "team-" in body["details"][0]["message"]
    assert stored(conn) == before
    # The unrestricted key still serves it.
    assert c.get(url("other"), headers=bearer(ADMIN)).json()["count"] == 1


@pytest.mark.parametrize(
    "path",
    [
        "/api/workspaces/team-a/../other/triggers",
        "/api/workspaces/team-a%2F..%2Fother/triggers",
        "/api/workspaces/team-%2e%2e/other/triggers",
    ],
)
def test_path_tricks_do_not_widen_a_prefix_key(c: TestClient, conn: Redis, path: str) -> None:
    c.post(url("other"), json={"triggers": [TRIGGER]}, headers=bearer(ADMIN))
    before = stored(conn)
    for method in ("GET", "POST", "DELETE"):
        r = c.request(method, path, json={"triggers": []}, headers=bearer(TEAM))
        assert r.status_code in (400, 403, 404), (method, path, r.status_code)
    assert stored(conn) == before


# --- the key check comes before the body ----------------------------------------------------------


def test_unauthenticated_bad_bodies_get_401(c: TestClient, conn: Redis) -> None:
    before = stored(conn)
    raw_bodies = [b'{"triggers": [', b"\xff\xfe not json", b"[]", json.dumps({"triggers": [{"cron": 1}]}).encode()]
    for raw in raw_bodies:
        r = c.post(url("ws"), content=raw, headers={"Content-Type": "application/json"})
        assert_error(r, 401)
    big = json.dumps({"triggers": [dict(TRIGGER, payload={"pad": "x" * 10_000})]}).encode()
    assert_error(c.post(url("ws"), content=big, headers={"Content-Type": "application/json"}), 401)
    # The same oversized body streamed without Content-Length.
    chunks = iter([big[i : i + 1000] for i in range(0, len(big), 1000)])
    assert_error(c.post(url("ws"), content=chunks, headers={"Content-Type": "application/json"}), 401)
    assert_error(
        c.post(url("ws"), content=big, headers={"Content-Type": "application/json", **bearer("nope" * 5)}), 401
    )
    assert stored(conn) == before
    # With a key the usual answers come back: 413 for the big body, 400 for the malformed one.
    assert_error(c.post(url("ws"), content=big, headers={"Content-Type": "application/json", **bearer(ADMIN)}), 413)
    r = c.post(url("ws"), content=b'{"triggers": [', headers={"Content-Type": "application/json", **bearer(ADMIN)})
    assert_error(r, 400, "Malformed JSON body")


def test_unauthenticated_body_is_never_read(keyed_settings: Settings) -> None:
    """At the ASGI level: a 401 is sent without a single `receive()`."""
    status, body = post_without_reading_the_body(create_app(keyed_settings), url("ws"))
    assert status == 401 and body["error"] == "Unauthorized"


# --- start-up rules ----------------------------------------------------------------------------------


def test_production_refuses_to_start_without_keys(redis_url: str) -> None:
    with pytest.raises(SettingsError, match="API_KEYS"):
        create_app(make_settings(redis_url, app_env="production"))
    with pytest.raises(SettingsError, match="API_KEYS"):
        create_app(make_settings(redis_url, app_env="production", api_keys=" , "))
    create_app(make_settings(redis_url, app_env="production", api_keys=ADMIN))  # with a key it starts


def _clean_env(**values: str) -> dict[str, str]:
    names = {n.upper() for n in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(PORT=str(free_port()), HOST="127.0.0.1", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    env.update(values)
    return env


def test_serve_in_production_without_keys_exits_naming_api_keys(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scheduler_api.cli", "serve"],
        env=_clean_env(APP_ENV="production"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "API_KEYS" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Uvicorn running" not in result.stderr + result.stdout


def test_development_without_keys_runs_open_and_warns(
    redis_url: str, conn: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="scheduler_api"):
        app = create_app(make_settings(redis_url, app_env="development", api_keys=""))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "API_KEYS" in r.getMessage()]
    assert len(warnings) == 1
    assert "OPEN" in warnings[0].getMessage()
    with TestClient(app) as c:
        assert c.post(url("ws"), json={"triggers": [TRIGGER]}).status_code == 200
        assert c.get(url("ws")).json()["count"] == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scheduler_api"):
        create_app(make_settings(redis_url, api_keys=ADMIN))
    assert not [r for r in caplog.records if "API_KEYS" in r.getMessage()]


# --- API_KEYS values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "sh0rt-secret-k",  # 14 characters
        "has space in it 0123456789",
        "bad!chars!0123456789abcdef",
        "ünicode-key-0123456789abc",
        f"{ADMIN},sh0rt-secret-k",  # one bad entry among good ones
        f"{ADMIN}:bad prefix!",
    ],
)
def test_invalid_api_keys_fail_settings_without_echoing_them(
    raw: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("API_KEYS", raw)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "API_KEYS" in message
    for part in [p for chunk in raw.split(",") for p in chunk.split(":")]:
        assert part.strip() not in message
        assert part.strip() not in str(info.value.__cause__)  # nor in a traceback's chained error


def test_api_keys_parsing() -> None:
    keys = auth.parse_api_keys(f" {ADMIN} ,, {TEAM}:team- ,")
    assert keys == [auth.ApiKey(ADMIN), auth.ApiKey(TEAM, "team-")]
    assert auth.parse_api_keys("") == []
    assert ADMIN not in repr(make_settings("redis://x", api_keys=ADMIN))


def test_serve_with_an_invalid_key_exits_without_echoing_it(tmp_path: Path) -> None:
    bad = "sh0rt-secret-k"
    result = subprocess.run(
        [sys.executable, "-m", "scheduler_api.cli", "serve"],
        env=_clean_env(API_KEYS=f"{ADMIN},{bad}"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "API_KEYS" in result.stderr and "entry 2" in result.stderr
    assert bad not in result.stderr + result.stdout and ADMIN not in result.stderr + result.stdout
