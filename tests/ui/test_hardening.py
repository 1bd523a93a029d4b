"""The dashboard's defences (issue #18's security review): forged cookies and tokens, hostile form
input, who may see the service-wide health page, sign-out, error pages and the headers every page
carries. Each test says what a user (or an attacker) sees."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.storage import keys, workspace_settings
from scheduler_api.storage.series import minute_start
from scheduler_api.ui.session import COOKIE
from tests.support.ui import ACME_KEY, ADMIN_KEY, page_csrf, sign_in

HOOK = {"cron": "0 9 * * *", "url": "https://example.com/hook", "method": "POST"}


def lenient(c: TestClient) -> TestClient:
    """The same app, answering a 500 instead of raising it into the test (a user sees the status)."""
    return TestClient(c.app, raise_server_exceptions=False)


def test_a_non_ascii_session_cookie_is_no_session_not_a_500(keyed: TestClient) -> None:
    """A forged cookie with non-ASCII text: the browser is sent to the sign-in page."""
    c = lenient(keyed)
    r = c.get("/ui/workspaces", headers={"cookie": f"{COOKIE}=abc.\u00e9".encode()}, follow_redirects=False)
    assert r.status_code == 303, (r.status_code, r.text[:200])


def test_a_non_ascii_csrf_token_is_a_403_not_a_500(client: TestClient) -> None:
    """A form posted with a non-ASCII CSRF token: the 403 page, nothing done."""
    c = lenient(client)
    assert c.put("/api/workspaces/ws/triggers/t", json=HOOK).status_code == 201
    page_csrf(c, "/ui/workspaces/ws")
    r = c.post("/ui/workspaces/ws/pause", data={"csrf": "\u00e9"})
    assert r.status_code == 403, (r.status_code, r.text[:200])


def test_a_non_ascii_sign_in_token_is_a_403_not_a_500(keyed: TestClient) -> None:
    """The sign-in form posted with a non-ASCII token: the form again, 403."""
    c = lenient(keyed)
    c.get("/ui/sign-in")
    r = c.post("/ui/sign-in", data={"key": ADMIN_KEY, "csrf": "\u00e9"})
    assert r.status_code == 403, (r.status_code, r.text[:200])


def test_deeply_nested_json_in_the_form_is_a_field_error(client: TestClient) -> None:
    """A payload of 100,000 '[': the form again, 400, with the error next to the payload field."""
    c = lenient(client)
    token = page_csrf(c, "/ui/workspaces/ws/new-trigger")
    form = {
        "csrf": token,
        "id": "n",
        "cron": "30 2 * * *",
        "url": "https://example.com/n",
        "method": "POST",
        "payload": "[" * 100_000,
        "action": "preview",
    }
    r = c.post("/ui/workspaces/ws/new-trigger", data=form)
    assert r.status_code == 400 and 'id="err-payload"' in r.text, (r.status_code, r.text[:200])
    assert "nested fewer than 1000 levels" in r.text


def test_an_over_long_json_field_is_a_field_error(client: TestClient) -> None:
    """A retry policy of 300,000 characters: the form again, 400, saying how long it may be."""
    token = page_csrf(client, "/ui/workspaces/ws/new-trigger")
    form = {"csrf": token, "id": "n", "cron": "30 2 * * *", "url": "https://example.com/n", "retry": " 1" * 150_000}
    r = client.post("/ui/workspaces/ws/new-trigger", data=form)
    assert r.status_code == 400 and 'id="err-retry"' in r.text and "at most 262144 characters" in r.text


def test_a_scoped_key_does_not_see_every_tenants_volumes(keyed: TestClient, conn: Redis) -> None:
    """A key scoped to acme-*: /ui/health is a 403 page without the service's numbers, and the
    menu has no Health link; an all-workspace key sees the page and the link."""
    conn.hset(keys.series_minute(minute_start(time.time())), "delivered", 4242)  # other tenants' deliveries
    sign_in(keyed, ACME_KEY)
    r = keyed.get("/ui/health")
    assert r.status_code == 403 and "4242" not in r.text
    assert "all workspaces" in r.text
    assert 'href="/ui/health"' not in keyed.get("/ui/workspaces").text
    sign_in(keyed, ADMIN_KEY)
    assert 'href="/ui/health"' in keyed.get("/ui/workspaces").text
    r = keyed.get("/ui/health")
    assert r.status_code == 200 and "4242" in r.text


def test_after_replay_all_the_filter_survives_the_redirect(client: TestClient) -> None:
    """Replay failed with a since of +01:00: the deliveries page comes back with the same filter."""
    assert client.put("/api/workspaces/ws/triggers/t", json=HOOK).status_code == 201
    token = page_csrf(client, "/ui/workspaces/ws/deliveries")
    data = {"csrf": token, "since": "2026-01-01T00:00:00+01:00"}
    r = client.post("/ui/workspaces/ws/deliveries/replay-failed", data=data, follow_redirects=False)
    assert r.status_code == 303
    page = client.get(r.headers["location"])
    assert 'id="err-since"' not in page.text and 'value="2026-01-01T00:00:00+01:00"' in page.text


def test_a_typed_header_value_is_not_sent_back_in_the_page(client: TestClient) -> None:
    """Preview with a new header: the page keeps its name, not its value, and asks for it again."""
    token = page_csrf(client, "/ui/workspaces/ws/new-trigger")
    form = {
        "csrf": token,
        "id": "n",
        "cron": "30 2 * * *",
        "url": "https://example.com/n",
        "method": "POST",
        "new_name": ["X-Token", ""],
        "new_value": ["s3cr3t-value-xyz", ""],
        "action": "preview",
    }
    r = client.post("/ui/workspaces/ws/new-trigger", data=form)
    assert r.status_code == 200
    assert "s3cr3t-value-xyz" not in r.text
    assert 'value="X-Token"' in r.text and "type the value again" in r.text


def test_a_typed_header_value_is_not_sent_back_after_an_error(client: TestClient) -> None:
    """Save with an invalid cron and a new header: the 400 page does not contain the value."""
    token = page_csrf(client, "/ui/workspaces/ws/new-trigger")
    form = {
        "csrf": token,
        "id": "n",
        "cron": "not a cron",
        "url": "https://example.com/n",
        "new_name": "X-Token",
        "new_value": "s3cr3t-value-xyz",
    }
    r = client.post("/ui/workspaces/ws/new-trigger", data=form)
    assert r.status_code == 400 and "s3cr3t-value-xyz" not in r.text


def test_sign_out_ends_the_session_server_side(keyed: TestClient) -> None:
    """A cookie copied before sign-out no longer opens any page: the sign-in page instead."""
    sign_in(keyed, ADMIN_KEY)
    cookie = keyed.cookies[COOKIE]
    keyed.post("/ui/sign-out", data={"csrf": page_csrf(keyed)})
    keyed.cookies.set(COOKIE, cookie, path="/ui")
    assert keyed.get("/ui/workspaces", follow_redirects=False).status_code == 303


def test_signing_out_one_session_leaves_the_others(keyed: TestClient) -> None:
    """Signing out in one browser: another browser signed in with the same key stays signed in."""
    other = TestClient(keyed.app)
    sign_in(other, ADMIN_KEY)
    sign_in(keyed, ADMIN_KEY)
    keyed.post("/ui/sign-out", data={"csrf": page_csrf(keyed)})
    assert other.get("/ui/workspaces", follow_redirects=False).status_code == 200


def test_an_over_long_search_is_an_html_page(client: TestClient) -> None:
    """A search of 200 characters: an HTML error page with the API's 400, not JSON."""
    r = client.get("/ui/workspaces", params={"q": "a" * 200})
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html"), (r.status_code, r.text[:200])
    assert "<h1>400" in r.text


