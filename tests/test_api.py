"""The HTTP API through starlette's TestClient: shapes, validation, errors, atomicity, isolation."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import make_settings, post_without_reading_the_body
from croniter import croniter
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.api import create_app
from scheduler_api.embedded_redis import RedisServer, free_port
from scheduler_api.settings import Settings

BASE = "/api/workspaces"
SECRET = "Bearer sk-live-Very-Secret-Value-123"
OTHER_SECRET = "api-key-Also-Secret-456"


def url(ws: str) -> str:
    return f"{BASE}/{ws}/triggers"


def trig(n: int = 0, **changes: Any) -> dict[str, Any]:
    return {"cron": "0 9 * * 1-5", "url": f"https://api.example.com/hook/{n}", "method": "GET", **changes}


README_TRIGGERS: list[dict[str, Any]] = [
    {
        "cron": "0 */2 * * *",
        "url": "https://api.example.com/webhook",
        "method": "POST",
        "payload": {"event": "scheduled_task", "data": {}},
        "headers": {"Authorization": SECRET, "Content-Type": "application/json"},
    },
    {
        "cron": "0 9 * * 1-5",
        "url": "https://api.example.com/report",
        "method": "GET",
        "headers": {"X-API-Key": OTHER_SECRET},
    },
]


def redis_state(conn: Redis, ws: str) -> tuple[dict[bytes, bytes], list[tuple[bytes, float]]]:
    """The workspace's hash and the *whole* schedule, as Redis holds them."""
    return conn.hgetall(f"sa:ws:{ws}"), conn.zrange("sa:schedule", 0, -1, withscores=True)


def schedule_count(conn: Redis, ws: str) -> int:
    return sum(1 for m in conn.zrange("sa:schedule", 0, -1) if m.decode().startswith(f"{ws}:"))


def assert_error(response: Any, status: int, error: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"success", "error", "details"}
    assert body["success"] is False
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["details"], list)
    for d in body["details"]:
        assert set(d) == {"path", "message"} and d["message"]
    assert "Traceback" not in response.text
    if error is not None:
        assert body["error"] == error
    return body


# --- the endpoints and their shapes ---------------------------------------------------------------


def test_post_response_has_the_original_shape(client: TestClient) -> None:
    r = client.post(url("workspace-123"), json={"triggers": README_TRIGGERS})
    assert r.status_code == 200
    assert r.json() == {
        "success": True,
        "workspace_id": "workspace-123",
        "removed": 0,
        "added": 2,
        "jobs": [
            {
                "jobId": "workspace-123:0",
                "jobName": "workspace-123-trigger-0",
                "cron": "0 */2 * * *",
                "url": "https://api.example.com/webhook",
                "method": "POST",
            },
            {
                "jobId": "workspace-123:1",
                "jobName": "workspace-123-trigger-1",
                "cron": "0 9 * * 1-5",
                "url": "https://api.example.com/report",
                "method": "GET",
            },
        ],
    }


def test_post_replaces_the_whole_list(client: TestClient, conn: Redis) -> None:
    client.post(url("ws"), json={"triggers": [trig(i) for i in range(3)]})
    r = client.post(url("ws"), json={"triggers": [trig(7, method="delete")]})
    assert r.status_code == 200
    body = r.json()
    assert (body["removed"], body["added"]) == (3, 1)
    assert body["jobs"] == [
        {"jobId": "ws:0", "jobName": "ws-trigger-0", "cron": "0 9 * * 1-5", "url": trig(7)["url"], "method": "DELETE"}
    ]
    listed = client.get(url("ws")).json()
    assert listed["count"] == 1 and listed["jobs"][0]["url"] == trig(7)["url"]
    assert conn.hlen("sa:ws:ws") == 1 and schedule_count(conn, "ws") == 1


def test_post_empty_list_clears(client: TestClient, conn: Redis) -> None:
    client.post(url("ws"), json={"triggers": [trig(0), trig(1)]})
    r = client.post(url("ws"), json={"triggers": []})
    assert r.json() == {"success": True, "workspace_id": "ws", "removed": 2, "added": 0, "jobs": []}
    assert client.get(url("ws")).json()["count"] == 0
    assert schedule_count(conn, "ws") == 0


