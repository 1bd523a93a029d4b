"""`install_ui(app)`: the dashboard's routes under /ui, its static files and its error pages.

Installed after the API's error handlers: on /ui, Redis being unavailable (503), a query that does not
validate (400), an HTTP error (404, 405...) and an unexpected error (500, a generic message, never a
traceback) are answered with an HTML page carrying the API's status (and message); everywhere else
as before, in JSON. Every /ui response carries `HEADERS` (no framing, a CSP, nosniff). A body over
MAX_BODY_BYTES is refused by the API's middleware before the dashboard, in JSON.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler_api.auth import ApiKey
from scheduler_api.errors import StoreUnavailable
from scheduler_api.settings import Settings
from scheduler_api.ui import deliveries, health, signin, trigger_form, workspace, workspace_settings, workspaces
from scheduler_api.ui.session import Sessions, ui_secret
from scheduler_api.ui.web import PageError, Ui, ui_of

STATIC = Path(__file__).parent / "static"
GENERIC = "Something went wrong on our side; it was logged. Try again, or go back."
KEPT = ("allow", "retry-after", "www-authenticate")  # the API's answer's headers an HTML error page keeps
# On every /ui response: no framing (clickjacking), scripts, styles and form posts from this site only,
# no content sniffing, no full URL (workspace ids) to other sites.
HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def install_ui(app: FastAPI, settings: Settings, keys: list[ApiKey]) -> None:
    """Mount the dashboard on `app`: its sessions are checked against `keys` (API_KEYS)."""
    app.state.ui = Ui(Sessions(ui_secret(settings), keys, lifetime=settings.ui_session_seconds))
    for module in (signin, workspaces, trigger_form, workspace_settings, workspace, deliveries, health):
        app.include_router(module.router, include_in_schema=False)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    app.add_exception_handler(PageError, _page_error)
    for kind in (StoreUnavailable, redis.ConnectionError, redis.TimeoutError, RequestValidationError, HTTPException):
        api_handler = app.exception_handlers.get(kind)  # the API's JSON answer (api.errors)
        if api_handler is not None:
            app.add_exception_handler(kind, _html_on_ui(api_handler))
    api_unexpected = app.exception_handlers.get(Exception)
    if api_unexpected is not None:
        app.add_exception_handler(Exception, _html_on_ui(api_unexpected, message=GENERIC))
    app.add_middleware(PageHeaders)


class PageHeaders:
    """Adds `HEADERS` to every response under /ui (pages, redirects, error pages, static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/ui"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)


def _html_on_ui(api_handler: Handler, *, message: str | None = None) -> Handler:
    """The API's answer on /api; on /ui an HTML error page with the same status and the API's
    message (`message` instead when given: an unexpected error shows no detail)."""

    async def handle(request: Request, exc: Exception) -> Response:
        answer = api_handler(request, exc)
        if inspect.isawaitable(answer):
            answer = await answer
        if not request.url.path.startswith("/ui") or not isinstance(answer, JSONResponse):
            return answer
        shown = message or json.loads(bytes(answer.body)).get("error", "Something went wrong")
        html = ui_of(request).env.get_template("error.html").render(page=None, status=answer.status_code, message=shown)
        kept = {name: answer.headers[name] for name in KEPT if name in answer.headers}
        # HEADERS here too: a 500 is answered outside PageHeaders (by Starlette's outermost middleware)
        return HTMLResponse(
            html, status_code=answer.status_code, headers={"Cache-Control": "no-store", **kept, **HEADERS}
        )

    return handle


async def _page_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    if exc.location is not None:
        return RedirectResponse(exc.location, status_code=303)
    html = ui_of(request).env.get_template("error.html").render(page=None, status=exc.status, message=exc.message)
    return HTMLResponse(html, status_code=exc.status, headers={"Cache-Control": "no-store"})
