"""What every dashboard page shares: who is signed in (`Page`), the forms' CSRF check, rendering.

Failure rules: no valid session (or a signed-out one: `signin.sign_out`) -> a GET is redirected to
the sign-in page, a POST answers 401; Redis unavailable while checking it -> the 503 page; a
workspace outside the key's scope -> 403 page (GET and POST alike, before the form is looked at); a
POST without this session's CSRF token -> 403 page, nothing done; a workspace id that is not one
(the API's alphabet) -> 404 page.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from scheduler_api import cron as cronlib
from scheduler_api.api.deps import redis_of
from scheduler_api.auth import ALL, describe, scope_covers
from scheduler_api.storage import ui_sessions
from scheduler_api.triggers import WORKSPACE_ID
from scheduler_api.ui.session import COOKIE, Session, Sessions

TEMPLATES = Path(__file__).parent / "templates"


def environment() -> Environment:
    """The templates, HTML-escaped everywhere (a workspace id or payload is shown as text)."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))
    env.filters["urlpart"] = lambda value: quote(str(value), safe="")
    env.globals["iso"] = lambda ts: cronlib.iso(ts) if ts is not None else None
    return env


@dataclass
class Ui:
    """The dashboard's state on ``app.state.ui``."""

    sessions: Sessions
    env: Environment = field(default_factory=environment)


class PageError(Exception):
    """Answered as an error page with `status` (or a redirect to `location`)."""

    def __init__(self, status: int, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.location = location


def ui_of(request: Request) -> Ui:
    ui: Ui = request.app.state.ui
    return ui


@dataclass
class Page:
    """One request to the dashboard: its session, and the cookie to set when one was just made."""

    request: Request
    session: Session
    cookie: str | None = None

    @property
    def csrf(self) -> str:
        return ui_of(self.request).sessions.csrf_token(self.session)

    def require(self, workspace_id: str) -> str:
        """`workspace_id`, if it is one and the key may see it; else a 404 or 403 page."""
        if not WORKSPACE_ID.match(workspace_id) or len(workspace_id) > 128:
            raise PageError(404, "There is no such workspace: ids are 1-128 characters of A-Z a-z 0-9 _ . -")
        if not scope_covers(self.session.scope, workspace_id):
            why = f"Your key may open only workspaces {describe(self.session.scope)}."
            raise PageError(403, why)
        return workspace_id

    @property
    def sees_all(self) -> bool:
        """Whether the key serves every workspace (scope ``*``): only then the service-wide pages."""
        return self.session.scope == ALL

    def require_all(self) -> None:
        """A 403 page unless the key serves every workspace (the service's global numbers)."""
        if not self.sees_all:
            raise PageError(403, "This page shows every workspace's volumes: it needs a key for all workspaces.")

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = (
            ui_of(self.request)
            .env.get_template(template)
            .render(page=self, base=str(self.request.base_url).rstrip("/"), **context)
        )
        response = HTMLResponse(html, status_code=status)
        self.set_cookie(response)
        response.headers["Cache-Control"] = "no-store"
        return response

    def set_cookie(self, response: Response) -> None:
        if self.cookie is not None:
            set_session_cookie(self.request, response, self.cookie, ui_of(self.request).sessions.lifetime)

    def redirect(self, path: str) -> RedirectResponse:
        response = RedirectResponse(path, status_code=303)
        self.set_cookie(response)
        return response


def over_https(request: Request) -> bool:
    """Whether the browser reached us over https (directly, or through a proxy that says so)."""
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def set_session_cookie(request: Request, response: Response, value: str, lifetime: int) -> None:
    secure = over_https(request)
    response.set_cookie(COOKIE, value, max_age=lifetime, path="/ui", httponly=True, samesite="strict", secure=secure)


def signed_in(request: Request) -> Page:
    """The page's session (FastAPI dependency); without API_KEYS one is made for the visitor."""
    sessions = ui_of(request).sessions
    now = time.time()
    session = sessions.read(request.cookies.get(COOKIE), now=now)
    if session is not None and ui_sessions.is_revoked(redis_of(request), session.nonce):
        session = None  # signed out: the cookie may have been copied before
    if session is not None:
        return Page(request, session)
    if not sessions.keys:
        fresh, cookie = sessions.issue(None, now=now)
        return Page(request, fresh, cookie)
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise PageError(303, "Sign in", location=f"/ui/sign-in?next={quote(target, safe='')}")
    raise PageError(401, "Your session has ended (or the key was removed): sign in again.")


async def form_of(request: Request) -> dict[str, list[str]]:
    """The posted form (application/x-www-form-urlencoded), each name with all its values."""
    out: dict[str, list[str]] = {}
    for name, value in parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True):
        out.setdefault(name, []).append(value)
    return out


def first(form: dict[str, list[str]], name: str, default: str = "") -> str:
    return (form.get(name) or [default])[0]


def checked_post(page: Page, form: dict[str, list[str]], workspace_id: str | None = None) -> None:
    """Scope first (403), then the CSRF token bound to this session (403): nothing done otherwise."""
    if workspace_id is not None:
        page.require(workspace_id)
    if not ui_of(page.request).sessions.csrf_ok(page.session, first(form, "csrf") or None):
        raise PageError(403, "This form was not sent from your session (CSRF check): reload the page and try again.")