def test_get_lists_jobs_with_count(client: TestClient) -> None:
    posted = client.post(url("workspace-123"), json={"triggers": README_TRIGGERS}).json()
    r = client.get(url("workspace-123"))
    assert r.status_code == 200
    body = r.json()
    assert {"success", "workspace_id", "count", "jobs"} <= set(body)
    assert body["success"] is True and body["workspace_id"] == "workspace-123"
    assert body["count"] == 2 == len(body["jobs"])
    base_keys = ("jobId", "jobName", "cron", "url", "method")
    assert [{k: j[k] for k in base_keys} for j in body["jobs"]] == posted["jobs"]
    assert body["jobs"][0]["header_names"] == ["Authorization", "Content-Type"]
    assert body["jobs"][0]["has_payload"] is True
    assert body["jobs"][1]["header_names"] == ["X-API-Key"]
    assert body["jobs"][1]["has_payload"] is False


def test_unknown_workspace_is_an_empty_list(client: TestClient) -> None:
    r = client.get(url("never-seen"))
    assert r.status_code == 200
    assert r.json() == {"success": True, "workspace_id": "never-seen", "count": 0, "jobs": []}
    r = client.delete(url("never-seen"))
    assert r.status_code == 200
    assert r.json() == {"success": True, "workspace_id": "never-seen", "removed": 0}


def test_delete_removes_everything(client: TestClient, conn: Redis) -> None:
    client.post(url("workspace-123"), json={"triggers": README_TRIGGERS})
    r = client.delete(url("workspace-123"))
    assert r.status_code == 200
    assert r.json() == {"success": True, "workspace_id": "workspace-123", "removed": 2}
    assert client.get(url("workspace-123")).json()["count"] == 0
    assert not conn.exists("sa:ws:workspace-123")
    assert schedule_count(conn, "workspace-123") == 0
    assert client.delete(url("workspace-123")).json()["removed"] == 0


def test_health(client: TestClient) -> None:
    before = datetime.now(UTC)
    r = client.get("/health")
    after = datetime.now(UTC)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["timestamp"].endswith("Z")
    stamp = datetime.fromisoformat(body["timestamp"])
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= stamp <= after


def test_ready_with_redis(client: TestClient) -> None:
    r = client.get("/ready")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"


def test_openapi_documents_the_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/api/workspaces/{workspace_id}/triggers"]) == {"get", "post", "delete"}
    assert "/health" in paths
    assert client.get("/docs").status_code == 200


def test_next_run_at_is_the_crons_next_time(client: TestClient) -> None:
    crons = ["0 9 * * 1-5", "@yearly", "30 0 12 * * *", "*/15 * * * *"]
    before = time.time()
    client.post(url("ws"), json={"triggers": [trig(i, cron=c) for i, c in enumerate(crons)]})
    after = time.time()
    jobs = client.get(url("ws")).json()["jobs"]
    now = datetime.now(UTC)
    for job, expr in zip(jobs, crons, strict=True):
        seconds_first = len(expr.split()) == 6
        expected = {
            croniter(expr, t, second_at_beginning=seconds_first).get_next(datetime).astimezone(UTC)
            for t in (before, after)
        }
        stamp = job["next_run_at"]
        assert stamp.endswith("Z"), stamp
        parsed = datetime.fromisoformat(stamp)
        assert parsed in expected, (expr, stamp, expected)
        assert parsed > now
    # "30 0 12 * * *" is seconds first: 12:00:30.
    assert jobs[2]["next_run_at"].endswith("T12:00:30Z")


# --- secrets ----------------------------------------------------------------------------------------


def test_header_values_never_appear_in_any_response(client: TestClient) -> None:
    texts = []
    texts.append(client.post(url("ws"), json={"triggers": README_TRIGGERS}).text)
    texts.append(client.get(url("ws")).text)
    # An invalid request that carries the secrets in its valid triggers.
    bad = [*README_TRIGGERS, trig(2, cron="nope")]
    rejected = client.post(url("ws"), json={"triggers": bad})
    assert_error(rejected, 400)
    texts.append(rejected.text)
    # A header value that is itself invalid, or of the wrong type, is not echoed either.
    texts.append(client.post(url("ws"), json={"triggers": [trig(0, headers={"X-T": SECRET + "\r\nX: 1"})]}).text)
    texts.append(client.post(url("ws"), json={"triggers": [trig(0, headers={"X-T": [SECRET]})]}).text)
    texts.append(client.post(url("ws"), json={"triggers": [trig(0, headers={"X-T": {"v": SECRET}})]}).text)
    texts.append(client.post(url("a:b"), json={"triggers": README_TRIGGERS}).text)
    texts.append(client.delete(url("ws")).text)
    assert all(texts)
    for text in texts:
        assert SECRET not in text
        assert "Very-Secret" not in text
        assert OTHER_SECRET not in text
    # The names are shown.
    assert "Authorization" in texts[1] and "X-API-Key" in texts[1]


