"""Sign-in, the session cookie, CSRF and key scopes of the dashboard, through HTTP (TestClient)."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.api import create_app
from scheduler_api.auth import parse_api_keys
from scheduler_api.storage import triggers as store
from scheduler_api.ui.session import COOKIE, Sessions
from tests.support.factories import make_engine_settings
from tests.support.ui import ACME_KEY, ADMIN_KEY, KEYS, UI_SECRET, csrf_of, page_csrf, sign_in, sign_in_form

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
HOOK = {"cron": "0 9 * * *", "url": "https://example.com/hook", "method": "POST"}


def test_pages_need_a_sign_in(keyed: TestClient) -> None:
    r = keyed.get("/ui/workspaces/acme-a?x=1", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/sign-in?next=%2Fui%2Fworkspaces%2Facme-a%3Fx%3D1"
    assert keyed.post("/ui/workspaces/acme-a/pause", data={"csrf": "x"}).status_code == 401


def test_a_wrong_key_is_rejected(keyed: TestClient) -> None:
    r = keyed.post("/ui/sign-in", data=sign_in_form(keyed, "not-a-key-0123456789abc"), follow_redirects=False)
    assert r.status_code == 401
    assert "not one of this service" in r.text
    assert COOKIE not in r.cookies
    assert keyed.get("/ui/workspaces", follow_redirects=False).status_code == 303


def test_the_session_cookie_is_signed_httponly_strict_and_holds_no_key(keyed: TestClient) -> None:
    r = keyed.post("/ui/sign-in", data=sign_in_form(keyed, ADMIN_KEY, "/ui/health"), follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/health"
    header = r.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=strict" in header and "Path=/ui" in header and "Max-Age=28800" in header
    assert "Secure" not in header  # plain http here
    value = r.cookies[COOKIE]
    payload = value.rpartition(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    assert ADMIN_KEY not in value and ADMIN_KEY not in decoded
    assert keyed.get("/ui/workspaces").status_code == 200
    keyed.cookies.set(COOKIE, value[:-1] + ("0" if value[-1] != "0" else "1"), path="/ui")  # a forged signature
    assert keyed.get("/ui/workspaces", follow_redirects=False).status_code == 303


def test_the_cookie_is_secure_over_https(redis_url: str, conn: Redis) -> None:
    settings = make_engine_settings(redis_url, api_keys=KEYS, ui_secret=UI_SECRET)
    with TestClient(create_app(settings), base_url="https://testserver") as c:
        r = c.post("/ui/sign-in", data=sign_in_form(c, ADMIN_KEY), follow_redirects=False)
        assert "Secure" in r.headers["set-cookie"]


def test_only_a_dashboard_path_is_a_redirect_target(keyed: TestClient) -> None:
    r = keyed.post("/ui/sign-in", data=sign_in_form(keyed, ADMIN_KEY, "https://evil.example/"), follow_redirects=False)
    assert r.headers["location"] == "/ui"


def test_removing_a_key_ends_its_sessions(keyed: TestClient, redis_url: str, conn: Redis) -> None:
    sign_in(keyed, ACME_KEY)
    cookie = keyed.cookies[COOKIE]
    without_acme = make_engine_settings(redis_url, api_keys=ADMIN_KEY, ui_secret=UI_SECRET)
    with TestClient(create_app(without_acme)) as c:
        c.cookies.set(COOKIE, cookie, path="/ui")
        assert c.get("/ui/workspaces", follow_redirects=False).status_code == 303
    same_keys = make_engine_settings(redis_url, api_keys=KEYS, ui_secret=UI_SECRET)
    with TestClient(create_app(same_keys)) as c:  # another replica with the same UI_SECRET
        c.cookies.set(COOKIE, cookie, path="/ui")
        assert c.get("/ui/workspaces").status_code == 200


def test_sessions_expire() -> None:
    sessions = Sessions(b"s" * 32, parse_api_keys(KEYS), lifetime=60)
    key = parse_api_keys(KEYS)[0]
    session, cookie = sessions.issue(key, now=1000.0)
    assert sessions.read(cookie, now=1059.0) == session
    assert sessions.read(cookie, now=1060.0) is None


def test_a_form_without_this_sessions_csrf_token_is_refused(keyed: TestClient, conn: Redis) -> None:
    assert keyed.put("/api/workspaces/acme-a/triggers/t", json=HOOK, headers=ADMIN).status_code == 201
    other = TestClient(keyed.app)
    sign_in(other, ADMIN_KEY)
    foreign_token = page_csrf(other)
    sign_in(keyed, ADMIN_KEY)
    for data in ({}, {"csrf": ""}, {"csrf": "forged"}, {"csrf": foreign_token}):
        r = keyed.post("/ui/workspaces/acme-a/pause", data=data)
        assert r.status_code == 403 and "CSRF" in r.text, data
    assert not store.is_paused(conn, "acme-a")
    r = keyed.post("/ui/workspaces/acme-a/pause", data={"csrf": page_csrf(keyed)}, follow_redirects=False)
    assert r.status_code == 303
    assert store.is_paused(conn, "acme-a")


def test_a_scoped_key_sees_and_touches_only_its_workspaces(keyed: TestClient, conn: Redis) -> None:
    for ws in ("acme-a", "acme-b", "globex"):
        assert keyed.put(f"/api/workspaces/{ws}/triggers/t", json=HOOK, headers=ADMIN).status_code == 201
    sign_in(keyed, ACME_KEY)
    listing = keyed.get("/ui/workspaces")
    assert "acme-a" in listing.text and "acme-b" in listing.text and "globex" not in listing.text
    assert "globex" not in keyed.get("/ui/workspaces", params={"q": "glob"}).text
    token = csrf_of(listing.text)
    r = keyed.get("/ui/workspaces/globex")
    assert r.status_code == 403 and "starting with &#39;acme-&#39;" in r.text
    for path in (
        "/ui/workspaces/globex/deliveries",
        "/ui/workspaces/globex/triggers/t",
        "/ui/workspaces/globex/new-trigger",
    ):
        assert keyed.get(path).status_code == 403, path
    posts = [
        "/ui/workspaces/globex/pause",
        "/ui/workspaces/globex/triggers/t/run",
        "/ui/workspaces/globex/triggers/t/disable",
        "/ui/workspaces/globex/triggers/t/delete",
        "/ui/workspaces/globex/triggers/t",
        "/ui/workspaces/globex/new-trigger",
        "/ui/workspaces/globex/settings",
        "/ui/workspaces/globex/signing/reveal",
        "/ui/workspaces/globex/deliveries/replay-failed",
    ]
    for path in posts:  # a valid token of the session: the scope still refuses
        r = keyed.post(path, data={"csrf": token, "url": "https://example.com/x", "cron": "* * * * *", "id": "u"})
        assert r.status_code == 403, path
        assert "secret" not in r.text.lower() or "signing-secret" not in r.text
    assert not store.is_paused(conn, "globex")
    assert [t.enabled for t in store.list_triggers(conn, "globex")] == [True]
    assert keyed.get("/ui/workspaces/acme-a").status_code == 200


def test_sign_out_ends_the_session(keyed: TestClient) -> None:
    sign_in(keyed, ADMIN_KEY)
    r = keyed.post("/ui/sign-out", data={"csrf": page_csrf(keyed)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/sign-in"
    assert f'{COOKIE}=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    assert keyed.get("/ui/workspaces", follow_redirects=False).status_code == 303


def test_without_api_keys_the_dashboard_is_open_and_says_so(client: TestClient, conn: Redis) -> None:
    r = client.get("/ui/workspaces")
    assert r.status_code == 200 and "API_KEYS is not set" in r.text
    assert client.get("/ui/sign-in", follow_redirects=False).status_code == 303
    assert client.put("/api/workspaces/ws/triggers/t", json=HOOK).status_code == 201
    assert client.post("/ui/workspaces/ws/pause", data={}).status_code == 403  # CSRF still checked
    token = page_csrf(client, "/ui/workspaces/ws")
    assert client.post("/ui/workspaces/ws/pause", data={"csrf": token}, follow_redirects=False).status_code == 303
    assert store.is_paused(conn, "ws")


def test_the_sign_in_form_needs_its_own_token(keyed: TestClient) -> None:
    """Another site cannot post the sign-in form (it would sign the browser in with its own key)."""
    r = keyed.post("/ui/sign-in", data={"key": ADMIN_KEY}, follow_redirects=False)
    assert r.status_code == 403 and COOKIE not in r.cookies
    stranger = TestClient(keyed.app)
    foreign = sign_in_form(stranger, ADMIN_KEY)
    keyed.get("/ui/sign-in")
    assert keyed.post("/ui/sign-in", data=foreign, follow_redirects=False).status_code == 403


def test_a_key_of_one_workspace_lists_only_it(redis_url: str, conn: Redis) -> None:
    solo = "solo-key-0123456789abcdef"
    settings = make_engine_settings(redis_url, api_keys=f"{ADMIN_KEY},{solo}:solo", ui_secret=UI_SECRET)
    with TestClient(create_app(settings)) as c:
        for ws in ("solo", "solo-2"):
            assert c.put(f"/api/workspaces/{ws}/triggers/t", json=HOOK, headers=ADMIN).status_code == 201
        sign_in(c, solo)
        listing = c.get("/ui/workspaces").text
        assert 'href="/ui/workspaces/solo"' in listing and "/ui/workspaces/solo-2" not in listing
        assert c.get("/ui/workspaces/solo-2").status_code == 403
