"""Calls to the API that many tests make, each checking the answer's shape before returning it."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from scheduler_api import cron


def post_triggers(client: TestClient, ws: str, triggers: list[dict[str, Any]]) -> Any:
    """Replace the workspace's triggers (`POST /api/workspaces/{ws}/triggers`); the response, unchecked."""
    return client.post(f"/api/workspaces/{ws}/triggers", json={"triggers": triggers})


def jobs(client: TestClient, ws: str) -> list[dict[str, Any]]:
    """The workspace's listed triggers (`GET .../triggers`, 200)."""
    r = client.get(f"/api/workspaces/{ws}/triggers")
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["jobs"]
    return out


def deliveries(client: TestClient, ws: str = "ws", **params: Any) -> list[dict[str, Any]]:
    """The workspace's delivery records (`GET .../deliveries` with `params`), its answer's shape checked."""
    r = client.get(f"/api/workspaces/{ws}/deliveries", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"success", "workspace_id", "count", "deliveries"}
    assert body["success"] is True and body["workspace_id"] == ws
    assert body["count"] == len(body["deliveries"])
    records: list[dict[str, Any]] = body["deliveries"]
    return records


def expected_runs(expr: str, tz: str, before: float, after: float, n: int) -> list[list[str]]:
    """The run lists the API may answer, computed at any instant it could have used."""
    parsed = cron.parse(expr, tz)
    return [[cron.iso(x) for x in parsed.next_runs(t, n)] for t in (before, after)]