# --- validation: all or nothing -------------------------------------------------------------------

INVALID_CASES = [
    # (index, changes to a valid trigger, expected details path, fragment of the message)
    (1, {"cron": "0 0 1 1 * 2030 1"}, "triggers[1].cron", "5 fields"),
    (1, {"cron": "H * * * *"}, "triggers[1].cron", "hashed"),
    (0, {"cron": "R 0 * * *"}, "triggers[0].cron", "hashed"),
    (2, {"cron": "0 0 31 2 *"}, "triggers[2].cron", "never matches"),
    (1, {"cron": "every minute please"}, "triggers[1].cron", ""),
    (1, {"cron": 5}, "triggers[1].cron", "string"),
    (1, {"cron": None}, "triggers[1].cron", "string"),
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
    client.post(url("ws"), json={"triggers": [trig(100), trig(101)]})
    api_before = client.get(url("ws")).json()
    redis_before = redis_state(conn, "ws")

    triggers = [trig(i) for i in range(3)]
    triggers[index] = {**triggers[index], **changes}
    body = assert_error(client.post(url("ws"), json={"triggers": triggers}), 400)
    assert [d["path"] for d in body["details"]] == [path]
    assert fragment in body["details"][0]["message"]

    assert client.get(url("ws")).json() == api_before
    assert redis_state(conn, "ws") == redis_before


def test_missing_field_path(client: TestClient) -> None:
    t = trig(0)
    del t["url"]
    body = assert_error(client.post(url("ws"), json={"triggers": [trig(1), t]}), 400)
    assert body["details"] == [{"path": "triggers[1].url", "message": "Field required"}]


def test_every_invalid_trigger_is_reported(client: TestClient, conn: Redis) -> None:
    triggers = [trig(0, url="ftp://x"), trig(1), trig(2, method="HEAD", cron="H * * * *")]
    body = assert_error(client.post(url("ws"), json={"triggers": triggers}), 400, "Invalid request")
    assert sorted(d["path"] for d in body["details"]) == ["triggers[0].url", "triggers[2].cron", "triggers[2].method"]
    assert client.get(url("ws")).json()["count"] == 0
    assert redis_state(conn, "ws") == ({}, [])


@pytest.mark.parametrize(
    "body",
    [
        {"triggers": [trig(0)], "workspace": "x"},
        {},
        {"triggers": "nope"},
        {"triggers": {"0": trig(0)}},
        {"triggers": None},
        [trig(0)],
    ],
)
def test_invalid_body_shapes(client: TestClient, conn: Redis, body: Any) -> None:
    client.post(url("ws"), json={"triggers": [trig(9)]})
    before = redis_state(conn, "ws")
    result = assert_error(client.post(url("ws"), json=body), 400)
    assert result["details"]
    assert redis_state(conn, "ws") == before


def test_method_is_accepted_in_any_case_and_upper_cased(client: TestClient) -> None:
    methods = ["get", "Post", "pUT", "patch", "DELETE"]
    r = client.post(url("ws"), json={"triggers": [trig(i, method=m) for i, m in enumerate(methods)]})
    assert [j["method"] for j in r.json()["jobs"]] == ["GET", "POST", "PUT", "PATCH", "DELETE"]
    assert [j["method"] for j in client.get(url("ws")).json()["jobs"]] == ["GET", "POST", "PUT", "PATCH", "DELETE"]


def test_accepted_cron_forms(client: TestClient) -> None:
    crons = ["*/15 * * * *", "*/10 * * * * *", "@hourly", "@daily", "@weekly", "0 9 * JAN-MAR MON-FRI"]
    r = client.post(url("ws"), json={"triggers": [trig(i, cron=c) for i, c in enumerate(crons)]})
    assert r.status_code == 200, r.text
    assert [j["cron"] for j in r.json()["jobs"]] == crons


@pytest.mark.parametrize("ws", ["a", "A.b_c-9", "x" * 128])
def test_valid_workspace_ids(client: TestClient, ws: str) -> None:
    r = client.post(url(ws), json={"triggers": [trig(0)]})
    assert r.status_code == 200
    assert r.json()["jobs"][0]["jobId"] == f"{ws}:0"
    assert client.get(url(ws)).json()["count"] == 1


@pytest.mark.parametrize("ws", ["x" * 129, "a:b", "a%20b", "a%0A", "%C3%A9t%C3%A9", "a*b", "a%2Cb"])
def test_invalid_workspace_ids(client: TestClient, conn: Redis, ws: str) -> None:
    for method in ("POST", "GET", "DELETE"):
        kwargs: dict[str, Any] = {"json": {"triggers": [trig(0)]}} if method == "POST" else {}
        body = assert_error(client.request(method, url(ws), **kwargs), 400)
        assert [d["path"] for d in body["details"]] == ["workspace_id"]
    assert conn.keys("sa:*") == []


def test_malformed_json(client: TestClient, conn: Redis) -> None:
    client.post(url("ws"), json={"triggers": [trig(1)]})
    before = redis_state(conn, "ws")
    for raw in (b'{"triggers": [', b"{bad json}", b"", b"\xff\xfe"):
        r = client.post(url("ws"), content=raw, headers={"Content-Type": "application/json"})
        body = assert_error(r, 400)
        assert body["details"] and body["details"][0]["path"] == "body"
    r = client.post(url("ws"), content=b'{"triggers": [', headers={"Content-Type": "application/json"})
    assert r.json()["error"] == "Malformed JSON body"
    assert redis_state(conn, "ws") == before


def test_too_many_triggers(redis_url: str, conn: Redis) -> None:
    with TestClient(create_app(make_settings(redis_url, max_triggers_per_workspace=3))) as c:
        assert c.post(url("ws"), json={"triggers": [trig(i) for i in range(3)]}).status_code == 200
        before = redis_state(conn, "ws")
        body = assert_error(c.post(url("ws"), json={"triggers": [trig(i) for i in range(4)]}), 400)
        assert body["details"][0]["path"] == "triggers"
        assert "3" in body["details"][0]["message"]
        assert redis_state(conn, "ws") == before
        assert c.get(url("ws")).json()["count"] == 3


@pytest.fixture
def small_client(redis_url: str, conn: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(redis_url, max_body_bytes=4096))) as c:
        yield c


