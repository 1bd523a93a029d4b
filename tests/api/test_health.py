"""`scheduler_api.api.routes.health`: `/health` and `/ready` (`/metrics`: tests/test_metrics.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient


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