def test_an_unknown_dashboard_path_is_an_html_404_and_the_api_keeps_json(client: TestClient) -> None:
    """/ui/nothing-here: the HTML 404 page; /api/nothing-here and a bad API query: JSON as before."""
    r = client.get("/ui/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    r = client.get("/api/nothing-here")
    assert r.status_code == 404 and r.json()["success"] is False


def test_alert_after_zero_is_not_silently_three(client: TestClient, conn: Redis) -> None:
    """Alerts after 0 failures: the settings page shows the API's error, nothing is saved;
    a blank count still means the default, 3."""
    assert client.put("/api/workspaces/ws/triggers/t", json=HOOK).status_code == 201
    token = page_csrf(client, "/ui/workspaces/ws")
    url = "https://alerts.example.com/x"
    r = client.post("/ui/workspaces/ws/settings", data={"csrf": token, "alerts_url": url, "alerts_after": "0"})
    saved, _ = workspace_settings.read(conn, "ws")
    assert r.status_code == 400 and saved.alert_after != 0 and saved.alert_url is None, r.status_code
    r = client.post("/ui/workspaces/ws/settings", data={"csrf": token, "alerts_url": url, "alerts_after": ""})
    saved, _ = workspace_settings.read(conn, "ws")
    assert r.status_code < 400 and saved.alert_after == 3


def test_pages_refuse_to_be_framed(client: TestClient) -> None:
    """Every /ui answer (page, error page, redirect, static file) forbids framing and sniffing;
    the API's answers are not changed."""
    for path in ("/ui/workspaces", "/ui/nothing-here", "/ui", "/ui/static/ui.css"):
        r = client.get(path, follow_redirects=False)
        csp = r.headers.get("content-security-policy", "")
        assert r.headers.get("x-frame-options") == "DENY" and "frame-ancestors 'none'" in csp, path
        assert "form-action 'self'" in csp and r.headers.get("x-content-type-options") == "nosniff", path
        assert r.headers.get("referrer-policy") == "same-origin", path
    assert "content-security-policy" not in client.get("/api/workspaces/ws/triggers").headers
    # A body over MAX_BODY_BYTES is refused before the dashboard's routes: the headers are there too.
    too_big = client.post("/ui/workspaces/ws/pause", content=b"x" * 2_000_000)
    assert too_big.status_code == 413 and too_big.headers.get("x-frame-options") == "DENY"
