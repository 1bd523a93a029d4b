"""Next runs and readable schedules (issue #7): `next_run_at` and schedule state in the lists,
`GET /api/workspaces/{id}/triggers/{index}` and `POST /api/cron/preview`."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from scheduler_api import cron
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import triggers as store
from scheduler_api.triggers import Trigger

SECRET = "Bearer sk-Very-Secret-Header-Value"
T = 1_800_000_000.0  # 2027-01-15T08:00:00Z (a Friday)


def assert_error(response: Any, status: int) -> list[dict[str, str]]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "error", "details"} and body["success"] is False
    assert isinstance(body["error"], str) and body["error"]
    for d in body["details"]:
        assert set(d) == {"path", "message"} and d["message"]
    details: list[dict[str, str]] = body["details"]
    return details


def post(client: TestClient, ws: str, triggers: list[dict[str, Any]]) -> Any:
    return client.post(f"/api/workspaces/{ws}/triggers", json={"triggers": triggers})


TRIGGERS: list[dict[str, Any]] = [
    {
        "cron": "30 1 * * *",
        "url": "https://example.com/ny",
        "method": "POST",
        "timezone": "America/New_York",
        "payload": {"a": 1},
        "headers": {"Authorization": SECRET, "X-Trace": "also-secret"},
    },
    {"cron": "*/10 * * * * *", "url": "https://example.com/off", "method": "GET", "enabled": False},
    {"cron": "0 9 * * 1-5", "url": "https://example.com/utc", "method": "GET"},
]


def expected_runs(expr: str, tz: str, before: float, after: float, n: int) -> list[list[str]]:
    """The run lists the API may answer, computed at any instant it could have used."""
    parsed = cron.parse(expr, tz)
    return [[cron.iso(x) for x in parsed.next_runs(t, n)] for t in (before, after)]


# --- lists --------------------------------------------------------------------------------------


def test_replace_answer_keeps_its_original_shape(client: TestClient) -> None:
    r = post(client, "ws", TRIGGERS)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"success", "workspace_id", "removed", "added", "jobs"}
    for job in body["jobs"]:
        assert set(job) == {"jobId", "jobName", "cron", "url", "method"}


def test_list_shows_next_run_timezone_enabled_paused_and_header_names_only(client: TestClient) -> None:
    before = time.time()
    assert post(client, "ws", TRIGGERS).status_code == 200
    after = time.time()
    r = client.get("/api/workspaces/ws/triggers")
    assert r.status_code == 200
    assert SECRET not in r.text and "also-secret" not in r.text
    body = r.json()
    assert body["count"] == 3
    ny, off, utc = body["jobs"]
    for job, spec, i in zip(body["jobs"], TRIGGERS, range(3), strict=True):
        assert job["jobId"] == f"ws:{i}" and job["jobName"] == f"ws-trigger-{i}"
        assert (job["cron"], job["url"], job["method"]) == (spec["cron"], spec["url"], spec["method"])
        tz = spec.get("timezone", "UTC")
        assert job["timezone"] == tz
        assert job["next_run_at"] in [runs[0] for runs in expected_runs(spec["cron"], tz, before, after, 1)]
    assert ny["header_names"] == ["Authorization", "X-Trace"] and ny["has_payload"] is True
    assert (ny["enabled"], ny["paused"]) == (True, False)
    assert (off["enabled"], off["paused"]) == (False, True)  # disabled: shown paused
    assert (utc["enabled"], utc["paused"]) == (True, False)
    assert utc["header_names"] == [] and utc["has_payload"] is False
    # 01:30 New York in winter is 06:30Z.
    assert ny["next_run_at"].endswith("T06:30:00Z")


def test_next_run_at_advances_with_the_schedule(
    client: TestClient, conn: Redis, settings: Settings, queue: Queue
) -> None:
    store.replace(
        conn,
        "ws",
        [
            Trigger(cron="*/10 * * * * *", url="https://example.com/a", method="GET"),
            Trigger(cron="0 9 * * *", url="https://example.com/b", method="GET", timezone="Europe/Paris"),
        ],
        now=lambda: T,
    )

    def next_runs() -> list[str]:
        return [j["next_run_at"] for j in client.get("/api/workspaces/ws/triggers").json()["jobs"]]

    assert next_runs() == ["2027-01-15T08:00:10Z", "2027-01-16T08:00:00Z"]  # 09:00 Paris = 08:00Z
    ticking.tick(conn, queue, settings, now=T + 10.2)
    assert next_runs() == ["2027-01-15T08:00:20Z", "2027-01-16T08:00:00Z"]
    one = client.get("/api/workspaces/ws/triggers/0").json()["job"]
    assert one["next_run_at"] == "2027-01-15T08:00:20Z"


def test_invalid_timezone_is_400_with_its_path_and_nothing_is_stored(client: TestClient, conn: Redis) -> None:
    assert post(client, "ws", TRIGGERS[:1]).status_code == 200
    stored = conn.hgetall("sa:ws:ws")
    for bad, message in (("Mars/Olympus", "time zone"), ("", "time zone"), (5, "string"), (["UTC"], "string")):
        triggers = [TRIGGERS[2], {**TRIGGERS[2], "timezone": bad}]
        details = assert_error(post(client, "ws", triggers), 400)
        assert [d["path"] for d in details] == ["triggers[1].timezone"], details
        assert message in details[0]["message"]
    details = assert_error(post(client, "ws", [{**TRIGGERS[2], "enabled": "yes"}]), 400)
    assert [d["path"] for d in details] == ["triggers[0].enabled"]
    assert conn.hgetall("sa:ws:ws") == stored


def test_explicit_utc_and_null_timezone_are_the_default(client: TestClient) -> None:
    assert (
        post(client, "ws", [{**TRIGGERS[2], "timezone": None}, {**TRIGGERS[2], "timezone": "UTC"}]).status_code == 200
    )
    jobs = client.get("/api/workspaces/ws/triggers").json()["jobs"]
    assert [j["timezone"] for j in jobs] == ["UTC", "UTC"]
    assert jobs[0]["next_run_at"] == jobs[1]["next_run_at"]


# --- one trigger ----------------------------------------------------------------------------------


def test_get_one_trigger_with_next_five_runs_and_description(client: TestClient) -> None:
    assert post(client, "ws", TRIGGERS).status_code == 200
    listed = client.get("/api/workspaces/ws/triggers").json()["jobs"]
    for i, spec in enumerate(TRIGGERS):
        before = time.time()
        r = client.get(f"/api/workspaces/ws/triggers/{i}")
        after = time.time()
        assert r.status_code == 200, r.text
        assert SECRET not in r.text and "also-secret" not in r.text
        body = r.json()
        assert set(body) == {"success", "workspace_id", "job"} and body["success"] is True
        job = body["job"]
        assert {k: v for k, v in job.items() if k not in ("description", "next_runs")} == listed[i]
        tz = spec.get("timezone", "UTC")
        assert job["next_runs"] in expected_runs(spec["cron"], tz, before, after, 5)
        assert len(job["next_runs"]) == 5 and job["next_runs"] == sorted(set(job["next_runs"]))
    ny = client.get("/api/workspaces/ws/triggers/0").json()["job"]
    assert ny["description"] == "At 01:30 (America/New_York)"
    assert ny["header_names"] == ["Authorization", "X-Trace"]
    assert client.get("/api/workspaces/ws/triggers/1").json()["job"]["description"] == "Every 10 seconds"
    assert client.get("/api/workspaces/ws/triggers/2").json()["job"]["description"] == (
        "At 09:00, Monday through Friday"
    )


def test_get_one_trigger_with_encrypted_headers_shows_names_only(redis_url: str, conn: Redis) -> None:
    from conftest import make_settings
    from cryptography.fernet import Fernet

    from scheduler_api.api import create_app

    settings = make_settings(redis_url, secrets_key=Fernet.generate_key().decode())
    with TestClient(create_app(settings)) as c:
        assert post(c, "ws", TRIGGERS[:1]).status_code == 200
        r = c.get("/api/workspaces/ws/triggers/0")
        assert r.status_code == 200
        assert r.json()["job"]["header_names"] == ["Authorization", "X-Trace"]
        assert SECRET not in r.text and "gAAAA" not in r.text  # neither the value nor its ciphertext


def test_unknown_trigger_index_is_a_404_in_the_error_shape(client: TestClient) -> None:
    assert post(client, "ws", TRIGGERS).status_code == 200
    for path in ("/api/workspaces/ws/triggers/3", "/api/workspaces/ws/triggers/999", "/api/workspaces/nope/triggers/0"):
        details = assert_error(client.get(path), 404)
        assert details and details[0]["path"] == "index"
    for path in ("/api/workspaces/ws/triggers/-1", "/api/workspaces/ws/triggers/x", "/api/workspaces/ws/triggers/1.5"):
        assert_error(client.get(path), 400)
    assert client.delete("/api/workspaces/ws/triggers").status_code == 200
    assert_error(client.get("/api/workspaces/ws/triggers/0"), 404)


# --- preview ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "tz", "description"),
    [
        ("0 9 * * 1-5", None, "At 09:00, Monday through Friday"),
        ("30 2 * * *", "Europe/Berlin", "At 02:30 (Europe/Berlin)"),
        ("*/10 * * * * *", "UTC", "Every 10 seconds"),
        ("30 0 12 * * *", None, "At 12:00:30"),
        ("@hourly", None, "Every hour"),
        ("@weekly", "Asia/Tokyo", "At 00:00, only on Sunday (Asia/Tokyo)"),
        ("0 0 L * *", None, "At 00:00, on the last day of the month"),
    ],
)
def test_preview_answers_runs_and_description_without_storing(
    client: TestClient, conn: Redis, expr: str, tz: str | None, description: str
) -> None:
    conn.set("unrelated", "1")
    size = conn.dbsize()
    before = time.time()
    r = client.post("/api/cron/preview", json={"cron": expr, "timezone": tz})
    after = time.time()
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"success", "cron", "timezone", "description", "next_runs"}
    assert body["success"] is True and body["cron"] == expr
    assert body["timezone"] == (tz or "UTC")
    assert body["description"] == description
    assert body["next_runs"] in expected_runs(expr, tz or "UTC", before, after, 5)
    assert conn.dbsize() == size


def test_preview_agrees_with_a_stored_trigger(client: TestClient) -> None:
    spec = TRIGGERS[0]
    assert post(client, "ws", [spec]).status_code == 200
    for _ in range(3):  # the two calls may straddle a run time only rarely; retry then
        one = client.get("/api/workspaces/ws/triggers/0").json()["job"]
        preview = client.post("/api/cron/preview", json={"cron": spec["cron"], "timezone": spec["timezone"]}).json()
        if one["next_runs"] == preview["next_runs"]:
            break
    assert one["next_runs"] == preview["next_runs"]
    assert one["description"] == preview["description"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"cron": "bad"}, "cron"),
        ({"cron": "* * * * * * *"}, "cron"),
        ({"cron": "0 0 31 2 *"}, "cron"),
        ({"cron": "H * * * *"}, "cron"),
        ({"cron": ""}, "cron"),
        ({"cron": "time zone"}, "cron"),  # an invalid cron whose text mentions "time zone"
        ({"cron": 5}, "cron"),
        ({}, "cron"),
        ({"cron": "0 0 * * *", "timezone": "Nope/Nowhere"}, "timezone"),
        ({"cron": "0 0 * * *", "timezone": ""}, "timezone"),
        ({"cron": "0 0 * * *", "timezone": 3}, "timezone"),
        ({"cron": "bad", "timezone": "Nope/Nowhere"}, "timezone"),
    ],
)
def test_preview_rejects_invalid_cron_or_timezone_with_its_path(
    client: TestClient, conn: Redis, body: dict[str, Any], path: str
) -> None:
    size = conn.dbsize()
    details = assert_error(client.post("/api/cron/preview", json=body), 400)
    assert [d["path"] for d in details] == [path], details
    assert conn.dbsize() == size


def test_preview_malformed_json_is_400(client: TestClient) -> None:
    r = client.post("/api/cron/preview", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(r, 400)


def test_preview_shows_the_runs_after_a_given_instant(client: TestClient) -> None:
    r = client.post("/api/cron/preview", json={"cron": "0 9 * * *", "after": "2026-11-01T09:00:00Z"})
    assert r.status_code == 200, r.text
    assert r.json()["next_runs"] == [f"2026-11-0{d}T09:00:00Z" for d in range(2, 7)]
    # Any offset: the same instant written in Paris time.
    r = client.post("/api/cron/preview", json={"cron": "0 9 * * *", "after": "2026-11-01T10:00:00+01:00"})
    assert r.json()["next_runs"][0] == "2026-11-02T09:00:00Z"


def test_preview_after_across_a_fall_back_runs_every_real_hour(client: TestClient) -> None:
    """America/New_York falls back at 06:00Z on 2026-11-01: 01:00 happens at 05:00Z and at 06:00Z."""
    body = {"cron": "0 * * * *", "timezone": "America/New_York", "after": "2026-11-01T04:30:00Z"}
    r = client.post("/api/cron/preview", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["next_runs"] == [f"2026-11-01T0{h}:00:00Z" for h in range(5, 10)]
    fixed = client.post("/api/cron/preview", json={**body, "cron": "30 1 * * *"}).json()
    assert fixed["next_runs"][:2] == ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]  # once, at the first 01:30


@pytest.mark.parametrize(
    "after",
    ["2026-11-01T09:00:00", "tomorrow", "", 12, "9999-12-31T23:59:59Z"],
    ids=["no-offset", "words", "empty", "number", "end-of-calendar"],
)
def test_preview_refuses_an_after_that_is_no_instant_with_a_400(client: TestClient, after: Any) -> None:
    details = assert_error(client.post("/api/cron/preview", json={"cron": "0 0 1 1 *", "after": after}), 400)
    assert [d["path"] for d in details] == ["after"]
