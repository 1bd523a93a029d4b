"""Trigger identity and editing through the HTTP API: ids, one-trigger PUT / PATCH / DELETE, ETag and
If-Match, dry runs with their diff and warnings (scheduler_api.api.routes.triggers,
scheduler_api.storage.edits)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from scheduler_api.api import create_app
from scheduler_api.settings import Settings
from scheduler_api.storage import keys
from tests.support.assertions import assert_error
from tests.support.engine import deliver, drive
from tests.support.factories import WS, make_engine_settings, triggers_url
from tests.support.receiver import Receiver, headers_of
from tests.support.redis_state import every_key, schedule_count

LIST = triggers_url(WS)


def one(trigger_id: str) -> str:
    return f"{LIST}/{trigger_id}"


def hook(url: str, **more: Any) -> dict[str, Any]:
    return {"cron": "0 9 * * 1-5", "url": url, "method": "POST", **more}


# --- the original contract, with ids ------------------------------------------------------------


def test_without_ids_the_original_answers_gain_only_the_id(client: TestClient) -> None:
    body = {
        "triggers": [
            {"cron": "0 */2 * * *", "url": "https://api.example.com/webhook", "method": "POST", "payload": {"a": 1}},
            {"cron": "0 9 * * 1-5", "url": "https://api.example.com/report", "method": "GET"},
        ]
    }
    r = client.post(LIST, json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "success": True,
        "workspace_id": WS,
        "removed": 0,
        "added": 2,
        "jobs": [
            {
                "jobId": "ws:0",
                "jobName": "ws-trigger-0",
                "cron": "0 */2 * * *",
                "url": "https://api.example.com/webhook",
                "method": "POST",
                "id": "0",
                "state": "active",
            },
            {
                "jobId": "ws:1",
                "jobName": "ws-trigger-1",
                "cron": "0 9 * * 1-5",
                "url": "https://api.example.com/report",
                "method": "GET",
                "id": "1",
                "state": "active",
            },
        ],
    }
    r = client.post(LIST, json={"triggers": [body["triggers"][1]]})
    assert (r.json()["removed"], r.json()["added"]) == (2, 1)
    assert r.json()["jobs"][0]["jobId"] == "ws:0"


def test_ids_are_validated_and_unique(client: TestClient, conn: Redis) -> None:
    client.post(LIST, json={"triggers": [hook("https://a.example/")]})
    before = every_key(conn)
    for bad in ["", "a" * 65, "a b", "a:b", "é", 5]:
        details = assert_error(client.post(LIST, json={"triggers": [hook("https://a.example/", id=bad)]}), 400)
        assert [d["path"] for d in details["details"]] == ["triggers[0].id"], bad
    twice = [hook("https://a.example/", id="x"), hook("https://b.example/", id="x")]
    assert assert_error(client.post(LIST, json={"triggers": twice}), 400)["details"] == [
        {"path": "triggers[1].id", "message": "id 'x' is also the id of triggers[0]"}
    ]
    collides = [hook("https://a.example/", id="1"), hook("https://b.example/")]  # the second's id is "1"
    (detail,) = assert_error(client.post(LIST, json={"triggers": collides}), 400)["details"]
    assert detail["path"] == "triggers[1].id" and "triggers[0]" in detail["message"]
    case = [hook("https://a.example/", id="X"), hook("https://b.example/", id="x")]
    assert client.post(LIST, json={"triggers": case}).status_code == 200  # case-sensitive
    assert every_key(conn) != before
    assert [j["jobId"] for j in client.get(LIST).json()["jobs"]] == ["ws:X", "ws:x"]


def test_a_reorder_keeps_each_triggers_identity(
    client: TestClient, conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    a = {"id": "a", "cron": "* * * * * *", "url": receiver.url + "/a", "method": "POST"}
    b = {"id": "b", "cron": "*/2 * * * * *", "url": receiver.url + "/b", "method": "POST"}
    client.post(LIST, json={"triggers": [a, b]})
    drive(conn, queue, settings, lambda: bool(receiver.to("/a")) and bool(receiver.to("/b")))
    listed = {j["id"]: j for j in client.get(LIST).json()["jobs"]}
    versions = conn.hgetall(keys.workspace(WS))
    history_of_a = client.get(f"/api/workspaces/{WS}/deliveries", params={"trigger": "a"}).json()["deliveries"]

    assert client.post(LIST, json={"triggers": [b, a]}).json()["jobs"][0]["jobId"] == "ws:b"
    after = {j["id"]: j for j in client.get(LIST).json()["jobs"]}
    assert [j["id"] for j in client.get(LIST).json()["jobs"]] == ["b", "a"]
    for trigger_id in ("a", "b"):
        assert after[trigger_id]["next_run_at"] == listed[trigger_id]["next_run_at"]
        assert after[trigger_id]["jobId"] == f"ws:{trigger_id}"
    # Same versions: firings already queued are not dropped by the reorder.
    assert {k: v[:12] for k, v in conn.hgetall(keys.workspace(WS)).items()} == {k: v[:12] for k, v in versions.items()}
    later = client.get(f"/api/workspaces/{WS}/deliveries", params={"trigger": "a"}).json()["deliveries"]
    assert [r["id"] for r in later[-len(history_of_a) :]] == [r["id"] for r in history_of_a]
    receiver.requests.clear()
    drive(conn, queue, settings, lambda: bool(receiver.to("/a")))
    assert all(headers_of(r)["idempotency-key"].startswith("ws:a@") for r in receiver.to("/a"))
    assert all(headers_of(r)["x-scheduler-trigger"] == "ws:a" for r in receiver.to("/a"))


def test_a_changed_cron_is_rescheduled_from_now_other_changes_keep_the_schedule(client: TestClient) -> None:
    client.post(LIST, json={"triggers": [hook("https://a.example/", id="t", cron="0 0 1 1 *")]})
    first = client.get(one("t")).json()["job"]["next_run_at"]
    client.patch(one("t"), json={"url": "https://b.example/", "enabled": False})
    assert client.get(one("t")).json()["job"]["next_run_at"] == first
    client.patch(one("t"), json={"cron": "0 0 1 7 *"})
    moved = client.get(one("t")).json()["job"]["next_run_at"]
    assert moved != first and moved.endswith("-07-01T00:00:00Z")


# --- one trigger ------------------------------------------------------------------------------------


def test_put_creates_then_replaces_one_trigger(client: TestClient, conn: Redis) -> None:
    client.post(LIST, json={"triggers": [hook("https://a.example/")]})
    r = client.put(one("nightly"), json=hook("https://b.example/", cron="0 3 * * *"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] is True and body["job"]["id"] == "nightly" and body["job"]["jobId"] == "ws:nightly"
    assert r.headers["etag"].startswith('"')
    r = client.put(one("nightly"), json=hook("https://c.example/", cron="0 3 * * *", id="nightly"))
    assert r.status_code == 200 and r.json()["created"] is False and r.json()["job"]["url"] == "https://c.example/"
    listed = client.get(LIST).json()
    assert [j["id"] for j in listed["jobs"]] == ["0", "nightly"] and listed["count"] == 2
    assert schedule_count(conn, WS) == 2
    before = every_key(conn)
    r = client.put(one("nightly"), json=hook("https://c.example/", id="other"))
    assert assert_error(r, 400)["details"][0]["path"] == "id"
    assert assert_error(client.put(one("x"), json={"cron": "nope", "url": "x", "method": "GET"}), 400)
    assert every_key(conn) == before


def test_put_honours_the_trigger_limit(redis_url: str, conn: Redis) -> None:
    settings = make_engine_settings(redis_url, max_triggers_per_workspace=2)
    with TestClient(create_app(settings)) as c:
        c.post(LIST, json={"triggers": [hook("https://a.example/"), hook("https://b.example/")]})
        assert c.put(one("1"), json=hook("https://c.example/")).status_code == 200  # a replace: still 2
        before = every_key(conn)
        assert assert_error(c.put(one("third"), json=hook("https://c.example/")), 400)["error"] == "Too many triggers"
        assert every_key(conn) == before


def test_patch_merges_and_keeps_the_secret_headers_it_does_not_name(
    redis_url: str, conn: Redis, queue: Queue, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url, secrets_key="Wq9Bx0Vv4v8q2nS7b3Qm3yC1u5lX0kq6s2ZrT0e8e0o=")
    with TestClient(create_app(settings)) as c:
        headers = {"Authorization": "Bearer s3cret", "X-Remove": "gone", "X-Keep": "kept"}
        c.post(LIST, json={"triggers": [hook(receiver.url + "/old", id="h", headers=headers, payload={"a": {"b": 1}})]})
        assert b"s3cret" not in conn.hget(keys.workspace(WS), "h")  # encrypted at rest
        patch = {
            "url": receiver.url + "/new",
            "headers": {"X-Remove": None, "x-keep": "changed"},
            "payload": {"a": {"c": 2}},
        }
        r = c.patch(one("h"), json=patch, headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 200, r.text
        assert r.json()["job"]["header_names"] == ["Authorization", "x-keep"]
        assert "s3cret" not in r.text
        assert c.get(one("h")).json()["job"]["payload"] == {"a": {"b": 1, "c": 2}}  # RFC 7396 merge
        assert c.post(one("h") + "/run").status_code == 202
        drive(conn, queue, settings, lambda: bool(receiver.to("/new")))
        (sent,) = receiver.to("/new")
        got = headers_of(sent)
        assert got["authorization"] == "Bearer s3cret" and got["x-keep"] == "changed" and "x-remove" not in got
        assert c.patch(one("h"), json={"headers": None}).json()["job"]["header_names"] == []


def test_patch_refuses_an_id_change_a_missing_trigger_and_an_invalid_result(client: TestClient, conn: Redis) -> None:
    client.post(LIST, json={"triggers": [hook("https://a.example/", id="p")]})
    before = every_key(conn)
    assert assert_error(client.patch(one("p"), json={"id": "q"}), 400)["details"][0]["path"] == "id"
    assert assert_error(client.patch(one("nope"), json={"url": "https://b.example/"}), 404)
    assert assert_error(client.patch(one("p"), json={"cron": None}), 400)["details"][0]["path"] == "cron"
    assert assert_error(client.patch(one("p"), json={"method": "BREW"}), 400)["details"][0]["path"] == "method"
    assert assert_error(client.patch(one("p"), json=[1, 2]), 400)
    assert every_key(conn) == before


def test_delete_one_stops_its_firings(client: TestClient, conn: Redis, settings: Settings, receiver: Receiver) -> None:
    client.post(LIST, json={"triggers": [hook(receiver.url + "/gone", id="g"), hook(receiver.url + "/stays")]})
    assert client.post(one("g") + "/run").status_code == 202  # queued, not yet sent
    assert client.post(one("1") + "/run").status_code == 202
    r = client.delete(one("g"))
    assert r.status_code == 200 and r.json() == {"success": True, "workspace_id": WS, "removed": 1}
    assert assert_error(client.delete(one("g")), 404)
    queue = Queue(settings.queue_name, connection=conn)
    drive(conn, queue, settings, lambda: bool(receiver.to("/stays")))
    deliver(conn, settings)
    assert receiver.to("/gone") == []
    assert [j["id"] for j in client.get(LIST).json()["jobs"]] == ["1"] and schedule_count(conn, WS) == 1


# --- ETag and If-Match ------------------------------------------------------------------------------


def test_every_answer_carries_the_etag_and_every_change_moves_it(client: TestClient) -> None:
    empty = client.get(LIST)
    assert empty.headers["etag"] == '"0"'
    seen = {empty.headers["etag"]}
    r = client.post(LIST, json={"triggers": [hook("https://a.example/")]})
    assert r.headers["etag"] == client.get(LIST).headers["etag"] == client.get(one("0")).headers["etag"]
    seen.add(r.headers["etag"])
    for change in (
        lambda: client.put(one("n"), json=hook("https://b.example/")),
        lambda: client.patch(one("n"), json={"url": "https://c.example/"}),
        lambda: client.delete(one("n")),
        lambda: client.post(LIST, json={"triggers": [hook("https://d.example/")]}),
    ):
        tag = change().headers["etag"]
        assert tag not in seen and tag == client.get(LIST).headers["etag"]
        seen.add(tag)
    assert client.delete(LIST).headers["etag"] == '"0"'
    # A write that changes nothing keeps the ETag.
    client.post(LIST, json={"triggers": [hook("https://a.example/")]})
    tag = client.get(LIST).headers["etag"]
    assert client.post(LIST, json={"triggers": [hook("https://a.example/")]}).headers["etag"] == tag


WRITES = {
    "replace": lambda c, h: c.post(LIST, json={"triggers": [hook("https://z.example/")]}, headers=h),
    "delete-all": lambda c, h: c.delete(LIST, headers=h),
    "put": lambda c, h: c.put(one("0"), json=hook("https://z.example/"), headers=h),
    "patch": lambda c, h: c.patch(one("0"), json={"url": "https://z.example/"}, headers=h),
    "delete-one": lambda c, h: c.delete(one("0"), headers=h),
}


@pytest.mark.parametrize("write", WRITES)
def test_a_stale_if_match_is_412_and_changes_nothing(client: TestClient, conn: Redis, write: str) -> None:
    stale = client.post(LIST, json={"triggers": [hook("https://a.example/")]}).headers["etag"]
    current = client.put(one("other"), json=hook("https://b.example/")).headers["etag"]
    before = every_key(conn)
    r = WRITES[write](client, {"If-Match": stale})
    assert assert_error(r, 412)["details"][0]["path"] == "headers.if-match"
    assert current.strip('"') in r.json()["details"][0]["message"]
    assert every_key(conn) == before
    r = WRITES[write](client, {"If-Match": current})
    assert r.status_code == 200, r.text


def test_if_none_match_star_creates_only(client: TestClient, conn: Redis) -> None:
    assert client.put(one("c"), json=hook("https://a.example/"), headers={"If-None-Match": "*"}).status_code == 201
    before = every_key(conn)
    r = client.put(one("c"), json=hook("https://b.example/"), headers={"If-None-Match": "*"})
    assert assert_error(r, 412)["details"][0]["path"] == "headers.if-none-match"
    assert every_key(conn) == before


# --- dry runs ---------------------------------------------------------------------------------------


def test_dry_runs_change_nothing_and_answer_the_exact_diff(client: TestClient, conn: Redis) -> None:
    client.post(
        LIST,
        json={
            "triggers": [
                hook("https://a.example/", id="keep"),
                hook("https://b.example/", id="edit", headers={"Authorization": "Bearer secret-value"}),
                hook("https://c.example/", id="drop"),
            ]
        },
    )
    before = every_key(conn)
    planned = {
        "triggers": [
            hook("https://a.example/", id="keep"),
            hook("https://b2.example/", id="edit", headers={"Authorization": "Bearer other", "X-New": "1"}),
            hook("https://d.example/", id="new"),
        ]
    }
    r = client.post(LIST, json=planned, params={"dry_run": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dry_run"] is True and body["workspace_id"] == WS
    assert body["diff"] == {
        "added": ["new"],
        "removed": ["drop"],
        "changed": [{"id": "edit", "fields": ["url", "headers.Authorization", "headers.X-New"]}],
        "unchanged": ["keep"],
    }
    assert [j["id"] for j in body["jobs"]] == ["keep", "edit", "new"] and all(j["next_run_at"] for j in body["jobs"])
    assert "secret-value" not in r.text and "Bearer other" not in r.text
    for write in (
        lambda: client.delete(LIST, params={"dry_run": "true"}),
        lambda: client.put(one("new"), json=hook("https://e.example/"), params={"dry_run": "true"}),
        lambda: client.patch(one("edit"), json={"cron": "0 1 * * *"}, params={"dry_run": "true"}),
        lambda: client.delete(one("keep"), params={"dry_run": "true"}),
    ):
        assert write().status_code == 200
    assert client.patch(one("edit"), json={"cron": "0 1 * * *"}, params={"dry_run": "true"}).json()["diff"][
        "changed"
    ] == [{"id": "edit", "fields": ["cron"]}]
    assert client.delete(one("keep"), params={"dry_run": "true"}).json()["diff"]["removed"] == ["keep"]
    assert every_key(conn) == before  # DUMP of every key, byte for byte
    bad = {"triggers": [hook("https://a.example/", cron="nope")]}
    assert assert_error(client.post(LIST, json=bad, params={"dry_run": "true"}), 400)


def test_dry_run_warnings_for_each_code(client: TestClient) -> None:
    triggers = [
        hook("https://a.example/", id="gap", cron="30 2 * * *", timezone="America/New_York"),
        hook("https://a.example/", id="twice", cron="30 1 * * *", timezone="America/New_York"),
        hook("https://a.example/", id="fast", cron="* * * * * *"),
        hook("https://a.example/", id="leap", cron="0 0 29 2 *"),
        *[hook("https://burst.example/x", id=f"b{i}", cron="0 9 * * *") for i in range(101)],
    ]
    body = client.post(LIST, json={"triggers": triggers}, params={"dry_run": "true"}).json()
    codes = {(w["path"], w["code"]) for w in body["warnings"]}
    assert ("triggers[0]", "dst_skipped") in codes
    assert ("triggers[1]", "dst_repeated") in codes
    assert ("triggers[2]", "overlap_risk") in codes
    assert ("triggers", "burst") in codes
    for w in body["warnings"]:
        assert w["message"] and set(w) == {"path", "code", "message"}
    # Fewer than 2 runs in any 366 days, whatever today is.
    (leap,) = [w for w in body["warnings"] if w["path"] == "triggers[3]" and w["code"] == "rare"]
    assert "-02-29T00:00:00Z" in leap["message"]
    # Real writes carry them too.
    r = client.put(one("fast"), json=hook("https://a.example/", cron="* * * * * *"))
    assert [w["code"] for w in r.json()["warnings"]] == ["overlap_risk"]


# --- hostile and careless clients ---------------------------------------------------------------------


def test_ids_of_dots_only_are_refused_in_the_body_and_the_path(client: TestClient, conn: Redis) -> None:
    """A url library sends `.../triggers/.` as `.../triggers` (the whole list): such ids cannot exist."""
    for bad in (".", "..", "..."):
        r = client.post(LIST, json={"triggers": [hook("https://a.example/", id=bad)]})
        assert assert_error(r, 400)["details"][0]["path"] == "triggers[0].id", bad
    assert client.post(LIST, json={"triggers": [hook("https://a.example/", id=".hidden.")]}).status_code == 200
    before = every_key(conn)
    for path in ("/api/workspaces/ws/triggers/%2E", "/api/workspaces/ws/triggers/%2E%2E"):
        assert client.put(path, json=hook("https://b.example/")).status_code in (400, 404)
    assert every_key(conn) == before


def test_a_patch_naming_many_headers_is_refused_by_the_limit_without_quadratic_work(client: TestClient) -> None:
    client.post(LIST, json={"triggers": [hook("https://a.example/", id="h", headers={"H1": "v"})]})
    many = {f"h{i}": "v" for i in range(20_000)}
    r = client.patch(one("h"), json={"headers": many})
    details = assert_error(r, 400)["details"]
    assert details[0]["path"] == "headers" and "at most" in details[0]["message"]
    assert client.get(one("h")).json()["job"]["header_names"] == ["H1"]


def test_a_patch_moving_the_url_to_another_host_must_send_the_headers_again(client: TestClient, conn: Redis) -> None:
    secret = {"Authorization": "Bearer kept-secret"}
    client.post(LIST, json={"triggers": [hook("https://api.example.com/a", id="s", headers=secret)]})
    before = every_key(conn)
    for url in ("https://attacker.example/a", "http://api.example.com/a", "https://api.example.com:8443/a"):
        r = client.patch(one("s"), json={"url": url})
        assert assert_error(r, 400)["details"][0]["path"] == "headers", url
    assert every_key(conn) == before
    # Same origin: the stored values stay. Another origin with the headers restated: allowed.
    assert client.patch(one("s"), json={"url": "https://api.example.com/b"}).status_code == 200
    moved = client.patch(one("s"), json={"url": "https://new.example/", "headers": {"Authorization": "Bearer new"}})
    assert moved.status_code == 200 and moved.json()["job"]["header_names"] == ["Authorization"]


def test_a_dry_run_over_the_trigger_limit_is_refused_like_the_write(redis_url: str, conn: Redis) -> None:
    settings = make_engine_settings(redis_url, max_triggers_per_workspace=1)
    with TestClient(create_app(settings)) as c:
        c.post(LIST, json={"triggers": [hook("https://a.example/")]})
        for params in ({"dry_run": "true"}, {}):
            r = c.put(one("second"), json=hook("https://b.example/"), params=params)
            assert assert_error(r, 400)["error"] == "Too many triggers", params


def test_if_match_compares_strongly_and_if_none_match_names_etags(client: TestClient, conn: Redis) -> None:
    etag = client.post(LIST, json={"triggers": [hook("https://a.example/")]}).headers["etag"]
    before = every_key(conn)
    for header in (f"W/{etag}", '"x 0"', '""', f'"{etag.strip(chr(34))} "'):
        for params in ({"dry_run": "true"}, {}):
            r = client.put(one("0"), json=hook("https://b.example/"), headers={"If-Match": header}, params=params)
            assert r.status_code == 412, (header, params)
    r = client.put(one("0"), json=hook("https://b.example/"), headers={"If-None-Match": etag})
    assert assert_error(r, 412)["details"][0]["path"] == "headers.if-none-match"
    assert every_key(conn) == before
    r = client.put(one("0"), json=hook("https://b.example/"), headers={"If-None-Match": '"other"'})
    assert r.status_code == 200


def test_the_preview_refuses_unknown_fields(client: TestClient) -> None:
    r = client.post("/api/cron/preview", json={"cron": "* * * * *", "timzone": "Europe/Paris"})
    assert assert_error(r, 400)["details"][0]["path"] == "timzone"
