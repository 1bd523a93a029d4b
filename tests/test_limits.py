"""Limits and reserved headers (issue #6): each limit is a setting, each breach a clear 4xx with the
path of the offending field, and a refused request changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import make_settings
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.api import create_app
from scheduler_api.errors import SettingsError
from scheduler_api.settings import Settings, load_settings
from scheduler_api.storage import keys

WS = "ws"
URL = f"/api/workspaces/{WS}/triggers"
BASE = {"cron": "*/5 * * * *", "url": "https://example.com/hook", "method": "POST"}
LIMITS = {
    "max_body_bytes": 2048,
    "max_triggers_per_workspace": 3,
    "max_payload_bytes": 64,
    "max_headers": 2,
    "max_header_bytes": 32,
    "max_url_length": 64,
}


def state(conn: Redis) -> tuple[Any, Any]:
    return conn.hgetall(keys.workspace(WS)), conn.zrange(keys.SCHEDULE, 0, -1, withscores=True)


@pytest.fixture
def c(redis_url: str, conn: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(redis_url, **LIMITS))) as client:
        client.post(URL, json={"triggers": [BASE]})  # something to keep
        yield client


def refused(c: TestClient, conn: Redis, body: Any, status: int = 400, **kw: Any) -> dict[str, Any]:
    before = state(conn)
    r = c.post(URL, json=body, **kw) if "content" not in kw else c.post(URL, **kw)
    assert r.status_code == status, r.text
    out: dict[str, Any] = r.json()
    assert out["success"] is False and out["error"] and out["details"]
    assert state(conn) == before
    return out


def paths(body: dict[str, Any]) -> list[str]:
    return [d["path"] for d in body["details"]]


def payload_of_size(n: int) -> dict[str, str]:
    """A payload whose compact JSON is exactly `n` bytes: {"p":"xxx"} is 8 + len bytes."""
    return {"p": "x" * (n - 8)}


def test_body_size(c: TestClient, conn: Redis) -> None:
    def body_of(n: int) -> bytes:
        raw = json.dumps({"triggers": [BASE], "pad": ""}).encode()
        return json.dumps({"triggers": [BASE], "pad": "x" * (n - len(raw))}).encode()

    headers = {"Content-Type": "application/json"}
    out = refused(c, conn, None, 413, content=body_of(2049), headers=headers)
    assert out["error"] == "Request body too large"
    assert out["details"] == [{"path": "body", "message": "must be at most 2048 bytes"}]
    ok = body_of(2048)
    assert len(ok) == 2048
    r = c.post(URL, content=ok, headers=headers)
    assert r.status_code == 400 and paths(r.json()) == ["pad"]  # read and validated, not refused as too large


def test_triggers_per_workspace(c: TestClient, conn: Redis) -> None:
    out = refused(c, conn, {"triggers": [BASE] * 4})
    assert out["details"] == [{"path": "triggers", "message": "at most 3 per workspace, got 4"}]
    assert c.post(URL, json={"triggers": [BASE] * 3}).json()["added"] == 3


def test_payload_size(c: TestClient, conn: Redis) -> None:
    big = dict(BASE, payload=payload_of_size(65))
    out = refused(c, conn, {"triggers": [BASE, big]})
    assert paths(out) == ["triggers[1].payload"]
    assert "at most 64 bytes" in out["details"][0]["message"]
    assert c.post(URL, json={"triggers": [dict(BASE, payload=payload_of_size(64))]}).status_code == 200


def test_number_of_headers(c: TestClient, conn: Redis) -> None:
    three = {"X-A": "1", "X-B": "2", "X-C": "3"}
    out = refused(c, conn, {"triggers": [dict(BASE, headers=three)]})
    assert paths(out) == ["triggers[0].headers"]
    assert "at most 2 headers" in out["details"][0]["message"]
    assert c.post(URL, json={"triggers": [dict(BASE, headers={"X-A": "1", "X-B": "2"})]}).status_code == 200


def test_size_of_a_header(c: TestClient, conn: Redis) -> None:
    name = "X-Token"  # 7 bytes: a value of 25 fills the 32 exactly
    out = refused(c, conn, {"triggers": [dict(BASE, headers={name: "v" * 26})]})
    assert paths(out) == ["triggers[0].headers.X-Token"]
    assert "at most 32 bytes" in out["details"][0]["message"]
    assert "v" * 26 not in json.dumps(out)
    assert c.post(URL, json={"triggers": [dict(BASE, headers={name: "v" * 25})]}).status_code == 200


def test_url_length(c: TestClient, conn: Redis) -> None:
    def url_of(n: int) -> str:
        start = "https://example.com/"
        return start + "a" * (n - len(start))

    out = refused(c, conn, {"triggers": [dict(BASE, url=url_of(65))]})
    assert paths(out) == ["triggers[0].url"]
    assert "at most 64 characters" in out["details"][0]["message"]
    assert c.post(URL, json={"triggers": [dict(BASE, url=url_of(64))]}).status_code == 200


def test_every_broken_limit_is_reported_at_once(c: TestClient, conn: Redis) -> None:
    bad = [
        dict(BASE, url="https://example.com/" + "a" * 100),
        dict(BASE, payload=payload_of_size(100)),
        dict(BASE, headers={"X-A": "1", "X-B": "2", "X-Long-Header-Name": "v" * 40}),
    ]
    out = refused(c, conn, {"triggers": bad})
    assert paths(out) == [
        "triggers[0].url",
        "triggers[1].payload",
        "triggers[2].headers",
        "triggers[2].headers.X-Long-Header-Name",
    ]


def test_default_url_ceiling(client: TestClient, conn: Redis) -> None:
    long_url = "https://example.com/" + "a" * 2029
    assert len(long_url) == 2049
    r = client.post(URL, json={"triggers": [dict(BASE, url=long_url)]})
    assert r.status_code == 400 and paths(r.json()) == ["triggers[0].url"]
    assert client.post(URL, json={"triggers": [dict(BASE, url=long_url[:-1])]}).status_code == 200


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("MAX_BODY_BYTES", "4096", "max_body_bytes"),
        ("MAX_TRIGGERS_PER_WORKSPACE", "7", "max_triggers_per_workspace"),
        ("MAX_PAYLOAD_BYTES", "100", "max_payload_bytes"),
        ("MAX_HEADERS", "0", "max_headers"),
        ("MAX_HEADER_BYTES", "50", "max_header_bytes"),
        ("MAX_URL_LENGTH", "100", "max_url_length"),
    ],
)
def test_limits_are_settings(name: str, value: str, field: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    assert getattr(load_settings(), field) == int(value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_URL_LENGTH", "4096"),  # can only lower the 2048 ceiling
        ("MAX_URL_LENGTH", "0"),
        ("MAX_BODY_BYTES", "10"),
        ("MAX_HEADERS", "-1"),
        ("MAX_PAYLOAD_BYTES", "big"),
        ("MAX_TRIGGERS_PER_WORKSPACE", "0"),
    ],
)
def test_bad_limits_fail_settings(name: str, value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_no_headers_allowed(redis_url: str, conn: Redis) -> None:
    with TestClient(create_app(make_settings(redis_url, max_headers=0))) as c:
        r = c.post(URL, json={"triggers": [dict(BASE, headers={"X-A": "1"})]})
        assert r.status_code == 400 and paths(r.json()) == ["triggers[0].headers"]
        assert c.post(URL, json={"triggers": [dict(BASE, headers={})]}).status_code == 200


# --- reserved and duplicate header names ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "X-Scheduler-Attempt",
        "X-Scheduler-Workspace",
        "x-scheduler-signature",
        "X-SCHEDULER-ANYTHING",
        "x-Scheduler-new",
        "Idempotency-Key",
        "IDEMPOTENCY-KEY",
        "Host",
        "host",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Upgrade",
        "Expect",
    ],
)
def test_reserved_header_names(c: TestClient, conn: Redis, name: str) -> None:
    out = refused(c, conn, {"triggers": [BASE, dict(BASE, headers={"X-Fine": "1", name: "v"})]})
    assert paths(out) == ["triggers[1].headers"]
    assert "reserved" in out["details"][0]["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Token": "a", "x-token": "b"},
        {"Authorization": "a", "AUTHORIZATION": "b"},
        {"X-A": "1", "x-a": "1"},
    ],
)
def test_duplicate_header_names_differing_in_case(c: TestClient, conn: Redis, headers: dict[str, str]) -> None:
    out = refused(c, conn, {"triggers": [dict(BASE, headers=headers)]})
    assert paths(out) == ["triggers[0].headers"]
    assert "twice" in out["details"][0]["message"]


def test_allowed_header_names(c: TestClient) -> None:
    ok = {"Authorization": "Bearer x", "X-Schedule": "1", "X-Scheduler": "1", "Content-Type": "application/json"}
    assert c.post(URL, json={"triggers": [dict(BASE, headers=ok)]}).status_code == 400  # 4 > MAX_HEADERS=2
    for name in ok:
        assert c.post(URL, json={"triggers": [dict(BASE, headers={name: "v"})]}).status_code == 200, name


@pytest.mark.parametrize("value", ["é", "caf\u00e9", "✓", "a\x01b", "a\x7fb", "a\x1bb", "a\rb", "a\nb", "a\x00b"])
def test_header_values_the_client_cannot_send_are_refused(c: TestClient, conn: Redis, value: str) -> None:
    out = refused(c, conn, {"triggers": [dict(BASE, headers={"X-Value": value})]})
    assert paths(out) == ["triggers[0].headers"]


def test_header_values_with_spaces_and_tabs_are_fine(client: TestClient) -> None:
    ok = {"X-Value": " a\tb  !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ "}
    assert client.post(URL, json={"triggers": [dict(BASE, headers=ok)]}).status_code == 200


@pytest.fixture
def settings(redis_url: str, conn: Redis) -> Settings:
    return make_settings(redis_url)
