"""The dashboard's pages and forms through HTTP (TestClient, open UI): each action is the API's, its
errors are shown next to their field, header values are never shown."""

from __future__ import annotations

import html
import re

from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.api import create_app
from scheduler_api.embedded_redis import free_port
from scheduler_api.storage import triggers as store
from scheduler_api.storage import workspace_settings
from scheduler_api.storage.connection import connect
from tests.support.factories import make_engine_settings
from tests.support.ui import page_csrf

HOOK = {"cron": "0 9 * * *", "url": "https://example.com/hook", "method": "POST"}
SECRET_VALUE = "Bearer very-secret-value-42"


def seed(client: TestClient, ws: str = "ws", tid: str = "t", **changes: object) -> None:
    r = client.put(f"/api/workspaces/{ws}/triggers/{tid}", json={**HOOK, **changes})
    assert r.status_code == 201, r.text


def etag_of(text: str) -> str:
    found = re.search(r'name="etag" value="([^"]*)"', text)
    assert found
    return html.unescape(found.group(1))


def test_the_workspaces_page_lists_counts_and_pages(client: TestClient) -> None:
    for i in range(3):
        seed(client, f"team-{i}")
    seed(client, "other")
    r = client.get("/ui/workspaces")
    assert r.status_code == 200
    assert all(f'href="/ui/workspaces/team-{i}"' in r.text for i in range(3))
    found = client.get("/ui/workspaces", params={"q": "team-"})
    assert "3 workspaces" in found.text and "/ui/workspaces/other" not in found.text
    after = client.get("/ui/workspaces", params={"q": "team-", "after": "team-0"})
    assert "/ui/workspaces/team-0" not in after.text and "/ui/workspaces/team-1" in after.text


def test_empty_states_say_what_to_do_next(client: TestClient) -> None:
    r = client.get("/ui/workspaces")
    assert "curl -X PUT" in r.text and "/api/workspaces/my-team/triggers/hourly" in r.text
    r = client.get("/ui/workspaces/fresh")
    assert r.status_code == 200 and "no triggers yet" in r.text and "/ui/workspaces/fresh/new-trigger" in r.text
    assert "No deliveries yet" in client.get("/ui/workspaces/fresh/deliveries").text
    assert "No scheduler or worker is running" in client.get("/ui/health").text


def test_the_workspace_page_shows_each_trigger(client: TestClient) -> None:
    seed(client, timezone="Europe/Paris", headers={"Authorization": SECRET_VALUE})
    r = client.get("/ui/workspaces/ws")
    assert "<code>0 9 * * *</code>" in r.text and "At 09:00" in r.text and "Europe/Paris" in r.text
    assert 'class="state state-active"' in r.text and "none yet" in r.text
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT08:00:00Z"', r.text)  # next run, 09:00 Paris in winter
    assert SECRET_VALUE not in r.text and SECRET_VALUE not in client.get("/ui/workspaces/ws/triggers/t").text


def test_pause_resume_run_enable_disable_delete(client: TestClient, conn: Redis) -> None:
    seed(client)
    token = page_csrf(client, "/ui/workspaces/ws")
    r = client.post("/ui/workspaces/ws/pause", data={"csrf": token})
    assert r.status_code == 200 and "The workspace is paused" in r.text and store.is_paused(conn, "ws")
    client.post("/ui/workspaces/ws/resume", data={"csrf": token})
    assert not store.is_paused(conn, "ws")
    r = client.post("/ui/workspaces/ws/triggers/t/run", data={"csrf": token})
    assert "queued to fire now" in r.text
    etag = etag_of(client.get("/ui/workspaces/ws").text)
    client.post("/ui/workspaces/ws/triggers/t/disable", data={"csrf": token, "etag": etag})
    assert [t.enabled for t in store.list_triggers(conn, "ws")] == [False]
    stale = client.post("/ui/workspaces/ws/triggers/t/enable", data={"csrf": token, "etag": etag})
    assert stale.status_code == 412  # If-Match: the page was out of date
    client.post("/ui/workspaces/ws/triggers/t/enable", data={"csrf": token, "etag": etag_of(stale.text)})
    assert [t.enabled for t in store.list_triggers(conn, "ws")] == [True]
    client.post("/ui/workspaces/ws/triggers/t/delete", data={"csrf": token})
    assert store.list_triggers(conn, "ws") == []


