"""`scheduler_api.api.middleware`: the API-key check (401 without a valid key, 403 for a key restricted
to other workspaces, before the body is read; ``/health`` and ``/ready`` stay open), the body size
limit (413, by Content-Length or while streaming) and HEAD answered as GET.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.api import create_app
from scheduler_api.settings import Settings
from tests.support.asgi import post_without_reading_the_body
from tests.support.assertions import assert_error
from tests.support.factories import make_settings, trigger_body, triggers_url
from tests.support.redis_state import every_key, workspace_state

ADMIN = "admin-key-0123456789_abc"  # every workspace
TEAM = "team-key-0123456789-abcd"  # only workspaces whose id starts with "team-"
ACME = "acme-key-0123456789-abcd"  # exactly the workspace "acme"
API_KEYS = f"{ADMIN}, {TEAM}:team-*, {ACME}:acme"


TRIGGER = {"cron": "*/5 * * * *", "url": "https://example.com/hook", "method": "POST", "payload": {"a": 1}}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


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


def test_every_api_operation_needs_a_key(app: FastAPI, c: TestClient, conn: Redis) -> None:
    ops = api_operations(app)
    assert len(ops) >= 5  # replace, list, delete and the controls: all of them, not a hand-picked few
    before = every_key(conn)
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
    assert every_key(conn) == before


def test_the_right_key_is_let_through_everywhere(app: FastAPI, c: TestClient) -> None:
    for key in (ADMIN, TEAM):  # (api_operations name workspace team-a, which ACME does not serve)
        for method, path in api_operations(app):
            r = c.request(method, path, json=request_body(path), headers=bearer(key))
            assert r.status_code not in (401, 403), (key, method, path, r.text)
    # The scheme is case-insensitive, as RFC 9110 says.
    assert c.get(triggers_url("ws"), headers={"Authorization": f"bearer {ADMIN}"}).status_code == 200
    assert c.get(triggers_url("ws"), headers={"Authorization": f"BEARER {ADMIN}"}).status_code == 200


def test_a_valid_key_works_end_to_end(c: TestClient, conn: Redis) -> None:
    r = c.post(triggers_url("ws"), json={"triggers": [TRIGGER]}, headers=bearer(ADMIN))
    assert r.status_code == 200 and r.json()["added"] == 1
    assert c.get(triggers_url("ws"), headers=bearer(ADMIN)).json()["count"] == 1
    assert c.delete(triggers_url("ws"), headers=bearer(ADMIN)).json()["removed"] == 1


def test_health_ready_stay_open(c: TestClient) -> None:
    assert c.get("/health").status_code == 200
    assert c.get("/ready").status_code == 200
    assert c.get("/health", headers=bearer("nonsense-key-nonsense")).status_code == 200


def test_prefix_key_on_its_workspaces(c: TestClient) -> None:
    r = c.post(triggers_url("team-a"), json={"triggers": [TRIGGER]}, headers=bearer(TEAM))
    assert r.status_code == 200
    assert c.get(triggers_url("team-a"), headers=bearer(TEAM)).json()["count"] == 1
    # Endpoints without a workspace are not restricted by the prefix.
    assert c.post("/api/cron/preview", json={"cron": "* * * * *"}, headers=bearer(TEAM)).status_code == 200


def test_prefix_key_on_another_workspace_is_403(app: FastAPI, c: TestClient, conn: Redis) -> None:
    c.post(triggers_url("other"), json={"triggers": [TRIGGER]}, headers=bearer(ADMIN))
    before = every_key(conn)
    for ws in ("other", "team", "Team-a", "xteam-a"):
        for method, path in api_operations(app):
            if "/team-a/" not in path:
                continue
            path = path.replace("/team-a/", f"/{ws}/")
            r = c.request(method, path, json=request_body(path), headers=bearer(TEAM))
            body = assert_error(r, 403, "Forbidden")
            assert body["details"][0]["path"] == "workspace_id"
            assert "team-" in body["details"][0]["message"]
    assert every_key(conn) == before
    # The unrestricted key still serves it.
    assert c.get(triggers_url("other"), headers=bearer(ADMIN)).json()["count"] == 1


def test_an_exact_name_key_serves_that_workspace_only(c: TestClient, conn: Redis) -> None:
    r = c.post(triggers_url("acme"), json={"triggers": [TRIGGER]}, headers=bearer(ACME))
    assert r.status_code == 200 and r.json()["added"] == 1
    assert c.get(triggers_url("acme"), headers=bearer(ACME)).json()["count"] == 1
    c.post(triggers_url("acme2"), json={"triggers": [TRIGGER]}, headers=bearer(ADMIN))
    before = every_key(conn)
    for ws in ("acme2", "acme.x", "acmecorp-prod", "acme-", "Acme", "acm"):
        for r in (
            c.get(triggers_url(ws), headers=bearer(ACME)),
            c.post(triggers_url(ws), json={"triggers": [TRIGGER]}, headers=bearer(ACME)),
            c.delete(triggers_url(ws), headers=bearer(ACME)),
        ):
            body = assert_error(r, 403, "Forbidden")
            assert body["details"] == [
                {"path": "workspace_id", "message": "this key is restricted to workspaces named 'acme'"}
            ]
    assert every_key(conn) == before
    assert c.get(triggers_url("acme2"), headers=bearer(ADMIN)).json()["count"] == 1


def test_a_prefix_key_covers_its_separator_only(c: TestClient) -> None:
    """`team-*` serves `team-x` and `team-` itself, never `teamcorp` nor `team`."""
    for ws in ("team-x", "team-", "team-x.y"):
        r = c.post(triggers_url(ws), json={"triggers": [TRIGGER]}, headers=bearer(TEAM))
        assert r.status_code == 200, (ws, r.text)
        assert c.get(triggers_url(ws), headers=bearer(TEAM)).json()["count"] == 1
    for ws in ("teamcorp", "team", "team_x", "team.x"):
        body = assert_error(c.get(triggers_url(ws), headers=bearer(TEAM)), 403, "Forbidden")
        assert body["details"][0]["message"] == "this key is restricted to workspaces starting with 'team-'"


@pytest.mark.parametrize(
    "path",
    [
        "/api/workspaces/team-a/../other/triggers",
        "/api/workspaces/team-a%2F..%2Fother/triggers",
        "/api/workspaces/team-%2e%2e/other/triggers",
    ],
)
def test_path_tricks_do_not_widen_a_prefix_key(c: TestClient, conn: Redis, path: str) -> None:
    c.post(triggers_url("other"), json={"triggers": [TRIGGER]}, headers=bearer(ADMIN))
    before = every_key(conn)
    for method in ("GET", "POST", "DELETE"):
        r = c.request(method, path, json={"triggers": []}, headers=bearer(TEAM))
        assert r.status_code in (400, 403, 404), (method, path, r.status_code)
    assert every_key(conn) == before


def test_unauthenticated_bad_bodies_get_401(c: TestClient, conn: Redis) -> None:
    before = every_key(conn)
    raw_bodies = [b'{"triggers": [', b"\xff\xfe not json", b"[]", json.dumps({"triggers": [{"cron": 1}]}).encode()]
    for raw in raw_bodies:
        r = c.post(triggers_url("ws"), content=raw, headers={"Content-Type": "application/json"})
        assert_error(r, 401)
    big = json.dumps({"triggers": [dict(TRIGGER, payload={"pad": "x" * 10_000})]}).encode()
    assert_error(c.post(triggers_url("ws"), content=big, headers={"Content-Type": "application/json"}), 401)
    # The same oversized body streamed without Content-Length.
    chunks = iter([big[i : i + 1000] for i in range(0, len(big), 1000)])
    assert_error(c.post(triggers_url("ws"), content=chunks, headers={"Content-Type": "application/json"}), 401)
    assert_error(
        c.post(triggers_url("ws"), content=big, headers={"Content-Type": "application/json", **bearer("nope" * 5)}), 401
    )
    assert every_key(conn) == before
    # With a key the usual answers come back: 413 for the big body, 400 for the malformed one.
    assert_error(
        c.post(triggers_url("ws"), content=big, headers={"Content-Type": "application/json", **bearer(ADMIN)}), 413
    )
    r = c.post(
        triggers_url("ws"), content=b'{"triggers": [', headers={"Content-Type": "application/json", **bearer(ADMIN)}
    )
    assert_error(r, 400, "Malformed JSON body")


def test_unauthenticated_body_is_never_read(keyed_settings: Settings) -> None:
    """At the ASGI level: a 401 is sent without a single `receive()`."""
    status, body = post_without_reading_the_body(create_app(keyed_settings), triggers_url("ws"))
    assert status == 401 and body["error"] == "Unauthorized"


@pytest.fixture
def small_client(redis_url: str, conn: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(redis_url, max_body_bytes=4096))) as c:
        yield c


def big_body(size: int) -> bytes:
    body = json.dumps({"triggers": [trigger_body(0, payload={"pad": "x" * size})]}).encode()
    assert len(body) > size
    return body


def test_body_too_large_by_content_length(small_client: TestClient, conn: Redis) -> None:
    small_client.post(triggers_url("ws"), json={"triggers": [trigger_body(1)]})
    before = workspace_state(conn, "ws")
    r = small_client.post(triggers_url("ws"), content=big_body(5000), headers={"Content-Type": "application/json"})
    body = assert_error(r, 413, "Request body too large")
    assert body["details"] == [{"path": "body", "message": "must be at most 4096 bytes"}]
    assert workspace_state(conn, "ws") == before
    # Just under the limit is fine.
    ok = json.dumps({"triggers": [trigger_body(0, payload={"pad": "x" * 3800})]}).encode()
    assert len(ok) <= 4096
    assert (
        small_client.post(triggers_url("ws"), content=ok, headers={"Content-Type": "application/json"}).status_code
        == 200
    )


def test_body_too_large_chunked(small_client: TestClient, conn: Redis) -> None:
    small_client.post(triggers_url("ws"), json={"triggers": [trigger_body(1)]})
    before = workspace_state(conn, "ws")
    raw = big_body(10_000)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(raw), 1000):
            yield raw[i : i + 1000]

    r = small_client.post(triggers_url("ws"), content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    body = assert_error(r, 413, "Request body too large")
    assert body["details"] == [{"path": "body", "message": "must be at most 4096 bytes"}]
    assert workspace_state(conn, "ws") == before

    # A small chunked body is accepted.
    small = json.dumps({"triggers": [trigger_body(5)]}).encode()
    r = small_client.post(
        triggers_url("ws"), content=iter([small[:10], small[10:]]), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200 and r.json()["added"] == 1


def test_body_too_large_is_refused_before_reading_it(settings: Settings) -> None:
    """With a Content-Length over the limit the app answers 413 without reading the body at all."""
    status, body = post_without_reading_the_body(create_app(settings), triggers_url("ws"))
    assert status == 413 and body["error"] == "Request body too large"


def test_head_is_answered_on_get_routes(client: TestClient) -> None:
    client.post(triggers_url("ws"), json={"triggers": [trigger_body(0)]})
    get = client.get(triggers_url("ws"))
    head = client.head(triggers_url("ws"))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert client.head("/health").status_code == 200
    assert client.head("/api/cron/preview").status_code == 405  # POST only: as a GET would be
