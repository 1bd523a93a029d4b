"""Editing per-trigger delivery policies: PATCH (merge, null removes, versions), the dry run's diff, the
overlap_risk warning with the trigger's own timeout and retries, the cron preview with jitter, and the
CLI's `get` / `apply` round trip (scheduler_api.api.patches, scheduler_api.storage.edits,
scheduler_api.schedule_warnings, scheduler_api.api.routes.cron, scheduler_api.apply)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api import apply as cli_apply
from scheduler_api import cron
from scheduler_api.policy import jitter_offset
from tests.support.assertions import assert_error
from tests.support.clock import parse
from tests.support.factories import WS, triggers_url

LIST = triggers_url(WS)
PREVIEW = "/api/cron/preview"


def hook(**more: Any) -> dict[str, Any]:
    return {"cron": "0 9 * * *", "url": "https://api.example.com/hook", "method": "POST", **more}


def stored(conn: Redis, trigger_id: str) -> tuple[dict[str, Any], float | None]:
    """(The stored definition, the schedule entry's score)."""
    raw = conn.hget(f"sa:ws:{WS}", trigger_id)
    assert raw is not None
    return json.loads(raw), conn.zscore("sa:schedule", f"{WS}:{trigger_id}")


def patch(client: TestClient, trigger_id: str, body: dict[str, Any]) -> Any:
    return client.patch(
        f"{LIST}/{trigger_id}", content=json.dumps(body), headers={"Content-Type": "application/merge-patch+json"}
    )


def test_patch_merges_policy_fields_and_null_removes_them(client: TestClient, conn: Redis) -> None:
    r = client.put(f"{LIST}/p", json=hook(retry={"max_retries": 5, "backoff_seconds": 2}, timeout_seconds=9))
    assert r.status_code == 201, r.text
    (first, score) = stored(conn, "p")
    r = patch(client, "p", {"retry": {"max_retries": 1}, "success": {"status": ["2xx", 302]}, "overlap": "skip"})
    assert r.status_code == 200, r.text
    job = r.json()["job"]
    assert job["retry"] == {"max_retries": 1, "backoff_seconds": 2.0}
    assert (job["timeout_seconds"], job["success"], job["overlap"]) == (9, {"status": [302, "2xx"]}, "skip")
    (after, after_score) = stored(conn, "p")
    assert after["v"] == first["v"] and after_score == score  # delivery fields keep version and schedule
    r = patch(client, "p", {"retry": None, "timeout_seconds": None})
    assert r.status_code == 200, r.text
    assert not {"retry", "timeout_seconds"} & set(r.json()["job"])
    assert stored(conn, "p")[0]["p"] == {"success": {"status": [302, "2xx"]}, "overlap": "skip"}
    r = patch(client, "p", {"jitter_seconds": 30, "end_at": "2040-01-01T00:00:00+02:00"})
    assert r.status_code == 200, r.text
    assert r.json()["job"]["end_at"] == "2039-12-31T22:00:00Z"
    (moved, _) = stored(conn, "p")
    assert moved["v"] != first["v"]  # schedule fields: a new version (firings not yet started dropped)
    for body, path, fragment in [
        ({"cron": None}, "cron", "exactly one of cron and at is required"),
        ({"at": "2040-01-01T00:00:00Z"}, "cron", "exactly one of cron and at is required"),
        ({"start_at": "2041-01-01T00:00:00Z"}, "end_at", "end_at must be after start_at"),
        ({"retry": {"max_retries": 99}}, "retry.max_retries", "20"),
    ]:
        details = assert_error(patch(client, "p", body), 400)["details"]
        assert [d["path"] for d in details] == [path] and fragment in details[0]["message"], details


def test_patch_of_a_one_off_keeps_its_at(client: TestClient, conn: Redis) -> None:
    at = cron.iso(int(time.time()) + 3600)
    assert client.put(f"{LIST}/once", json={"at": at, "url": "https://a.example/", "method": "GET"}).status_code == 201
    (first, score) = stored(conn, "once")
    r = patch(client, "once", {"url": "https://b.example/", "headers": {"X-A": "b"}})
    assert r.status_code == 200, r.text
    assert (r.json()["job"]["cron"], r.json()["job"]["at"], r.json()["job"]["header_names"]) == (None, at, ["X-A"])
    assert r.json()["job"]["state"] == "active"
    (after, after_score) = stored(conn, "once")
    assert (after["at"], after["v"], after_score) == (first["at"], first["v"], score)
    r = patch(client, "once", {"at": None, "cron": "0 9 * * *"})
    assert r.status_code == 200, r.text
    assert "at" not in r.json()["job"] and r.json()["job"]["cron"] == "0 9 * * *"


def test_dry_run_diff_names_the_changed_policy_fields(client: TestClient, conn: Redis) -> None:
    base = hook(id="a", final_statuses=[404, "5xx"], retry={"max_retries": 2})
    assert client.post(LIST, json={"triggers": [base]}).status_code == 200
    # The same statuses in another order are no change.
    changed = {**base, "final_statuses": ["5xx", 404], "timeout_seconds": 5, "retry": {"max_retries": 3}}
    r = client.post(LIST, params={"dry_run": "true"}, json={"triggers": [changed]})
    assert r.status_code == 200, r.text
    assert r.json()["diff"]["changed"] == [{"id": "a", "fields": ["timeout_seconds", "retry"]}]
    assert r.json()["jobs"][0]["state"] == "active"
    r = client.post(LIST, params={"dry_run": "true"}, json={"triggers": [{**base, "start_at": "2030-01-01T00:00:00Z"}]})
    assert r.json()["diff"]["changed"] == [{"id": "a", "fields": ["start_at"]}]
    assert r.json()["jobs"][0]["next_run_at"] == "2030-01-01T09:00:00Z"
    same = {**base, "final_statuses": ["5xx", 404]}
    r = client.post(LIST, params={"dry_run": "true"}, json={"triggers": [same]})
    assert r.json()["diff"] == {"added": [], "removed": [], "changed": [], "unchanged": ["a"]}


def test_overlap_risk_uses_the_trigger_s_own_timeout_and_retries(client: TestClient) -> None:
    minutely = {"cron": "* * * * *", "url": "https://api.example.com/m", "method": "POST"}
    # The test settings: 2 s timeout, 3 retries, 0.05 s backoff: one firing lasts at most 8.35 s.
    r = client.post(LIST, params={"dry_run": "true"}, json={"triggers": [minutely]})
    assert r.json()["warnings"] == []
    slow = {**minutely, "timeout_seconds": 30, "retry": {"max_retries": 1, "backoff_seconds": 1}}
    skip = {**slow, "overlap": "skip"}
    capped = {
        **minutely,
        "timeout_seconds": 5,
        "retry": {"max_retries": 8, "backoff_seconds": 1, "max_backoff_seconds": 2},
    }
    r = client.post(LIST, params={"dry_run": "true"}, json={"triggers": [minutely, slow, skip, capped]})
    warnings = r.json()["warnings"]
    assert [(w["path"], w["code"]) for w in warnings] == [
        ("triggers[1]", "overlap_risk"),
        ("triggers[2]", "overlap_risk"),
    ]
    assert "(30 s timeout x 2 attempts + 1 s of backoff between them)" in warnings[0]["message"]
    assert "two firings of it can be in flight at once" in warnings[0]["message"]
    assert "its overlap policy skip will skip a firing due while another is active" in warnings[1]["message"]
    # capped: 5 s x 9 attempts + 1 + 2 x 7 s of backoff = 60 s, not less than the minute between runs
    once = {"at": cron.iso(time.time() + 3600), "url": "https://api.example.com/m", "method": "POST"}
    r = client.post(LIST, params={"dry_run": "true"}, json={"triggers": [{**once, "timeout_seconds": 300}]})
    assert r.json()["warnings"] == []


def test_preview_with_jitter_shows_send_times(client: TestClient) -> None:
    body = {"cron": "0 9 * * *", "after": "2030-01-01T00:00:00Z"}
    plain = client.post(PREVIEW, json=body).json()
    assert "nominal_runs" not in plain
    r = client.post(PREVIEW, json={**body, "jitter_seconds": 3600, "workspace_id": "ws", "trigger_id": "j"})
    assert r.status_code == 200, r.text
    jittered = r.json()
    assert jittered["nominal_runs"] == plain["next_runs"]
    assert jittered["next_runs"][:3] == ["2030-01-01T09:04:13Z", "2030-01-02T09:05:18Z", "2030-01-03T09:47:30Z"]
    for shown, nominal in zip(jittered["next_runs"], plain["next_runs"], strict=True):
        offset = parse(shown) - parse(nominal)
        assert offset == jitter_offset(f"ws:j@{nominal}", 3600) and 0 <= offset < 3600
    assert (
        client.post(PREVIEW, json={**body, "jitter_seconds": 3600, "workspace_id": "ws", "trigger_id": "j"}).json()
        == jittered
    )
    # The same trigger stored shows the same times.
    assert client.put(f"{LIST}/j", json=hook(jitter_seconds=3600, start_at="2030-01-01T00:00:00Z")).status_code == 201
    assert client.get(f"{LIST}/j").json()["job"]["next_runs"] == jittered["next_runs"]


def test_preview_with_jitter_needs_the_ids(client: TestClient) -> None:
    body = {"cron": "0 9 * * *", "jitter_seconds": 60}
    details = assert_error(client.post(PREVIEW, json=body), 400)["details"]
    assert [d["path"] for d in details] == ["workspace_id", "trigger_id"]
    assert "required with jitter_seconds" in details[0]["message"]
    details = assert_error(client.post(PREVIEW, json={**body, "workspace_id": "ws"}), 400)["details"]
    assert [d["path"] for d in details] == ["trigger_id"]
    for bad, path in [
        ({"jitter_seconds": 3601}, "jitter_seconds"),
        ({"jitter_seconds": "5"}, "jitter_seconds"),
        ({"trigger_id": "a:b", "workspace_id": "ws"}, "trigger_id"),
        ({"workspace_id": "a b", "trigger_id": "t"}, "workspace_id"),
        ({"jitter": 5}, "jitter"),
    ]:
        details = assert_error(client.post(PREVIEW, json={**body, **bad}), 400)["details"]
        assert [d["path"] for d in details] == [path], (bad, details)
    assert client.post(PREVIEW, json={"cron": "0 9 * * *", "jitter_seconds": 0}).status_code == 200


def test_get_and_apply_round_trip_the_policy_fields(client: TestClient, tmp_path: Path) -> None:
    at = cron.iso(int(time.time()) + 3600)
    triggers = [
        hook(
            id="p",
            timeout_seconds=12,
            retry={"max_retries": 4, "max_backoff_seconds": 60},
            final_statuses=[404, "4xx"],
            success={"body_contains": "ok"},
            overlap="buffer_one",
            start_at="2030-01-01T00:00:00Z",
            end_at="2031-01-01T00:00:00Z",
            max_firings=3,
            jitter_seconds=5,
        ),
        {"id": "once", "at": at, "url": "https://api.example.com/once", "method": "GET"},
        hook(id="plain"),
    ]
    assert client.post(LIST, json={"triggers": triggers}).status_code == 200
    doc = cli_apply.fetch(client, WS)
    assert doc["triggers"][0] == {
        "id": "p",
        "cron": "0 9 * * *",
        "url": "https://api.example.com/hook",
        "method": "POST",
        "timeout_seconds": 12,
        "retry": {"max_retries": 4, "max_backoff_seconds": 60.0},
        "final_statuses": [404, "4xx"],
        "success": {"body_contains": "ok"},
        "overlap": "buffer_one",
        "start_at": "2030-01-01T00:00:00Z",
        "end_at": "2031-01-01T00:00:00Z",
        "max_firings": 3,
        "jitter_seconds": 5,
    }
    assert doc["triggers"][1] == {"id": "once", "at": at, "url": "https://api.example.com/once", "method": "GET"}
    assert doc["triggers"][2] == {
        "id": "plain",
        "cron": "0 9 * * *",
        "url": "https://api.example.com/hook",
        "method": "POST",
    }
    path = tmp_path / "triggers.yaml"
    path.write_text(cli_apply.dump(doc, "yaml", workspace=WS))
    out = io.StringIO()
    assert cli_apply.run_apply(client, str(path), WS, out=out, err=out) == 0, out.getvalue()
    assert "No changes" in out.getvalue()
    # A hand-written file with an unquoted time (YAML reads it as a date) is sent as its text.
    path.write_text(f"triggers:\n- id: once\n  at: {at}\n  url: https://api.example.com/once\n  method: GET\n")
    out = io.StringIO()
    assert cli_apply.run_apply(client, str(path), WS, dry_run=True, out=out, err=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "- p\n" in text and "once" not in text.replace("1 unchanged", ""), text
    assert "0 to add, 0 to change, 2 to remove, 1 unchanged" in text
