"""Per-trigger delivery policies through the HTTP API: validation of each field and its limits, and how
triggers show them (`state`, one-off `at`, policy fields, jittered run times within start/end).
scheduler_api.api.views, scheduler_api.storage.edits."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api import cron
from scheduler_api.api.routes import triggers as trigger_routes
from scheduler_api.policy import jitter_offset
from tests.support.assertions import assert_error
from tests.support.clock import parse
from tests.support.factories import WS, triggers_url
from tests.support.redis_state import every_key

LIST = triggers_url(WS)
DAILY = "0 9 * * *"
START = "2030-01-01T00:00:00Z"  # far enough ahead that no run before it is due while a test runs
# jitter_offset(f"ws:j@{time}", 3600) of the first three daily runs from START: fixed values, so the
# offsets are the same in every process and every version.
JITTERED = ["2030-01-01T09:04:13Z", "2030-01-02T09:05:18Z", "2030-01-03T09:47:30Z"]


def hook(**more: Any) -> dict[str, Any]:
    return {"cron": DAILY, "url": "https://api.example.com/hook", "method": "POST", **more}


def one_off(at: float, **more: Any) -> dict[str, Any]:
    return {"at": cron.iso(at), "url": "https://api.example.com/once", "method": "POST", **more}


def post(client: TestClient, *triggers: dict[str, Any]) -> Any:
    return client.post(LIST, json={"triggers": list(triggers)})


def listed(client: TestClient) -> dict[str, dict[str, Any]]:
    r = client.get(LIST)
    assert r.status_code == 200, r.text
    return {j["id"]: j for j in r.json()["jobs"]}


# --- validation ----------------------------------------------------------------------------------

INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({"timeout_seconds": 0}, "triggers[0].timeout_seconds", "greater than or equal to 1"),
    ({"timeout_seconds": 301}, "triggers[0].timeout_seconds", "at most 300 seconds"),
    ({"timeout_seconds": "5"}, "triggers[0].timeout_seconds", "number"),
    ({"retry": {"max_retries": 21}}, "triggers[0].retry.max_retries", "less than or equal to 20"),
    ({"retry": {"max_retries": -1}}, "triggers[0].retry.max_retries", "greater than or equal to 0"),
    ({"retry": {"max_retries": 1.5}}, "triggers[0].retry.max_retries", "integer"),
    ({"retry": {"backoff_seconds": 0.05}}, "triggers[0].retry.backoff_seconds", "0.1"),
    ({"retry": {"backoff_seconds": 3601}}, "triggers[0].retry.backoff_seconds", "3600"),
    (
        {"retry": {"backoff_seconds": 10, "max_backoff_seconds": 5}},
        "triggers[0].retry",
        "max_backoff_seconds must be at least backoff_seconds",
    ),
    ({"retry": {"retries": 3}}, "triggers[0].retry.retries", "Extra inputs"),
    ({"final_statuses": []}, "triggers[0].final_statuses", "at least 1"),
    ({"final_statuses": [99]}, "triggers[0].final_statuses[0]", "100-599"),
    ({"final_statuses": ["4xx", "6xx"]}, "triggers[0].final_statuses[1]", '"1xx" to "5xx"'),
    ({"final_statuses": [True]}, "triggers[0].final_statuses[0]", "status code"),
    ({"final_statuses": "4xx"}, "triggers[0].final_statuses", "list"),
    ({"success": {"status": [600]}}, "triggers[0].success.status[0]", "100-599"),
    ({"success": {"body_contains": ""}}, "triggers[0].success.body_contains", "at least 1"),
    ({"success": {"body_contains": "x" * 1025}}, "triggers[0].success.body_contains", "at most 1024"),
    ({"success": {"regex": "a+"}}, "triggers[0].success.regex", "Extra inputs"),
    ({"overlap": "queue"}, "triggers[0].overlap", "'allow', 'skip' or 'buffer_one'"),
    ({"start_at": 1_900_000_000}, "triggers[0].start_at", "ISO 8601"),
    ({"end_at": "2030-01-01T00:00:00"}, "triggers[0].end_at", "timezone"),
    ({"start_at": START, "end_at": START}, "triggers[0].end_at", "end_at must be after start_at"),
    ({"max_firings": 0}, "triggers[0].max_firings", "greater than or equal to 1"),
    ({"jitter_seconds": 3601}, "triggers[0].jitter_seconds", "less than or equal to 3600"),
    ({"jitter_seconds": -1}, "triggers[0].jitter_seconds", "greater than or equal to 0"),
    ({"jitter_seconds": 1.5}, "triggers[0].jitter_seconds", "integer"),
    ({"at": START}, "triggers[0].cron", "exactly one of cron and at is required"),
    ({"cron": None}, "triggers[0].cron", "exactly one of cron and at is required"),
]


@pytest.mark.parametrize(("changes", "path", "fragment"), INVALID)
def test_each_field_is_validated_with_its_path(
    client: TestClient, conn: Redis, changes: dict[str, Any], path: str, fragment: str
) -> None:
    assert post(client, hook(id="kept")).status_code == 200
    before = every_key(conn)
    body = assert_error(post(client, hook(id="kept"), hook(id="bad", **changes)), 400)
    assert [d["path"] for d in body["details"]] == [path.replace("[0]", "[1]", 1)], body
    assert fragment in body["details"][0]["message"], body
    assert every_key(conn) == before


def test_one_off_rules(client: TestClient) -> None:
    soon = time.time() + 3600
    for more, path, fragment in [
        ({"start_at": START}, "triggers[0].start_at", "start_at apply to cron triggers only"),
        ({"end_at": START, "max_firings": 2}, "triggers[0].end_at", "end_at, max_firings apply to cron triggers only"),
    ]:
        details = assert_error(post(client, one_off(soon, **more)), 400)["details"]
        assert [d["path"] for d in details] == [path] and fragment in details[0]["message"]
    too_far = time.time() + 10 * 366 * 86_400
    details = assert_error(post(client, one_off(too_far)), 400)["details"]
    assert details == [{"path": "triggers[0].at", "message": "at must be at most 10 years ahead"}]
    details = assert_error(post(client, hook(), one_off(time.time() - 60)), 400)["details"]
    assert details == [{"path": "triggers[1].at", "message": "must be in the future"}]
    r = client.put(f"{LIST}/once", json=one_off(time.time() - 1))
    assert assert_error(r, 400)["details"] == [{"path": "at", "message": "must be in the future"}]


def test_an_unchanged_past_at_is_accepted_again(
    client: TestClient, conn: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [time.time()]
    monkeypatch.setattr(trigger_routes, "time", SimpleNamespace(time=lambda: now[0]))
    at = now[0] + 100
    assert post(client, one_off(at, id="once")).status_code == 200
    raw = conn.hget("sa:ws:ws", "once")
    now[0] += 200  # the trigger's time has passed (whether it fired or not)
    again = client.post(LIST, params={"dry_run": "true"}, json={"triggers": [one_off(at, id="once")]})
    assert again.json()["diff"]["unchanged"] == ["once"]
    assert post(client, one_off(at, id="once")).status_code == 200
    assert conn.hget("sa:ws:ws", "once") == raw
    details = assert_error(post(client, one_off(at + 50, id="once")), 400)["details"]
    assert details == [{"path": "triggers[0].at", "message": "must be in the future"}]


# --- how triggers are shown ----------------------------------------------------------------------


def test_policy_fields_are_shown_with_the_input_names(client: TestClient) -> None:
    policy = {
        "timeout_seconds": 12.5,
        "retry": {"max_retries": 5, "backoff_seconds": 2},
        "final_statuses": ["4xx", 500, 404],
        "success": {"status": [204, "2xx"], "body_contains": "ok"},
        "overlap": "buffer_one",
        "start_at": "2030-01-01T01:00:00+01:00",
        "end_at": "2031-01-01T00:00:00Z",
        "max_firings": 10,
        "jitter_seconds": 0,
    }
    assert post(client, hook(id="p", **policy), hook(id="plain")).status_code == 200
    jobs = listed(client)
    shown = {k: v for k, v in jobs["p"].items() if k not in jobs["plain"]}
    assert shown == {
        "timeout_seconds": 12.5,
        "retry": {"max_retries": 5, "backoff_seconds": 2.0},
        "final_statuses": [404, 500, "4xx"],
        "success": {"status": [204, "2xx"], "body_contains": "ok"},
        "overlap": "buffer_one",
        "start_at": "2030-01-01T00:00:00Z",
        "end_at": "2031-01-01T00:00:00Z",
        "max_firings": 10,
    }
    assert jobs["p"]["next_run_at"] == "2030-01-01T09:00:00Z"  # the first run at or after start_at
    assert set(jobs["plain"]) == {
        *("jobId", "jobName", "cron", "url", "method", "id", "state", "next_run_at", "header_names"),
        *("has_payload", "timezone", "enabled", "paused"),
    }
    detail = client.get(f"{LIST}/p").json()["job"]
    assert {k: detail[k] for k in shown} == shown


def test_state_active_paused_disabled_and_ended(client: TestClient, conn: Redis) -> None:
    past = "2020-01-01T00:00:00Z"
    r = post(
        client,
        hook(id="on"),
        hook(id="off", enabled=False),
        hook(id="over", end_at=past),
        hook(id="over-off", end_at=past, enabled=False),
        hook(id="capped", max_firings=3),
        one_off(time.time() + 3600, id="once"),
    )
    assert r.status_code == 200, r.text
    states = {j["id"]: j["state"] for j in r.json()["jobs"]}
    assert states == {
        "on": "active",
        "off": "disabled",
        "over": "ended",
        "over-off": "ended",
        "capped": "active",
        "once": "active",
    }
    jobs = listed(client)
    assert jobs["over"]["next_run_at"] is None and conn.zscore("sa:schedule", "ws:over") is None
    assert client.get(f"{LIST}/over").json()["job"]["next_runs"] == []
    assert client.post(f"/api/workspaces/{WS}/pause").status_code == 200
    states = {i: j["state"] for i, j in listed(client).items()}
    assert states == {**states, "on": "paused", "off": "disabled", "over": "ended", "once": "paused"}
    client.post(f"/api/workspaces/{WS}/resume")
    conn.zrem("sa:schedule", "ws:once", "ws:capped")  # fired (max_firings reached): no entry left
    jobs = listed(client)
    assert (jobs["once"]["state"], jobs["once"]["next_run_at"]) == ("ended", None)
    assert (jobs["capped"]["state"], jobs["capped"]["next_run_at"]) == ("ended", None)
    assert client.get(f"{LIST}/once").json()["job"]["next_runs"] == []


def test_a_one_off_shows_cron_null_and_its_at(client: TestClient) -> None:
    at = float(int(time.time()) + 3600)
    r = post(client, one_off(at, id="once"))
    assert r.status_code == 200, r.text
    assert r.json()["jobs"] == [
        {
            "jobId": "ws:once",
            "jobName": "ws-trigger-once",
            "cron": None,
            "at": cron.iso(at),
            "url": "https://api.example.com/once",
            "method": "POST",
            "id": "once",
            "state": "active",
        }
    ]
    job = listed(client)["once"]
    assert (job["cron"], job["at"], job["next_run_at"]) == (None, cron.iso(at), cron.iso(at))
    detail = client.get(f"{LIST}/once").json()["job"]
    assert detail["description"] == f"Once, at {cron.iso(at)}"
    assert detail["next_runs"] == [cron.iso(at)]
    assert "at" not in listed_one(client, hook(id="c"))


def listed_one(client: TestClient, trigger: dict[str, Any]) -> dict[str, Any]:
    assert client.put(f"{LIST}/{trigger['id']}", json=trigger).status_code in (200, 201)
    return listed(client)[trigger["id"]]


def test_run_times_shown_are_jittered_and_within_start_and_end(client: TestClient) -> None:
    end = "2030-01-03T09:00:00Z"  # a run time equal to end_at is the last
    r = post(client, hook(id="j", start_at=START, end_at=end, jitter_seconds=3600), hook(id="n", start_at=START))
    assert r.status_code == 200, r.text
    jobs = listed(client)
    assert jobs["j"]["next_run_at"] == JITTERED[0]
    assert jobs["n"]["next_run_at"] == "2030-01-01T09:00:00Z"
    detail = client.get(f"{LIST}/j").json()["job"]
    assert detail["next_runs"] == JITTERED
    assert detail["description"] == "At 09:00"
    for shown, nominal in zip(JITTERED, ["2030-01-01", "2030-01-02", "2030-01-03"], strict=True):
        offset = jitter_offset(f"ws:j@{nominal}T09:00:00Z", 3600)
        assert 0 <= offset < 3600
        assert cron.iso(parse(f"{nominal}T09:00:00Z") + offset) == shown
    unbounded = client.get(f"{LIST}/n").json()["job"]["next_runs"]
    assert unbounded == [f"2030-01-0{d}T09:00:00Z" for d in range(1, 6)]


def test_deliveries_filter_by_skipped(client: TestClient) -> None:
    r = client.get(f"/api/workspaces/{WS}/deliveries", params={"outcome": "skipped"})
    assert r.status_code == 200 and r.json()["deliveries"] == []
    details = assert_error(client.get(f"/api/workspaces/{WS}/deliveries", params={"outcome": "ended"}), 400)
    assert "skipped" in details["details"][0]["message"]


def test_next_runs_stop_after_the_firings_max_firings_leaves(client: TestClient, conn: Redis) -> None:
    assert post(client, hook(id="m", start_at=START, max_firings=3)).status_code == 200
    assert len(client.get(f"{LIST}/m").json()["job"]["next_runs"]) == 3
    conn.hset(f"sa:state:{WS}", "m#", 2)  # two firings made (storage/lua/commit_due.lua counts them)
    assert client.get(f"{LIST}/m").json()["job"]["next_runs"] == ["2030-01-01T09:00:00Z"]


def test_an_end_in_the_past_ends_an_existing_trigger(client: TestClient, conn: Redis) -> None:
    assert post(client, hook(id="e")).status_code == 200
    assert conn.zscore("sa:schedule", "ws:e") is not None
    r = client.put(f"{LIST}/e", json=hook(end_at="2020-01-01T00:00:00Z"))
    assert r.status_code == 200, r.text
    assert (r.json()["job"]["state"], r.json()["job"]["next_run_at"]) == ("ended", None)
    assert conn.zscore("sa:schedule", "ws:e") is None
    r = client.put(f"{LIST}/e", json=hook())  # replaced: active again
    assert r.json()["job"]["state"] == "active" and conn.zscore("sa:schedule", "ws:e") is not None
