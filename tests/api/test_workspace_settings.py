"""`scheduler_api.api.routes.settings`: a workspace's settings document through HTTP: defaults,
validation (paths in details), host normalisation, the SSRF guard on the alert url, ETag and
If-Match, and key scopes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.api import create_app
from scheduler_api.storage import workspace_settings
from tests.support.assertions import assert_error
from tests.support.factories import make_settings

URL = "/api/workspaces/ws/settings"
DEFAULTS = {"alerts": None, "auto_disable_after_failures": None, "rate_limits": []}
GOOD: dict[str, Any] = {
    "alerts": {"url": "https://alerts.example.com/hook", "after_failures": 3},
    "auto_disable_after_failures": 10,
    "rate_limits": [{"host": "API.Example.com", "per_second": 10, "concurrency": 5}],
}


def paths(response: Any) -> list[str]:
    return [d["path"] for d in assert_error(response, 400)["details"]]


def test_defaults_then_a_write_round_trips_with_normalised_hosts(client: TestClient, conn: Redis) -> None:
    r = client.get(URL)
    assert r.status_code == 200 and r.json() == {"success": True, "workspace_id": "ws", **DEFAULTS}
    assert r.headers["etag"] == '"0"'
    body = {**GOOD, "rate_limits": [*GOOD["rate_limits"], {"host": "Bücher.example", "concurrency": 2}]}
    r = client.put(URL, json=body)
    assert r.status_code == 200, r.text
    stored = r.json()
    assert stored["alerts"] == GOOD["alerts"] and stored["auto_disable_after_failures"] == 10
    assert stored["rate_limits"] == [
        {"host": "api.example.com", "per_second": 10.0, "concurrency": 5},
        {"host": "xn--bcher-kva.example", "per_second": None, "concurrency": 2},
    ]
    etag = r.headers["etag"]
    assert etag != '"0"'
    again = client.get(URL)
    assert again.json() == stored and again.headers["etag"] == etag
    assert client.get("/api/workspaces/other/settings").json()["alerts"] is None  # per workspace
    assert conn.hget("sa:wsconf:ws", "alert_after") == b"3" and conn.hget("sa:wsconf:ws", "disable_after") == b"10"
    # Back to the defaults: the record script sees no thresholds.
    assert client.put(URL, json={}).json() == {"success": True, "workspace_id": "ws", **DEFAULTS}
    assert conn.hmget("sa:wsconf:ws", ["alert_url", "alert_after", "disable_after"]) == [None, None, None]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"alert": {}}, ["alert"]),  # a typo: unknown fields are refused
        ({"alerts": {"url": "https://a.example", "after": 3}}, ["alerts.after"]),
        ({"alerts": {"url": "ftp://a.example"}}, ["alerts.url"]),
        ({"alerts": {"url": "https://a.example", "after_failures": 0}}, ["alerts.after_failures"]),
        ({"auto_disable_after_failures": 0}, ["auto_disable_after_failures"]),
        ({"auto_disable_after_failures": "3"}, ["auto_disable_after_failures"]),
        ({"rate_limits": [{"host": "a.example", "per_second": 0}]}, ["rate_limits[0].per_second"]),
        ({"rate_limits": [{"host": "a.example", "concurrency": 0}]}, ["rate_limits[0].concurrency"]),
        ({"rate_limits": [{"host": "a.example:8080", "per_second": 1}]}, ["rate_limits[0].host"]),
        ({"rate_limits": [{"host": "https://a.example/x", "per_second": 1}]}, ["rate_limits[0].host"]),
        ({"rate_limits": [{"host": "a.example"}]}, ["rate_limits[0]"]),
        (
            {"rate_limits": [{"host": "A.example", "per_second": 1}, {"host": "a.EXAMPLE", "concurrency": 1}]},
            ["rate_limits[1].host"],
        ),
        ({"rate_limits": [{"host": f"h{i}.example", "per_second": 1} for i in range(101)]}, ["rate_limits"]),
    ],
)
def test_invalid_settings_are_refused_with_the_path(
    client: TestClient, conn: Redis, body: dict[str, Any], expected: list[str]
) -> None:
    assert paths(client.put(URL, json=body)) == expected
    assert not conn.exists("sa:wsconf:ws")  # nothing written


def test_at_most_100_rate_limits_and_ipv6_hosts(client: TestClient) -> None:
    limits = [{"host": f"h{i}.example", "per_second": 1} for i in range(99)] + [{"host": "[::1]", "concurrency": 1}]
    r = client.put(URL, json={"rate_limits": limits})
    assert r.status_code == 200, r.text
    assert len(r.json()["rate_limits"]) == 100 and r.json()["rate_limits"][-1]["host"] == "::1"


def test_the_alert_url_goes_through_the_ssrf_guard(redis_url: str, conn: Redis) -> None:
    with TestClient(create_app(make_settings(redis_url, allow_private_targets=False))) as c:
        for url in ("http://127.0.0.1:9/alerts", "http://10.1.2.3/alerts", "http://[::1]/a"):
            body = assert_error(c.put(URL, json={"alerts": {"url": url}}), 400)
            assert body["details"][0]["path"] == "alerts.url"
            assert "are not allowed" in body["details"][0]["message"]
        assert c.put(URL, json={"alerts": {"url": "https://alerts.example.com/x"}}).status_code == 200


def test_if_match_is_honoured(client: TestClient) -> None:
    first = client.put(URL, json=GOOD, headers={"If-Match": '"0"'})  # the defaults' ETag
    assert first.status_code == 200
    etag = first.headers["etag"]
    stale = client.put(URL, json={}, headers={"If-Match": '"0"'})
    assert assert_error(stale, 412)["details"][0]["path"] == "headers.if-match"
    assert client.get(URL).json()["alerts"] == GOOD["alerts"]  # unchanged
    assert client.put(URL, json={}, headers={"If-Match": 'W/"' + etag.strip('"') + '"'}).status_code == 412
    assert client.put(URL, json={}, headers={"If-Match": etag}).status_code == 200
    assert client.put(URL, json=GOOD, headers={"If-Match": "*"}).status_code == 200


@pytest.fixture
def scoped_client(redis_url: str, conn: Redis) -> Iterator[TestClient]:
    keys = "admin-key-0123456789_abc,team-key-0123456789-abcd:team-*"
    with TestClient(create_app(make_settings(redis_url, api_keys=keys))) as c:
        yield c


def test_a_key_of_another_scope_gets_403(scoped_client: TestClient, conn: Redis) -> None:
    team = {"Authorization": "Bearer team-key-0123456789-abcd"}
    assert scoped_client.put("/api/workspaces/team-a/settings", json=GOOD, headers=team).status_code == 200
    for method in ("get", "put"):
        kwargs: dict[str, Any] = {"headers": team} | ({"json": GOOD} if method == "put" else {})
        assert_error(getattr(scoped_client, method)(URL, **kwargs), 403)
    assert_error(scoped_client.get(URL), 401)
    assert workspace_settings.read(conn, "ws")[1] == workspace_settings.EMPTY_ETAG


def test_redis_down_is_503(redis_url: str) -> None:
    settings = make_settings("redis://127.0.0.1:1/0", redis_timeout_seconds=0.2)
    with TestClient(create_app(settings)) as c:
        assert_error(c.get(URL), 503)
        assert_error(c.put(URL, json=GOOD), 503)
