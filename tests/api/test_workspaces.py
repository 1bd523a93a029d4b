"""`scheduler_api.api.routes.workspaces`: pause and resume a workspace."""

from __future__ import annotations

from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.storage import triggers as store
from tests.support.factories import trigger_body, triggers_url


def test_delete_lifts_the_pause_but_a_replace_keeps_it(client: TestClient) -> None:
    client.post(triggers_url("ws"), json={"triggers": [trigger_body(0)]})
    assert client.post("/api/workspaces/ws/pause").status_code == 200
    client.post(triggers_url("ws"), json={"triggers": [trigger_body(1)]})
    assert client.get(triggers_url("ws")).json()["jobs"][0]["paused"] is True
    assert client.delete(triggers_url("ws")).status_code == 200
    client.post(triggers_url("ws"), json={"triggers": [trigger_body(2)]})  # a new workspace under the same id
    assert client.get(triggers_url("ws")).json()["jobs"][0]["paused"] is False


def test_pause_and_resume_endpoints(client: TestClient, conn: Redis) -> None:
    for _ in range(2):  # idempotent
        r = client.post("/api/workspaces/ws/pause")
        assert r.status_code == 200 and r.json() == {"success": True, "workspace_id": "ws", "paused": True}
    assert store.is_paused(conn, "ws") and not store.is_paused(conn, "other")
    for _ in range(2):
        r = client.post("/api/workspaces/ws/resume")
        assert r.status_code == 200 and r.json() == {"success": True, "workspace_id": "ws", "paused": False}
    assert not store.is_paused(conn, "ws")
    r = client.post("/api/workspaces/bad id!/pause")
    assert r.status_code in (400, 404) and r.json()["success"] is False
