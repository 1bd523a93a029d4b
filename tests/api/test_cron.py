"""`scheduler_api.api.routes.cron`: `POST /api/cron/preview`, the next runs and description of a cron."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from redis import Redis

from tests.support.api import expected_runs, post_triggers
from tests.support.assertions import assert_error
from tests.support.cron_grammar import expressions
from tests.support.factories import TRIGGERS


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
    assert post_triggers(client, "ws", [spec]).status_code == 200
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
    details = assert_error(client.post("/api/cron/preview", json=body), 400)["details"]
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
    details = assert_error(client.post("/api/cron/preview", json={"cron": "0 0 1 1 *", "after": after}), 400)["details"]
    assert [d["path"] for d in details] == ["after"]


@hyp_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(expr=expressions(), tz=st.sampled_from(["UTC", "America/New_York", "Europe/Berlin"]))
def test_no_expression_gets_a_500_from_the_preview_or_the_one_trigger_view(
    client: TestClient, expr: str, tz: str
) -> None:
    """Whatever the validator lets through is previewed, stored and viewed; the rest is a 400."""
    r = client.post("/api/cron/preview", json={"cron": expr, "timezone": tz})
    assert r.status_code in (200, 400), (expr, r.text)
    if r.status_code == 400:
        assert_error(r, 400)
        return
    assert r.json()["description"] and len(r.json()["next_runs"]) == 5
    trigger = {"cron": expr, "timezone": tz, "url": "https://api.example.com/x", "method": "GET"}
    assert client.put("/api/workspaces/grammar/triggers/t", json=trigger).status_code in (200, 201)
    one = client.get("/api/workspaces/grammar/triggers/t")
    assert one.status_code == 200, (expr, one.text)
    assert one.json()["job"]["description"] == r.json()["description"]