def big_body(size: int) -> bytes:
    body = json.dumps({"triggers": [trig(0, payload={"pad": "x" * size})]}).encode()
    assert len(body) > size
    return body


def test_body_too_large_by_content_length(small_client: TestClient, conn: Redis) -> None:
    small_client.post(url("ws"), json={"triggers": [trig(1)]})
    before = redis_state(conn, "ws")
    r = small_client.post(url("ws"), content=big_body(5000), headers={"Content-Type": "application/json"})
    body = assert_error(r, 413, "Request body too large")
    assert body["details"] == [{"path": "body", "message": "must be at most 4096 bytes"}]
    assert redis_state(conn, "ws") == before
    # Just under the limit is fine.
    ok = json.dumps({"triggers": [trig(0, payload={"pad": "x" * 3800})]}).encode()
    assert len(ok) <= 4096
    assert small_client.post(url("ws"), content=ok, headers={"Content-Type": "application/json"}).status_code == 200


def test_body_too_large_chunked(small_client: TestClient, conn: Redis) -> None:
    small_client.post(url("ws"), json={"triggers": [trig(1)]})
    before = redis_state(conn, "ws")
    raw = big_body(10_000)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(raw), 1000):
            yield raw[i : i + 1000]

    r = small_client.post(url("ws"), content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    body = assert_error(r, 413, "Request body too large")
    assert body["details"] == [{"path": "body", "message": "must be at most 4096 bytes"}]
    assert redis_state(conn, "ws") == before

    # A small chunked body is accepted.
    small = json.dumps({"triggers": [trig(5)]}).encode()
    r = small_client.post(
        url("ws"), content=iter([small[:10], small[10:]]), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200 and r.json()["added"] == 1


def test_body_too_large_is_refused_before_reading_it(settings: Settings) -> None:
    """With a Content-Length over the limit the app answers 413 without reading the body at all."""
    status, body = post_without_reading_the_body(create_app(settings), url("ws"))
    assert status == 413 and body["error"] == "Request body too large"


def test_unknown_routes_and_wrong_methods(client: TestClient) -> None:
    body = assert_error(client.get("/nope"), 404)
    assert body["error"] == "Not Found"
    assert_error(client.get("/api/workspaces/ws"), 404)
    assert_error(client.post("/api/workspaces/ws/trigger", json={"triggers": []}), 404)
    body = assert_error(client.put(url("ws"), json={"triggers": []}), 405)
    assert body["error"] == "Method Not Allowed"
    assert_error(client.patch(url("ws"), json={"triggers": []}), 405)
    assert_error(client.post("/health"), 405)


# --- Redis unreachable ---------------------------------------------------------------------------------


def test_redis_unreachable_answers_503(redis_url: str) -> None:
    dead = make_settings(f"redis://127.0.0.1:{free_port()}/0", redis_timeout_seconds=0.5)
    with TestClient(create_app(dead)) as c:
        started = time.monotonic()
        for method in ("POST", "GET", "DELETE"):
            kwargs: dict[str, Any] = {"json": {"triggers": README_TRIGGERS}} if method == "POST" else {}
            r = c.request(method, url("ws"), **kwargs)
            body = assert_error(r, 503)
            assert "Redis" in body["error"] and "unavailable" in body["error"]
            assert SECRET not in r.text
        assert time.monotonic() - started < 5
        assert c.get("/health").status_code == 200
        assert c.get("/health").json()["status"] == "ok"
        assert_error(c.get("/ready"), 503)
        # Validation still comes first: an invalid request is a 400, not a 503.
        assert_error(c.post(url("ws"), json={"triggers": [trig(0, cron="nope")]}), 400)


# --- isolation and atomicity --------------------------------------------------------------------------


def test_workspaces_are_isolated(client: TestClient, conn: Redis) -> None:
    client.post(url("B"), json={"triggers": [trig(10), trig(11)]})
    client.post(url("A.b"), json={"triggers": [trig(20)]})
    b_api = client.get(url("B")).json()
    b_redis = (conn.hgetall("sa:ws:B"), schedule_count(conn, "B"))
    ab_api = client.get(url("A.b")).json()

    client.post(url("A"), json={"triggers": [trig(1), trig(2), trig(3)]})
    client.post(url("A"), json={"triggers": [trig(4)]})
    assert client.get(url("B")).json() == b_api
    client.delete(url("A"))
    assert client.get(url("A")).json()["count"] == 0
    assert client.get(url("B")).json() == b_api
    assert client.get(url("A.b")).json() == ab_api
    assert (conn.hgetall("sa:ws:B"), schedule_count(conn, "B")) == b_redis
    assert schedule_count(conn, "A") == 0


def test_concurrent_replaces_through_the_api(client: TestClient, conn: Redis) -> None:
    client.post(url("other"), json={"triggers": [trig(0), trig(1)]})
    other_before = client.get(url("other")).json()
    submitted = {
        n: [trig(i, url=f"https://list{n}.example/{i}", cron="0 0 1 1 *") for i in range(n + 1)] for n in range(20)
    }
    barrier = threading.Barrier(21)
    done = threading.Event()
    seen: list[list[str]] = []
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            r = client.post(url("ws"), json={"triggers": submitted[n]})
            assert r.status_code == 200, r.text
            assert [j["url"] for j in r.json()["jobs"]] == [t["url"] for t in submitted[n]]
        except BaseException as e:  # reported below
            errors.append(e)

    def reader() -> None:
        try:
            barrier.wait()
            while True:
                finished = done.is_set()
                body = client.get(url("ws")).json()
                assert body["count"] == len(body["jobs"])
                seen.append([j["url"] for j in body["jobs"]])
                if finished:
                    break
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(20)]
    read_thread = threading.Thread(target=reader)
    for t in [read_thread, *threads]:
        t.start()
    for t in threads:
        t.join(30)
    done.set()
    read_thread.join(30)
    assert not errors, errors

    lists = [[t["url"] for t in ts] for ts in submitted.values()]
    assert len(seen) > 1
    for urls in seen:
        assert urls == [] or urls in lists, f"a reader saw a mix: {urls}"
    final = client.get(url("ws")).json()
    final_urls = [j["url"] for j in final["jobs"]]
    assert final_urls in lists
    n = lists.index(final_urls)
    assert [j["jobId"] for j in final["jobs"]] == [f"ws:{i}" for i in range(n + 1)]
    assert final["count"] == n + 1 == schedule_count(conn, "ws") == conn.hlen("sa:ws:ws")
    assert client.get(url("other")).json() == other_before


# --- found by an audit of the API ----------------------------------------------------------------


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
    client.post(url("ws"), json={"triggers": [trig(0)]})
    before = conn.hgetall("sa:ws:ws")
    body = '{"triggers": [{"cron": "* * * * * *", "url": "https://a.example.com/", "method": "POST", "payload": %s}]}'
    r = client.post(url("ws"), content=body % payload, headers={"Content-Type": "application/json"})
    details = assert_error(r, 400)["details"]
    assert [d["path"] for d in details] == ["triggers[0].payload"]
    assert "standard JSON" in details[0]["message"]
    assert conn.hgetall("sa:ws:ws") == before


@pytest.mark.parametrize(
    "bad_url", ["http://[v1.fe]/x", "http://[::1/x", "http://exa mple.com/", "https://a.example.com\\@b.example.com/"]
)
def test_an_url_the_worker_could_not_send_is_refused(client: TestClient, bad_url: str) -> None:
    r = client.post(url("ws"), json={"triggers": [trig(0, url=bad_url)]})
    assert [d["path"] for d in assert_error(r, 400)["details"]] == ["triggers[0].url"]


def test_a_cron_expression_has_a_length_limit(client: TestClient) -> None:
    long_cron = "0 " + ",".join(["1"] * 200) + " * * *"
    r = client.post(url("ws"), json={"triggers": [trig(0, cron=long_cron)]})
    details = assert_error(r, 400)["details"]
    assert details[0]["path"] == "triggers[0].cron" and "at most 256 characters" in details[0]["message"]
    assert_error(client.post("/api/cron/preview", json={"cron": long_cron}), 400)


def test_head_is_answered_on_get_routes(client: TestClient) -> None:
    client.post(url("ws"), json={"triggers": [trig(0)]})
    get = client.get(url("ws"))
    head = client.head(url("ws"))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert client.head("/health").status_code == 200
    assert client.head("/api/cron/preview").status_code == 405  # POST only: as a GET would be


def test_delete_lifts_the_pause_but_a_replace_keeps_it(client: TestClient) -> None:
    client.post(url("ws"), json={"triggers": [trig(0)]})
    assert client.post("/api/workspaces/ws/pause").status_code == 200
    client.post(url("ws"), json={"triggers": [trig(1)]})
    assert client.get(url("ws")).json()["jobs"][0]["paused"] is True
    assert client.delete(url("ws")).status_code == 200
    client.post(url("ws"), json={"triggers": [trig(2)]})  # a new workspace under the same id
    assert client.get(url("ws")).json()["jobs"][0]["paused"] is False


def test_redis_refusing_writes_or_not_answering_is_a_503_that_says_which(tmp_path: Any) -> None:
    with RedisServer() as server:
        settings = make_settings(server.url, redis_timeout_seconds=0.5)
        admin = Redis.from_url(server.url)
        with TestClient(create_app(settings)) as c:
            assert c.post(url("ws"), json={"triggers": [trig(0)]}).status_code == 200
            admin.config_set("maxmemory", 1)  # full: Redis answers OOM to writes
            r = c.post("/api/workspaces/ws/pause")
            assert "refusing writes" in assert_error(r, 503)["error"]
            assert "nothing was changed" in r.json()["error"]
            admin.config_set("maxmemory", 0)
            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)  # alive but silent: the command may be applied later
            try:
                r = c.post(url("ws"), json={"triggers": [trig(1)]})
                assert "may or may not have been made" in assert_error(r, 503)["error"]
            finally:
                server.process.send_signal(signal.SIGCONT)
        admin.close()