def new_trigger_form(token: str, **fields: str) -> dict[str, str | list[str]]:
    form: dict[str, str | list[str]] = {
        "csrf": token,
        "id": "nightly",
        "cron": "30 2 * * *",
        "timezone": "",
        "url": "https://example.com/n",
        "method": "POST",
        "payload": '{"a": 1}',
        "enabled": "on",
        "new_name": ["X-Token", ""],
        "new_value": [SECRET_VALUE, ""],
        "action": "save",
    }
    form.update(fields)
    return form


def test_adding_a_trigger_previews_then_saves(client: TestClient, conn: Redis) -> None:
    token = page_csrf(client, "/ui/workspaces/ws/new-trigger")
    preview = client.post("/ui/workspaces/ws/new-trigger", data=new_trigger_form(token, action="preview"))
    assert preview.status_code == 200, preview.text
    assert "Preview of the change" in preview.text and "nothing saved yet" in preview.text
    assert "At 02:30" in preview.text  # the schedule shown without JavaScript
    assert store.list_triggers(conn, "ws") == []
    saved = client.post("/ui/workspaces/ws/new-trigger", data=new_trigger_form(token), follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"] == "/ui/workspaces/ws?done=created"
    [t] = store.list_triggers(conn, "ws")
    assert t.id == "nightly" and t.payload == {"a": 1} and list(t.headers) == ["X-Token"]
    again = client.post("/ui/workspaces/ws/new-trigger", data=new_trigger_form(token))
    assert again.status_code == 412  # If-None-Match: * never replaces one


def test_api_errors_are_shown_next_to_their_field(client: TestClient, conn: Redis) -> None:
    token = page_csrf(client, "/ui/workspaces/ws/new-trigger")
    r = client.post("/ui/workspaces/ws/new-trigger", data=new_trigger_form(token, cron="61 * * * *"))
    assert r.status_code == 400
    assert re.search(r'id="f-cron"[^>]*aria-invalid="true".*?<span class="field-error" id="err-cron">', r.text, re.S)
    r = client.post("/ui/workspaces/ws/new-trigger", data=new_trigger_form(token, payload="{not json"))
    assert r.status_code == 400 and 'id="err-payload">must be JSON' in r.text
    assert store.list_triggers(conn, "ws") == []


def test_the_ssrf_guard_holds_in_the_form(redis_url: str, conn: Redis) -> None:
    with TestClient(create_app(make_engine_settings(redis_url, allow_private_targets=False))) as c:
        token = page_csrf(c, "/ui/workspaces/ws/new-trigger")
        r = c.post("/ui/workspaces/ws/new-trigger", data=new_trigger_form(token, url="http://169.254.169.254/x"))
        assert r.status_code == 400 and 'id="err-url">deliveries to' in r.text
    assert store.list_triggers(conn, "ws") == []


def test_editing_keeps_a_header_left_blank(client: TestClient, conn: Redis) -> None:
    seed(client, headers={"Authorization": SECRET_VALUE})
    before = store.list_triggers(conn, "ws")[0].headers
    page = client.get("/ui/workspaces/ws/triggers/t")
    token, etag = page_csrf(client, "/ui/workspaces/ws/triggers/t"), etag_of(page.text)
    form = {
        "csrf": token,
        "etag": etag,
        "cron": "0 10 * * *",
        "url": "https://example.com/other-path",
        "method": "POST",
        "enabled": "on",
        "old_name": "Authorization",
        "old_value": "",
        "action": "save",
    }
    r = client.post("/ui/workspaces/ws/triggers/t", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    [t] = store.list_triggers(conn, "ws")
    assert t.url == "https://example.com/other-path" and t.cron == "0 10 * * *" and t.headers == before
    moved = {**form, "etag": "", "url": "https://elsewhere.example/"}
    r = client.post("/ui/workspaces/ws/triggers/t", data=moved)
    assert r.status_code == 400 and "send the headers again" in r.text  # the API's rule holds
    removed = {**form, "etag": "", "remove_header": "Authorization"}
    client.post("/ui/workspaces/ws/triggers/t", data=removed)
    assert store.list_triggers(conn, "ws")[0].headers == {}


def test_settings_and_signing_secret(client: TestClient, conn: Redis) -> None:
    seed(client)
    token = page_csrf(client, "/ui/workspaces/ws")
    form = {
        "csrf": token,
        "alerts_url": "https://alerts.example.com/x",
        "alerts_after": "5",
        "auto_disable": "20",
        "host": ["api.example.com", ""],
        "per_second": ["2.5", ""],
        "concurrency": ["", ""],
    }
    r = client.post("/ui/workspaces/ws/settings", data=form)
    assert r.status_code == 200 and "settings were saved" in r.text
    saved, _ = workspace_settings.read(conn, "ws")
    assert (saved.alert_url, saved.alert_after, saved.disable_after) == ("https://alerts.example.com/x", 5, 20)
    assert [(x.host, x.per_second) for x in saved.rate_limits] == [("api.example.com", 2.5)]
    bad = client.post("/ui/workspaces/ws/settings", data={**form, "per_second": ["0", ""], "auto_disable": "x"})
    assert bad.status_code == 400
    assert 'id="err-rate_limits[0].per_second"' in bad.text and 'id="err-auto_disable_after_failures"' in bad.text
    page = client.get("/ui/workspaces/ws")
    assert 'id="signing-secret"' not in page.text
    revealed = client.post("/ui/workspaces/ws/signing/reveal", data={"csrf": token})
    secret = re.search(r'id="signing-secret">(whsec_[^<]+)<', revealed.text)
    assert secret
    rotated = client.post("/ui/workspaces/ws/signing/rotate", data={"csrf": token})
    new = re.search(r'id="signing-secret">(whsec_[^<]+)<', rotated.text)
    assert new and new.group(1) != secret.group(1) and "previous secret keeps signing" in rotated.text
    assert secret.group(1) not in client.get("/ui/workspaces/ws").text


def test_deliveries_filters_are_checked(client: TestClient) -> None:
    seed(client)
    r = client.get("/ui/workspaces/ws/deliveries", params={"since": "yesterday", "outcome": "nope"})
    assert r.status_code == 200 and 'id="err-since"' in r.text and 'id="err-outcome"' in r.text
    token = page_csrf(client, "/ui/workspaces/ws/deliveries")
    r = client.post("/ui/workspaces/ws/deliveries/replay-failed", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and "done=replayed" in r.headers["location"]
    r = client.post("/ui/workspaces/ws/deliveries/replay-one", data={"csrf": token, "firing_id": "ws:t@x"})
    assert r.status_code == 404 and "has no record of firing" in r.text


def test_the_cron_preview_answers_the_apis_preview(client: TestClient) -> None:
    r = client.get("/ui/cron-preview", params={"cron": "0 9 * * 1", "timezone": "UTC"})
    assert r.status_code == 200 and r.json()["description"].startswith("At 09:00") and len(r.json()["next_runs"]) == 5
    bad = client.get("/ui/cron-preview", params={"cron": "nope"})
    assert bad.status_code == 400 and bad.json()["details"][0]["path"] == "cron"


def test_the_health_page_draws_svg_charts(client: TestClient) -> None:
    r = client.get("/ui/health")
    assert r.status_code == 200
    assert r.text.count('<svg viewBox="0 0 720 180" class="chart" role="img"') == 2
    assert 'id="queue-depth">0<' in r.text


def test_static_assets_are_served_by_the_app(client: TestClient) -> None:
    assert client.get("/ui/static/ui.css").status_code == 200
    assert "cron-preview" in client.get("/ui/static/ui.js").text


def test_redis_unavailable_is_a_503_page(redis_url: str) -> None:
    dead = connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    with TestClient(create_app(make_engine_settings(redis_url), redis_client=dead)) as c:
        page = c.get("/ui/workspaces")
        assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
        assert "Redis is unavailable" in page.text
        api = c.get("/api/workspaces/ws/triggers")
        assert api.status_code == 503 and api.json()["success"] is False
