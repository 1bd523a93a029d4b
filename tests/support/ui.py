"""Helpers of the dashboard's tests: the keys they sign in with, a form's CSRF token, signing in."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

ADMIN_KEY = "admin-key-0123456789abcdef"
ACME_KEY = "acme-key-0123456789abcdef"  # scoped to acme-*
KEYS = f"{ADMIN_KEY},{ACME_KEY}:acme-*"
UI_SECRET = "ui-secret-for-the-tests-0123456789"

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in_form(client: TestClient, key: str, next: str = "/ui/workspaces") -> dict[str, str]:
    """The sign-in form filled with `key`, with the token of the form just fetched."""
    return {"key": key, "next": next, "csrf": csrf_of(client.get("/ui/sign-in").text)}


def sign_in(client: TestClient, key: str) -> None:
    r = client.post("/ui/sign-in", data=sign_in_form(client, key), follow_redirects=False)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui/workspaces"


def page_csrf(client: TestClient, path: str = "/ui/workspaces") -> str:
    r = client.get(path)
    assert r.status_code == 200, r.text
    return csrf_of(r.text)
