"""`scheduler_api.api.routes.triggers` refusing a replace: validation (every invalid trigger reported
with its path), limits (each a setting), reserved and duplicate headers. A refused request changes
nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.api import create_app
from tests.support.api import post_triggers
from tests.support.assertions import assert_error
from tests.support.factories import TRIGGERS, WS, make_settings, trigger_body, triggers_url
from tests.support.redis_state import workspace_state

INVALID_CASES = [
    # (index, changes to a valid trigger, expected details path, fragment of the message)
    (1, {"cron": "0 0 1 1 * 2030 1"}, "triggers[1].cron", "5 fields"),
    (1, {"cron": "H * * * *"}, "triggers[1].cron", "hashed"),
    (0, {"cron": "R 0 * * *"}, "triggers[0].cron", "hashed"),
    (2, {"cron": "0 0 31 2 *"}, "triggers[2].cron", "never matches"),
    (1, {"cron": "every minute please"}, "triggers[1].cron", ""),
    (1, {"cron": 5}, "triggers[1].cron", "string"),
    (1, {"cron": None}, "triggers[1].cron", "exactly one of cron and at is required"),
    (1, {"url": "ftp://files.example.com/x"}, "triggers[1].url", "http"),
    (2, {"url": "/relative/path"}, "triggers[2].url", "http"),
    (1, {"url": "https://"}, "triggers[1].url", "host"),
    (1, {"url": "https://exa mple.com/"}, "triggers[1].url", "spaces"),
    (1, {"url": "https://example.com/\x07"}, "triggers[1].url", "control"),
    (1, {"url": "https://example.com/" + "a" * 2100}, "triggers[1].url", "2048"),
    (1, {"url": 12}, "triggers[1].url", "string"),
    (1, {"method": "HEAD"}, "triggers[1].method", "GET"),
    (0, {"method": "options"}, "triggers[0].method", "GET"),
    (1, {"method": 1}, "triggers[1].method", ""),
    (1, {"payload": [1, 2]}, "triggers[1].payload", ""),
    (1, {"payload": "a string"}, "triggers[1].payload", ""),
    (1, {"payload": 3}, "triggers[1].payload", ""),
    (1, {"headers": {"X-Number": 1}}, "triggers[1].headers.X-Number", "string"),
    (1, {"headers": {"Bad Name": "v"}}, "triggers[1].headers", "header name"),
    (1, {"headers": {"X-Ok": "a\r\nInjected: 1"}}, "triggers[1].headers", "CR"),
    (1, {"headers": ["X-A"]}, "triggers[1].headers", ""),
    (1, {"header": {"X-A": "b"}}, "triggers[1].header", "Extra inputs"),
    (2, {"Method": "GET"}, "triggers[2].Method", "Extra inputs"),
]


@pytest.mark.parametrize(("index", "changes", "path", "fragment"), INVALID_CASES)
def test_an_invalid_trigger_rejects_the_whole_request(
    client: TestClient, conn: Redis, index: int, changes: dict[str, Any], path: str, fragment: str
) -> None:
    client.post(triggers_url("ws"), json={"triggers": [trigger_body(100), trigger_body(101)]})
    api_before = client.get(triggers_url("ws")).json()
    redis_before = workspace_state(conn, "ws")

    triggers = [trigger_body(i) for i in range(3)]
    triggers[index] = {**triggers[index], **changes}
    body = assert_error(client.post(triggers_url("ws"), json={"triggers": triggers}), 400)
    assert [d["path"] for d in body["details"]] == [path]
    assert fragment in body["details"][0]["message"]

    assert client.get(triggers_url("ws")).json() == api_before
    assert workspace_state(conn, "ws") == redis_before


def test_missing_field_path(client: TestClient) -> None:
    t = trigger_body(0)
    del t["url"]
    body = assert_error(client.post(triggers_url("ws"), json={"triggers": [trigger_body(1), t]}), 400)
    assert body["details"] == [{"path": "triggers[1].url", "message": "Field required"}]


def test_every_invalid_trigger_is_reported(client: TestClient, conn: Redis) -> None:
    triggers = [trigger_body(0, url="ftp://x"), trigger_body(1), trigger_body(2, method="HEAD", cron="H * * * *")]
    body = assert_error(client.post(triggers_url("ws"), json={"triggers": triggers}), 400, "Invalid request")
    assert sorted(d["path"] for d in body["details"]) == ["triggers[0].url", "triggers[2].cron", "triggers[2].method"]
    assert client.get(triggers_url("ws")).json()["count"] == 0
    assert workspace_state(conn, "ws") == ({}, [])


@pytest.mark.parametrize(
    "body",
    [
        {"triggers": [trigger_body(0)], "workspace": "x"},
        {},
        {"triggers": "nope"},
        {"triggers": {"0": trigger_body(0)}},
        {"triggers": None},
        [trigger_body(0)],
    ],
)
def test_invalid_body_shapes(client: TestClient, conn: Redis, body: Any) -> None:
    client.post(triggers_url("ws"), json={"triggers": [trigger_body(9)]})
    before = workspace_state(conn, "ws")
    result = assert_error(client.post(triggers_url("ws"), json=body), 400)
    assert result["details"]
    assert workspace_state(conn, "ws") == before


def test_method_is_accepted_in_any_case_and_upper_cased(client: TestClient) -> None:
    methods = ["get", "Post", "pUT", "patch", "DELETE"]
    r = client.post(triggers_url("ws"), json={"triggers": [trigger_body(i, method=m) for i, m in enumerate(methods)]})
    assert [j["method"] for j in r.json()["jobs"]] == ["GET", "POST", "PUT", "PATCH", "DELETE"]
    assert [j["method"] for j in client.get(triggers_url("ws")).json()["jobs"]] == [
        "GET",
        "POST",
        "PUT",
        "PATCH",
        "DELETE",
    ]


def test_accepted_cron_forms(client: TestClient) -> None:
    crons = ["*/15 * * * *", "*/10 * * * * *", "@hourly", "@daily", "@weekly", "0 9 * JAN-MAR MON-FRI"]
    r = client.post(triggers_url("ws"), json={"triggers": [trigger_body(i, cron=c) for i, c in enumerate(crons)]})
    assert r.status_code == 200, r.text
    assert [j["cron"] for j in r.json()["jobs"]] == crons


@pytest.mark.parametrize("ws", ["a", "A.b_c-9", "x" * 128])
def test_valid_workspace_ids(client: TestClient, ws: str) -> None:
    r = client.post(triggers_url(ws), json={"triggers": [trigger_body(0)]})
    assert r.status_code == 200
    assert r.json()["jobs"][0]["jobId"] == f"{ws}:0"
    assert client.get(triggers_url(ws)).json()["count"] == 1


@pytest.mark.parametrize("ws", ["x" * 129, "a:b", "a%20b", "a%0A", "%C3%A9t%C3%A9", "a*b", "a%2Cb"])
def test_invalid_workspace_ids(client: TestClient, conn: Redis, ws: str) -> None:
    for method in ("POST", "GET", "DELETE"):
        kwargs: dict[str, Any] = {"json": {"triggers": [trigger_body(0)]}} if method == "POST" else {}
        body = assert_error(client.request(method, triggers_url(ws), **kwargs), 400)
        assert [d["path"] for d in body["details"]] == ["workspace_id"]
    assert conn.keys("sa:*") == []


def test_too_many_triggers(redis_url: str, conn: Redis) -> None:
    with TestClient(create_app(make_settings(redis_url, max_triggers_per_workspace=3))) as c:
        assert c.post(triggers_url("ws"), json={"triggers": [trigger_body(i) for i in range(3)]}).status_code == 200
        before = workspace_state(conn, "ws")
        body = assert_error(c.post(triggers_url("ws"), json={"triggers": [trigger_body(i) for i in range(4)]}), 400)
        assert body["details"][0]["path"] == "triggers"
        assert "3" in body["details"][0]["message"]
        assert workspace_state(conn, "ws") == before
        assert c.get(triggers_url("ws")).json()["count"] == 3


@pytest.mark.parametrize(
    "payload",
    [
        '{"k": "\\ud800"}',  # an unpaired surrogate: not Unicode, and Redis's cjson cannot read it back
        '{"\\udfff": 1}',
        '{"a": NaN}',
        '{"b": Infinity, "c": -Infinity}',
    ],
)
def test_a_payload_that_is_not_standard_json_is_refused(client: TestClient, conn: Redis, payload: str) -> None:
    client.post(triggers_url("ws"), json={"triggers": [trigger_body(0)]})
    before = conn.hgetall("sa:ws:ws")
    body = '{"triggers": [{"cron": "* * * * * *", "url": "https://a.example.com/", "method": "POST", "payload": %s}]}'
    r = client.post(triggers_url("ws"), content=body % payload, headers={"Content-Type": "application/json"})
    details = assert_error(r, 400)["details"]
    assert [d["path"] for d in details] == ["triggers[0].payload"]
    assert "standard JSON" in details[0]["message"]
    assert conn.hgetall("sa:ws:ws") == before


@pytest.mark.parametrize(
    "bad_url", ["http://[v1.fe]/x", "http://[::1/x", "http://exa mple.com/", "https://a.example.com\\@b.example.com/"]
)
def test_an_url_the_worker_could_not_send_is_refused(client: TestClient, bad_url: str) -> None:
    r = client.post(triggers_url("ws"), json={"triggers": [trigger_body(0, url=bad_url)]})
    assert [d["path"] for d in assert_error(r, 400)["details"]] == ["triggers[0].url"]


def test_a_cron_expression_has_a_length_limit(client: TestClient) -> None:
    long_cron = "0 " + ",".join(["1"] * 200) + " * * *"
    r = client.post(triggers_url("ws"), json={"triggers": [trigger_body(0, cron=long_cron)]})
    details = assert_error(r, 400)["details"]
    assert details[0]["path"] == "triggers[0].cron" and "at most 256 characters" in details[0]["message"]
    assert_error(client.post("/api/cron/preview", json={"cron": long_cron}), 400)


def test_invalid_timezone_is_400_with_its_path_and_nothing_is_stored(client: TestClient, conn: Redis) -> None:
    assert post_triggers(client, "ws", TRIGGERS[:1]).status_code == 200
    stored = conn.hgetall("sa:ws:ws")
    for bad, message in (("Mars/Olympus", "time zone"), ("", "time zone"), (5, "string"), (["UTC"], "string")):
        triggers = [TRIGGERS[2], {**TRIGGERS[2], "timezone": bad}]
        details = assert_error(post_triggers(client, "ws", triggers), 400)["details"]
        assert [d["path"] for d in details] == ["triggers[1].timezone"], details
        assert message in details[0]["message"]
    details = assert_error(post_triggers(client, "ws", [{**TRIGGERS[2], "enabled": "yes"}]), 400)["details"]
    assert [d["path"] for d in details] == ["triggers[0].enabled"]
    assert conn.hgetall("sa:ws:ws") == stored


URL = f"/api/workspaces/{WS}/triggers"


HOOK = {"cron": "*/5 * * * *", "url": "https://example.com/hook", "method": "POST"}


LIMITS = {
    "max_body_bytes": 2048,
    "max_triggers_per_workspace": 3,
    "max_payload_bytes": 64,
    "max_headers": 2,
    "max_header_bytes": 32,
    "max_url_length": 64,
}


@pytest.fixture
def limited(redis_url: str, conn: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(redis_url, **LIMITS))) as client:
        client.post(URL, json={"triggers": [HOOK]})  # something to keep
        yield client


def refused(limited: TestClient, conn: Redis, body: Any, status: int = 400, **kw: Any) -> dict[str, Any]:
    before = workspace_state(conn, WS)
    r = limited.post(URL, json=body, **kw) if "content" not in kw else limited.post(URL, **kw)
    assert r.status_code == status, r.text
    out: dict[str, Any] = r.json()
    assert out["success"] is False and out["error"] and out["details"]
    assert workspace_state(conn, WS) == before
    return out


def paths(body: dict[str, Any]) -> list[str]:
    return [d["path"] for d in body["details"]]


def payload_of_size(n: int) -> dict[str, str]:
    """A payload whose compact JSON is exactly `n` bytes: {"p":"xxx"} is 8 + len bytes."""
    return {"p": "x" * (n - 8)}


def test_body_size(limited: TestClient, conn: Redis) -> None:
    def body_of(n: int) -> bytes:
        raw = json.dumps({"triggers": [HOOK], "pad": ""}).encode()
        return json.dumps({"triggers": [HOOK], "pad": "x" * (n - len(raw))}).encode()

    headers = {"Content-Type": "application/json"}
    out = refused(limited, conn, None, 413, content=body_of(2049), headers=headers)
    assert out["error"] == "Request body too large"
    assert out["details"] == [{"path": "body", "message": "must be at most 2048 bytes"}]
    ok = body_of(2048)
    assert len(ok) == 2048
    r = limited.post(URL, content=ok, headers=headers)
    assert r.status_code == 400 and paths(r.json()) == ["pad"]  # read and validated, not refused as too large


def test_triggers_per_workspace(limited: TestClient, conn: Redis) -> None:
    out = refused(limited, conn, {"triggers": [HOOK] * 4})
    assert out["details"] == [{"path": "triggers", "message": "at most 3 per workspace, got 4"}]
    assert limited.post(URL, json={"triggers": [HOOK] * 3}).json()["added"] == 3


def test_payload_size(limited: TestClient, conn: Redis) -> None:
    big = dict(HOOK, payload=payload_of_size(65))
    out = refused(limited, conn, {"triggers": [HOOK, big]})
    assert paths(out) == ["triggers[1].payload"]
    assert "at most 64 bytes" in out["details"][0]["message"]
    assert limited.post(URL, json={"triggers": [dict(HOOK, payload=payload_of_size(64))]}).status_code == 200


def test_number_of_headers(limited: TestClient, conn: Redis) -> None:
    three = {"X-A": "1", "X-B": "2", "X-C": "3"}
    out = refused(limited, conn, {"triggers": [dict(HOOK, headers=three)]})
    assert paths(out) == ["triggers[0].headers"]
    assert "at most 2 headers" in out["details"][0]["message"]
    assert limited.post(URL, json={"triggers": [dict(HOOK, headers={"X-A": "1", "X-B": "2"})]}).status_code == 200


def test_size_of_a_header(limited: TestClient, conn: Redis) -> None:
    name = "X-Token"  # 7 bytes: a value of 25 fills the 32 exactly
    out = refused(limited, conn, {"triggers": [dict(HOOK, headers={name: "v" * 26})]})
    assert paths(out) == ["triggers[0].headers.X-Token"]
    assert "at most 32 bytes" in out["details"][0]["message"]
    assert "v" * 26 not in json.dumps(out)
    assert limited.post(URL, json={"triggers": [dict(HOOK, headers={name: "v" * 25})]}).status_code == 200


def test_url_length(limited: TestClient, conn: Redis) -> None:
    def url_of(n: int) -> str:
        start = "https://example.com/"
        return start + "a" * (n - len(start))

    out = refused(limited, conn, {"triggers": [dict(HOOK, url=url_of(65))]})
    assert paths(out) == ["triggers[0].url"]
    assert "at most 64 characters" in out["details"][0]["message"]
    assert limited.post(URL, json={"triggers": [dict(HOOK, url=url_of(64))]}).status_code == 200


def test_every_broken_limit_is_reported_at_once(limited: TestClient, conn: Redis) -> None:
    bad = [
        dict(HOOK, url="https://example.com/" + "a" * 100),
        dict(HOOK, payload=payload_of_size(100)),
        dict(HOOK, headers={"X-A": "1", "X-B": "2", "X-Long-Header-Name": "v" * 40}),
    ]
    out = refused(limited, conn, {"triggers": bad})
    assert paths(out) == [
        "triggers[0].url",
        "triggers[1].payload",
        "triggers[2].headers",
        "triggers[2].headers.X-Long-Header-Name",
    ]


def test_default_url_ceiling(client: TestClient, conn: Redis) -> None:
    long_url = "https://example.com/" + "a" * 2029
    assert len(long_url) == 2049
    r = client.post(URL, json={"triggers": [dict(HOOK, url=long_url)]})
    assert r.status_code == 400 and paths(r.json()) == ["triggers[0].url"]
    assert client.post(URL, json={"triggers": [dict(HOOK, url=long_url[:-1])]}).status_code == 200


def test_no_headers_allowed(redis_url: str, conn: Redis) -> None:
    with TestClient(create_app(make_settings(redis_url, max_headers=0))) as limited:
        r = limited.post(URL, json={"triggers": [dict(HOOK, headers={"X-A": "1"})]})
        assert r.status_code == 400 and paths(r.json()) == ["triggers[0].headers"]
        assert limited.post(URL, json={"triggers": [dict(HOOK, headers={})]}).status_code == 200


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
def test_reserved_header_names(limited: TestClient, conn: Redis, name: str) -> None:
    out = refused(limited, conn, {"triggers": [HOOK, dict(HOOK, headers={"X-Fine": "1", name: "v"})]})
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
def test_duplicate_header_names_differing_in_case(limited: TestClient, conn: Redis, headers: dict[str, str]) -> None:
    out = refused(limited, conn, {"triggers": [dict(HOOK, headers=headers)]})
    assert paths(out) == ["triggers[0].headers"]
    assert "twice" in out["details"][0]["message"]


def test_allowed_header_names(limited: TestClient) -> None:
    ok = {"Authorization": "Bearer x", "X-Schedule": "1", "X-Scheduler": "1", "Content-Type": "application/json"}
    assert limited.post(URL, json={"triggers": [dict(HOOK, headers=ok)]}).status_code == 400  # 4 > MAX_HEADERS=2
    for name in ok:
        assert limited.post(URL, json={"triggers": [dict(HOOK, headers={name: "v"})]}).status_code == 200, name


@pytest.mark.parametrize("value", ["é", "caf\u00e9", "✓", "a\x01b", "a\x7fb", "a\x1bb", "a\rb", "a\nb", "a\x00b"])
def test_header_values_the_client_cannot_send_are_refused(limited: TestClient, conn: Redis, value: str) -> None:
    out = refused(limited, conn, {"triggers": [dict(HOOK, headers={"X-Value": value})]})
    assert paths(out) == ["triggers[0].headers"]


def test_header_values_with_spaces_and_tabs_are_fine(client: TestClient) -> None:
    ok = {"X-Value": " a\tb  !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ "}
    assert client.post(URL, json={"triggers": [dict(HOOK, headers=ok)]}).status_code == 200
