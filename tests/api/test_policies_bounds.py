"""Times of the policy fields at the edges: out-of-range instants are a 400 (never a 500 when shown),
and times are kept to the millisecond, so what a client reads back and sends again is unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.storage import keys
from tests.support.factories import WS, triggers_url

LIST = triggers_url(WS)
MERGE = {"content-type": "application/merge-patch+json"}


def hook(**more: Any) -> dict[str, Any]:
    return {"cron": "0 9 * * *", "url": "https://api.example.com/hook", "method": "POST", **more}


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"start_at": "0001-01-01T00:00:00+01:00"}, "triggers[0].start_at"),
        ({"end_at": "0001-01-01T00:00:00Z"}, "triggers[0].end_at"),
        ({"end_at": "9999-12-31T23:59:59-14:00"}, "triggers[0].end_at"),
        ({"start_at": "9999-06-01T00:00:00Z"}, "triggers[0].start_at"),
        ({"cron": None, "at": "0001-01-01T00:00:00Z"}, "triggers[0].at"),
    ],
)
def test_times_out_of_range_are_refused(client: TestClient, changes: dict[str, Any], path: str) -> None:
    r = client.post(LIST, json={"triggers": [hook(**changes)]})
    assert r.status_code == 400, r.text
    assert [d["path"] for d in r.json()["details"]] == [path]
    assert "between 1970-01-01 and 9998-12-31" in r.json()["details"][0]["message"]
    assert client.get(LIST).status_code == 200


def test_preview_with_jitter_near_the_end_of_time_is_a_400(client: TestClient) -> None:
    body = {"cron": "* * * * *", "jitter_seconds": 3600, "workspace_id": "w", "trigger_id": "t"}
    r = client.post("/api/cron/preview", json={**body, "after": "9999-12-31T23:00:00Z"})
    assert r.status_code == 400, r.text
    assert r.json()["details"][0]["path"] == "after"


def test_times_round_trip_to_the_millisecond(client: TestClient, conn: Redis) -> None:
    """A PATCH of the url of a trigger whose start_at had microseconds keeps its version and its
    count of firings: the stored time is the one the API shows."""
    body = hook(id="m", start_at="2020-01-01T00:00:00.123456Z", max_firings=1)
    assert client.put(f"{LIST}/m", json=body).status_code == 201
    shown = client.get(f"{LIST}/m").json()["job"]
    assert shown["start_at"] == "2020-01-01T00:00:00.123Z"
    version = conn.hget(keys.workspace(WS), "m")
    assert version is not None and b'"start_at":1577836800.123,' in version
    conn.zrem(keys.SCHEDULE, keys.job_id(WS, "m"))  # as if it had fired once and ended
    conn.hset(keys.state(WS), "m#", 1)
    r = client.patch(f"{LIST}/m", json={"url": "https://api.example.com/b"}, headers=MERGE)
    assert r.status_code == 200, r.text
    assert r.json()["job"]["state"] == "ended" and r.json()["job"]["next_run_at"] is None
    assert conn.hget(keys.state(WS), "m#") == b"1"
    # Sending back the time exactly as shown changes nothing either.
    dry = client.post(LIST, params={"dry_run": "true"}, json={"triggers": [{**body, "start_at": shown["start_at"]}]})
    assert "start_at" not in str(dry.json()["diff"]["changed"])
