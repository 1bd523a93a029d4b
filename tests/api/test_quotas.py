"""The quotas through HTTP (scheduler_api.api.quotas): workspaces and triggers per key scope (403),
write and run-now calls per workspace and minute (429 with Retry-After), all counted in Redis.
Two real API processes sharing one Redis: tests/processes/test_quotas.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.api import create_app
from scheduler_api.storage import edits
from scheduler_api.triggers import Trigger
from tests.support.assertions import assert_error
from tests.support.factories import make_settings, trigger_body, triggers_url
from tests.support.redis_state import every_key

ADMIN = "admin-key-0123456789_abc"  # every workspace: scope "*"
TEAM = "team-key-0123456789-abcd"  # scope "team-*"
OTHER = "other-key-0123456789-abc"  # scope "other-*"
KEYS = f"{ADMIN},{TEAM}:team-*,{OTHER}:other-*"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def triggers(n: int) -> dict[str, Any]:
    return {"triggers": [trigger_body(i) for i in range(n)]}


@pytest.fixture
def make_client(redis_url: str, conn: Redis) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        c = TestClient(create_app(make_settings(redis_url, **overrides)))
        clients.append(c.__enter__())
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def test_workspaces_per_scope(make_client: Any, conn: Redis) -> None:
    c = make_client(api_keys=KEYS, max_workspaces_per_scope=2)
    for ws in ("team-a", "team-b"):
        assert c.post(triggers_url(ws), json=triggers(1), headers=bearer(TEAM)).status_code == 200
    before = every_key(conn)
    r = c.post(triggers_url("team-c"), json=triggers(1), headers=bearer(TEAM))
    body = assert_error(r, 403, "Quota exceeded")
    assert body["details"] == [
        {
            "path": "workspace_id",
            "message": "MAX_WORKSPACES_PER_SCOPE: the workspaces of this key (scope 'team-*') already number 2 "
            "with triggers, the most allowed is 2; remove one first",
        }
    ]
    assert assert_error(c.put(triggers_url("team-c") + "/x", json=trigger_body(0), headers=bearer(TEAM)), 403)
    assert every_key(conn) == before
    assert c.get(triggers_url("team-c"), headers=bearer(TEAM)).json()["count"] == 0
    # A dry run says the same, and writing to a workspace the scope already holds still works.
    dry = c.post(triggers_url("team-c"), json=triggers(1), headers=bearer(TEAM), params={"dry_run": "true"})
    assert_error(dry, 403, "Quota exceeded")
    assert c.post(triggers_url("team-a"), json=triggers(3), headers=bearer(TEAM)).status_code == 200
    # Another scope has its own room.
    assert c.post(triggers_url("other-a"), json=triggers(1), headers=bearer(OTHER)).status_code == 200
    # An empty list holds no workspace: deleting one (or emptying it) gives its place back.
    assert c.post(triggers_url("team-b"), json=triggers(0), headers=bearer(TEAM)).status_code == 200
    assert c.post(triggers_url("team-c"), json=triggers(1), headers=bearer(TEAM)).status_code == 200
    assert c.delete(triggers_url("team-a"), headers=bearer(TEAM)).status_code == 200
    assert c.put(triggers_url("team-d") + "/x", json=trigger_body(0), headers=bearer(TEAM)).status_code == 201


def test_the_all_workspace_key_is_one_scope_and_counts_what_others_wrote(make_client: Any) -> None:
    c = make_client(api_keys=KEYS, max_workspaces_per_scope=2)
    assert c.post(triggers_url("team-a"), json=triggers(1), headers=bearer(TEAM)).status_code == 200
    assert c.post(triggers_url("x"), json=triggers(1), headers=bearer(ADMIN)).status_code == 200
    body = assert_error(c.post(triggers_url("y"), json=triggers(1), headers=bearer(ADMIN)), 403, "Quota exceeded")
    assert "(scope '*') already number 2" in body["details"][0]["message"]
    # The team key's scope holds one workspace (team-a): room for one more.
    assert c.post(triggers_url("team-b"), json=triggers(1), headers=bearer(TEAM)).status_code == 200
    # Deleting team-a with the admin key frees the team scope's place too.
    assert c.delete(triggers_url("team-a"), headers=bearer(ADMIN)).status_code == 200
    assert c.post(triggers_url("team-c"), json=triggers(1), headers=bearer(TEAM)).status_code == 200


def test_without_keys_the_whole_api_is_one_scope(make_client: Any, conn: Redis) -> None:
    # Workspaces written before the quota was first checked (here: straight into storage) count too.
    c = make_client(max_workspaces_per_scope=3)
    edits.replace(conn, "old", [Trigger.model_validate(trigger_body(0))])
    edits.replace(conn, "older", [Trigger.model_validate(trigger_body(0))])
    assert c.post(triggers_url("a"), json=triggers(1)).status_code == 200
    assert_error(c.post(triggers_url("b"), json=triggers(1)), 403, "Quota exceeded")


def test_triggers_per_scope(make_client: Any, conn: Redis) -> None:
    c = make_client(api_keys=KEYS, max_triggers_per_scope=5)
    assert c.post(triggers_url("team-a"), json=triggers(3), headers=bearer(TEAM)).status_code == 200
    assert c.post(triggers_url("team-b"), json=triggers(2), headers=bearer(TEAM)).status_code == 200
    before = every_key(conn)
    body = assert_error(c.post(triggers_url("team-b"), json=triggers(3), headers=bearer(TEAM)), 403, "Quota exceeded")
    assert body["details"] == [
        {
            "path": "triggers",
            "message": "MAX_TRIGGERS_PER_SCOPE: the workspaces of this key (scope 'team-*') hold 5 triggers; "
            "this write would take them over 5",
        }
    ]
    assert_error(c.put(triggers_url("team-a") + "/new", json=trigger_body(9), headers=bearer(TEAM)), 403)
    assert every_key(conn) == before
    # Replacing one in place adds nothing; removing one makes room for one.
    assert c.put(triggers_url("team-a") + "/0", json=trigger_body(7), headers=bearer(TEAM)).status_code == 200
    assert c.delete(triggers_url("team-a") + "/1", headers=bearer(TEAM)).status_code == 200
    assert c.put(triggers_url("team-a") + "/new", json=trigger_body(9), headers=bearer(TEAM)).status_code == 201
    assert sum(c.get(triggers_url(ws), headers=bearer(TEAM)).json()["count"] for ws in ("team-a", "team-b")) == 5


def test_writes_per_minute(make_client: Any, conn: Redis) -> None:
    c = make_client(writes_per_minute=3)
    assert c.post(triggers_url("ws"), json=triggers(1)).status_code == 200
    assert c.put(triggers_url("ws") + "/a", json=trigger_body(1)).status_code == 201
    assert c.delete(triggers_url("ws") + "/a", params={"dry_run": "true"}).status_code == 200  # dry runs count
    before = every_key(conn)
    for write in (
        lambda: c.post(triggers_url("ws"), json=triggers(2)),
        lambda: c.patch(triggers_url("ws") + "/a", json={"method": "POST"}),
        lambda: c.delete(triggers_url("ws")),
    ):
        r = write()
        body = assert_error(r, 429, "Too many requests")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        [detail] = body["details"]
        assert detail["path"] == "workspace_id"
        assert detail["message"].startswith("WRITES_PER_MINUTE: at most 3 write calls a minute on workspace 'ws'")
    assert every_key(conn) == before
    assert c.get(triggers_url("ws")).json()["count"] == 2  # reads are not limited
    assert c.post(triggers_url("other"), json=triggers(1)).status_code == 200  # per workspace
    # The window ends: writes pass again.
    conn.delete("sa:rate:write:ws")
    assert c.delete(triggers_url("ws")).status_code == 200


def test_run_now_per_minute(make_client: Any, conn: Redis) -> None:
    c = make_client(run_now_per_minute=2)
    assert c.put(triggers_url("ws") + "/t", json=trigger_body(0)).status_code == 201
    run = triggers_url("ws") + "/t/run"
    assert [c.post(run).status_code for _ in range(2)] == [202, 202]
    r = c.post(run)
    body = assert_error(r, 429, "Too many requests")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert body["details"][0]["message"].startswith("RUN_NOW_PER_MINUTE: at most 2 run-now calls a minute")
    # Writes have their own counter.
    assert c.put(triggers_url("ws") + "/u", json=trigger_body(1)).status_code == 201
