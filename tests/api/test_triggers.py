"""`scheduler_api.api.routes.triggers`: replace / list / delete a workspace's triggers, one trigger with
its next runs, and "run now", through starlette's TestClient: answer shapes, next runs and schedule
state, header values never shown, isolation between workspaces and atomic replaces.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from croniter import croniter
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from scheduler_api.api import create_app
from scheduler_api.delivery import worker
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, firings
from scheduler_api.triggers import Trigger
from tests.support.api import expected_runs, jobs, post_triggers
from tests.support.assertions import assert_error
from tests.support.clock import YEARLY, T
from tests.support.factories import (
    OTHER_SECRET,
    README_TRIGGERS,
    SECRET,
    TRIGGERS,
    TRIGGERS_SECRET,
    make_settings,
    trigger_body,
    triggers_url,
)
from tests.support.receiver import Receiver, headers_of
from tests.support.redis_state import schedule_count


def test_post_response_has_the_original_shape(client: TestClient) -> None:
    r = client.post(triggers_url("workspace-123"), json={"triggers": README_TRIGGERS})
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
                "id": "0",
                "state": "active",
            },
            {
                "jobId": "workspace-123:1",
                "jobName": "workspace-123-trigger-1",
                "cron": "0 9 * * 1-5",
                "url": "https://api.example.com/report",
                "method": "GET",
                "id": "1",
                "state": "active",
            },
        ],
    }


def test_post_replaces_the_whole_list(client: TestClient, conn: Redis) -> None:
    client.post(triggers_url("ws"), json={"triggers": [trigger_body(i) for i in range(3)]})
    r = client.post(triggers_url("ws"), json={"triggers": [trigger_body(7, method="delete")]})
    assert r.status_code == 200
    body = r.json()
    assert (body["removed"], body["added"]) == (3, 1)
    assert body["jobs"] == [
        {
            "jobId": "ws:0",
            "jobName": "ws-trigger-0",
            "cron": "0 9 * * 1-5",
            "url": trigger_body(7)["url"],
            "method": "DELETE",
            "id": "0",
            "state": "active",
        }
    ]
    listed = client.get(triggers_url("ws")).json()
    assert listed["count"] == 1 and listed["jobs"][0]["url"] == trigger_body(7)["url"]
    assert conn.hlen("sa:ws:ws") == 1 and schedule_count(conn, "ws") == 1


def test_post_empty_list_clears(client: TestClient, conn: Redis) -> None:
    client.post(triggers_url("ws"), json={"triggers": [trigger_body(0), trigger_body(1)]})
    r = client.post(triggers_url("ws"), json={"triggers": []})
    assert r.json() == {"success": True, "workspace_id": "ws", "removed": 2, "added": 0, "jobs": []}
    assert client.get(triggers_url("ws")).json()["count"] == 0
    assert schedule_count(conn, "ws") == 0


def test_get_lists_jobs_with_count(client: TestClient) -> None:
    posted = client.post(triggers_url("workspace-123"), json={"triggers": README_TRIGGERS}).json()
    r = client.get(triggers_url("workspace-123"))
    assert r.status_code == 200
    body = r.json()
    assert {"success", "workspace_id", "count", "jobs"} <= set(body)
    assert body["success"] is True and body["workspace_id"] == "workspace-123"
    assert body["count"] == 2 == len(body["jobs"])
    base_keys = ("jobId", "jobName", "cron", "url", "method", "id", "state")
    assert [{k: j[k] for k in base_keys} for j in body["jobs"]] == posted["jobs"]
    assert body["jobs"][0]["header_names"] == ["Authorization", "Content-Type"]
    assert body["jobs"][0]["has_payload"] is True
    assert body["jobs"][1]["header_names"] == ["X-API-Key"]
    assert body["jobs"][1]["has_payload"] is False


def test_unknown_workspace_is_an_empty_list(client: TestClient) -> None:
    r = client.get(triggers_url("never-seen"))
    assert r.status_code == 200
    assert r.json() == {"success": True, "workspace_id": "never-seen", "count": 0, "jobs": []}
    r = client.delete(triggers_url("never-seen"))
    assert r.status_code == 200
    assert r.json() == {"success": True, "workspace_id": "never-seen", "removed": 0}


def test_delete_removes_everything(client: TestClient, conn: Redis) -> None:
    client.post(triggers_url("workspace-123"), json={"triggers": README_TRIGGERS})
    r = client.delete(triggers_url("workspace-123"))
    assert r.status_code == 200
    assert r.json() == {"success": True, "workspace_id": "workspace-123", "removed": 2}
    assert client.get(triggers_url("workspace-123")).json()["count"] == 0
    assert not conn.exists("sa:ws:workspace-123")
    assert schedule_count(conn, "workspace-123") == 0
    assert client.delete(triggers_url("workspace-123")).json()["removed"] == 0


def test_next_run_at_is_the_crons_next_time(client: TestClient) -> None:
    crons = ["0 9 * * 1-5", "@yearly", "30 0 12 * * *", "*/15 * * * *"]
    before = time.time()
    client.post(triggers_url("ws"), json={"triggers": [trigger_body(i, cron=c) for i, c in enumerate(crons)]})
    after = time.time()
    jobs = client.get(triggers_url("ws")).json()["jobs"]
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


def test_header_values_never_appear_in_any_response(client: TestClient) -> None:
    texts = []
    texts.append(client.post(triggers_url("ws"), json={"triggers": README_TRIGGERS}).text)
    texts.append(client.get(triggers_url("ws")).text)
    # An invalid request that carries the secrets in its valid triggers.
    bad = [*README_TRIGGERS, trigger_body(2, cron="nope")]
    rejected = client.post(triggers_url("ws"), json={"triggers": bad})
    assert_error(rejected, 400)
    texts.append(rejected.text)
    # A header value that is itself invalid, or of the wrong type, is not echoed either.
    texts.append(
        client.post(triggers_url("ws"), json={"triggers": [trigger_body(0, headers={"X-T": SECRET + "\r\nX: 1"})]}).text
    )
    texts.append(client.post(triggers_url("ws"), json={"triggers": [trigger_body(0, headers={"X-T": [SECRET]})]}).text)
    texts.append(
        client.post(triggers_url("ws"), json={"triggers": [trigger_body(0, headers={"X-T": {"v": SECRET}})]}).text
    )
    texts.append(client.post(triggers_url("a:b"), json={"triggers": README_TRIGGERS}).text)
    texts.append(client.delete(triggers_url("ws")).text)
    assert all(texts)
    for text in texts:
        assert SECRET not in text
        assert "Very-Secret" not in text
        assert OTHER_SECRET not in text
    # The names are shown.
    assert "Authorization" in texts[1] and "X-API-Key" in texts[1]


def test_workspaces_are_isolated(client: TestClient, conn: Redis) -> None:
    client.post(triggers_url("B"), json={"triggers": [trigger_body(10), trigger_body(11)]})
    client.post(triggers_url("A.b"), json={"triggers": [trigger_body(20)]})
    b_api = client.get(triggers_url("B")).json()
    b_redis = (conn.hgetall("sa:ws:B"), schedule_count(conn, "B"))
    ab_api = client.get(triggers_url("A.b")).json()

    client.post(triggers_url("A"), json={"triggers": [trigger_body(1), trigger_body(2), trigger_body(3)]})
    client.post(triggers_url("A"), json={"triggers": [trigger_body(4)]})
    assert client.get(triggers_url("B")).json() == b_api
    client.delete(triggers_url("A"))
    assert client.get(triggers_url("A")).json()["count"] == 0
    assert client.get(triggers_url("B")).json() == b_api
    assert client.get(triggers_url("A.b")).json() == ab_api
    assert (conn.hgetall("sa:ws:B"), schedule_count(conn, "B")) == b_redis
    assert schedule_count(conn, "A") == 0


def test_concurrent_replaces_through_the_api(client: TestClient, conn: Redis) -> None:
    client.post(triggers_url("other"), json={"triggers": [trigger_body(0), trigger_body(1)]})
    other_before = client.get(triggers_url("other")).json()
    submitted = {
        n: [trigger_body(i, url=f"https://list{n}.example/{i}", cron="0 0 1 1 *") for i in range(n + 1)]
        for n in range(20)
    }
    barrier = threading.Barrier(21)
    done = threading.Event()
    seen: list[list[str]] = []
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            r = client.post(triggers_url("ws"), json={"triggers": submitted[n]})
            assert r.status_code == 200, r.text
            assert [j["url"] for j in r.json()["jobs"]] == [t["url"] for t in submitted[n]]
        except BaseException as e:  # reported below
            errors.append(e)

    def reader() -> None:
        try:
            barrier.wait()
            while True:
                finished = done.is_set()
                body = client.get(triggers_url("ws")).json()
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
    final = client.get(triggers_url("ws")).json()
    final_urls = [j["url"] for j in final["jobs"]]
    assert final_urls in lists
    n = lists.index(final_urls)
    assert [j["jobId"] for j in final["jobs"]] == [f"ws:{i}" for i in range(n + 1)]
    assert final["count"] == n + 1 == schedule_count(conn, "ws") == conn.hlen("sa:ws:ws")
    assert client.get(triggers_url("other")).json() == other_before


def test_replace_answer_keeps_its_original_shape(client: TestClient) -> None:
    r = post_triggers(client, "ws", TRIGGERS)
    assert r.status_code == 200, r.text
    body = r.json()
    # `warnings` only when there are some (here: trigger 0's local 01:30 repeats at fall-back).
    assert set(body) == {"success", "workspace_id", "removed", "added", "jobs", "warnings"}
    assert {w["code"] for w in body["warnings"]} <= {"dst_repeated", "dst_skipped", "overlap_risk"}
    for job in body["jobs"]:
        assert set(job) == {"jobId", "jobName", "cron", "url", "method", "id", "state"}


def test_list_shows_next_run_timezone_enabled_paused_and_header_names_only(client: TestClient) -> None:
    before = time.time()
    assert post_triggers(client, "ws", TRIGGERS).status_code == 200
    after = time.time()
    r = client.get("/api/workspaces/ws/triggers")
    assert r.status_code == 200
    assert TRIGGERS_SECRET not in r.text and "also-secret" not in r.text
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
    edits.replace(
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


def test_explicit_utc_and_null_timezone_are_the_default(client: TestClient) -> None:
    assert (
        post_triggers(client, "ws", [{**TRIGGERS[2], "timezone": None}, {**TRIGGERS[2], "timezone": "UTC"}]).status_code
        == 200
    )
    jobs = client.get("/api/workspaces/ws/triggers").json()["jobs"]
    assert [j["timezone"] for j in jobs] == ["UTC", "UTC"]
    assert jobs[0]["next_run_at"] == jobs[1]["next_run_at"]


def test_get_one_trigger_with_next_five_runs_and_description(client: TestClient) -> None:
    assert post_triggers(client, "ws", TRIGGERS).status_code == 200
    listed = client.get("/api/workspaces/ws/triggers").json()["jobs"]
    for i, spec in enumerate(TRIGGERS):
        before = time.time()
        r = client.get(f"/api/workspaces/ws/triggers/{i}")
        after = time.time()
        assert r.status_code == 200, r.text
        assert TRIGGERS_SECRET not in r.text and "also-secret" not in r.text
        body = r.json()
        assert set(body) == {"success", "workspace_id", "job"} and body["success"] is True
        job = body["job"]
        assert {k: v for k, v in job.items() if k not in ("description", "next_runs", "payload")} == listed[i]
        assert job["payload"] == spec.get("payload")
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
    from cryptography.fernet import Fernet

    settings = make_settings(redis_url, secrets_key=Fernet.generate_key().decode())
    with TestClient(create_app(settings)) as c:
        assert post_triggers(c, "ws", TRIGGERS[:1]).status_code == 200
        r = c.get("/api/workspaces/ws/triggers/0")
        assert r.status_code == 200
        assert r.json()["job"]["header_names"] == ["Authorization", "X-Trace"]
        assert TRIGGERS_SECRET not in r.text and "gAAAA" not in r.text  # neither the value nor its ciphertext


def test_unknown_trigger_index_is_a_404_in_the_error_shape(client: TestClient) -> None:
    assert post_triggers(client, "ws", TRIGGERS).status_code == 200
    for path in ("/api/workspaces/ws/triggers/3", "/api/workspaces/ws/triggers/999", "/api/workspaces/nope/triggers/0"):
        details = assert_error(client.get(path), 404)["details"]
        assert details and details[0]["path"] == "trigger_id"
    for path in (
        "/api/workspaces/ws/triggers/a:b",
        "/api/workspaces/ws/triggers/" + "x" * 65,
        "/api/workspaces/ws/triggers/%C3%A9",
    ):
        assert_error(client.get(path), 400)
    assert client.delete("/api/workspaces/ws/triggers").status_code == 200
    assert_error(client.get("/api/workspaces/ws/triggers/0"), 404)


def test_enabled_flag_through_the_api(client: TestClient) -> None:
    body = {
        "triggers": [
            {"cron": "0 9 * * *", "url": "https://example.com/a", "method": "GET", "enabled": False},
            {"cron": "0 9 * * *", "url": "https://example.com/b", "method": "GET"},
        ]
    }
    assert client.post("/api/workspaces/ws/triggers", json=body).status_code == 200
    listed = jobs(client, "ws")
    assert [(j["enabled"], j["paused"]) for j in listed] == [(False, True), (True, False)]
    assert listed[0]["next_run_at"] == listed[1]["next_run_at"]  # a disabled trigger keeps its schedule


def _drive(conn: Redis, settings: Settings, done: Any, timeout: float = 10.0) -> None:
    """Tick with the real clock and deliver until `done()`."""
    queue = Queue(settings.queue_name, connection=conn)
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not reached in time"
        ticking.tick(conn, queue, settings, now=time.time())
        worker.run_worker(settings, conn, burst=True)
        time.sleep(0.01)


def test_run_now_fires_once_with_retries_and_a_history_record(
    client: TestClient, conn: Redis, settings: Settings, receiver: Receiver
) -> None:
    receiver.on("/run", (503, 0))  # the first attempt fails, the retry succeeds
    edits.replace(
        conn,
        "ws",
        [
            Trigger(cron=YEARLY, url=receiver.url + "/other", method="GET"),
            Trigger(
                cron=YEARLY,
                url=receiver.url + "/run",
                method="POST",
                payload={"x": 1},
                headers={"X-Custom": "v"},
            ),
        ],
    )
    before = time.time()
    r = client.post("/api/workspaces/ws/triggers/1/run")
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {"success", "workspace_id", "jobId", "firing_id"}
    assert (body["success"], body["workspace_id"], body["jobId"]) == (True, "ws", "ws:1")
    firing_id = body["firing_id"]
    assert firing_id.startswith("ws:1@") and firing_id.endswith("Z")
    stamp = datetime.fromisoformat(firing_id.partition("@")[2]).timestamp()
    assert before - 0.01 <= stamp <= time.time() + 0.01

    def final() -> bool:
        rec = firings.get_record(conn, firing_id)
        return rec is not None and rec["outcome"] == "delivered"

    _drive(conn, settings, final)
    reqs = receiver.to("/run")
    assert [headers_of(q)["x-scheduler-attempt"] for q in reqs] == ["1", "2"]
    assert {headers_of(q)["idempotency-key"] for q in reqs} == {firing_id}
    assert all(q.json() == {"x": 1} and headers_of(q)["x-custom"] == "v" for q in reqs)
    assert receiver.to("/other") == []
    [rec] = client.get("/api/workspaces/ws/deliveries", params={"trigger": 1}).json()["deliveries"]
    assert rec["id"] == firing_id and rec["outcome"] == "delivered"
    assert [a["status"] for a in rec["attempts"]] == [503, 200]
    # The schedule itself did not move.
    assert jobs(client, "ws")[1]["next_run_at"].endswith("-01-01T00:00:00Z")


def test_run_now_unknown_index_or_workspace_is_404(client: TestClient, conn: Redis) -> None:
    body = {"triggers": [{"cron": YEARLY, "url": "https://example.com/a", "method": "GET"}]}
    assert client.post("/api/workspaces/ws/triggers", json=body).status_code == 200
    size = conn.dbsize()
    for path in ("/api/workspaces/ws/triggers/1/run", "/api/workspaces/nobody/triggers/0/run"):
        r = client.post(path)
        assert r.status_code == 404, r.text
        assert r.json()["success"] is False and r.json()["details"][0]["path"] == "trigger_id"
    assert client.post("/api/workspaces/ws/triggers/a:b/run").status_code == 400
    assert conn.dbsize() == size  # nothing enqueued
