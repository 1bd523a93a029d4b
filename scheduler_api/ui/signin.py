"""Sign-in with an API key (checked as a bearer key is: scheduler_api.auth.authorize) and sign-out
(which revokes the session in Redis: a copied cookie stops working too)."""

from __future__ import annotations

import secrets
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from scheduler_api.api.deps import redis_of
from scheduler_api.auth import authorize
from scheduler_api.errors import RequestError
from scheduler_api.storage import ui_sessions
from scheduler_api.ui.session import COOKIE, LOGIN_COOKIE
from scheduler_api.ui.web import (
    Page,
    checked_post,
    first,
    form_of,
    over_https,
    set_session_cookie,
    signed_in,
    ui_of,
)

router = APIRouter()
Form = Annotated[dict[str, list[str]], Depends(form_of)]


def _safe_next(target: str) -> str:
    """Only a dashboard path: never another site (an open redirect)."""
    return target if target.startswith("/ui") and not target.startswith("//") else "/ui"


def _sign_in_page(
    request: Request, *, status: int = 200, error: str | None = None, target: str = "/ui"
) -> HTMLResponse:
    """The form, with a token bound to the nonce cookie it sets (kept while it lasts)."""
    ui = ui_of(request)
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
    html = ui.env.get_template("sign_in.html").render(
        page=None, error=error, next=_safe_next(target), token=ui.sessions.login_token(nonce)
    )
    response = HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
    secure = over_https(request)
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, path="/ui", httponly=True, samesite="strict", secure=secure)
    return response


@router.get("/ui/sign-in", response_class=HTMLResponse)
def sign_in_form(request: Request, next: str = "/ui") -> Response:
    if not ui_of(request).sessions.keys:
        return RedirectResponse("/ui", status_code=303)  # the open UI has nobody to sign in
    return _sign_in_page(request, target=next)


@router.post("/ui/sign-in", response_class=HTMLResponse)
def sign_in(request: Request, form: Form) -> Response:
    """A key that `authorize` refuses -> the form again, 401; else a new session cookie."""
    sessions = ui_of(request).sessions
    target = _safe_next(first(form, "next", "/ui"))
    if not sessions.login_ok(request.cookies.get(LOGIN_COOKIE), first(form, "csrf") or None):
        error = "The sign-in form expired or was not sent from this site: try again."
        return _sign_in_page(request, status=403, error=error, target=target)
    try:
        key = authorize(sessions.keys, f"Bearer {first(form, 'key').strip()}", None)
    except RequestError:
        return _sign_in_page(
            request, status=401, error="That key is not one of this service's API keys.", target=target
        )
    _, cookie = sessions.issue(key, now=time.time())
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(request, response, cookie, sessions.lifetime)
    response.delete_cookie(LOGIN_COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


@router.post("/ui/sign-out")
def sign_out(form: Form, page: Annotated[Page, Depends(signed_in)]) -> Response:
    """Ends the session server-side (its nonce revoked for the rest of its life), then drops the cookie."""
    checked_post(page, form)
    seconds_left = page.session.expires - time.time()
    ui_sessions.revoke(redis_of(page.request), page.session.nonce, seconds_left=seconds_left)
    response = RedirectResponse("/ui/sign-in" if ui_of(page.request).sessions.keys else "/ui", status_code=303)
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return response
