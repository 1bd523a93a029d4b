"""`install_ui(app)`: the dashboard's routes under /ui, its static files and its error pages.

Installed after the API's error handlers: Redis being unavailable is answered on /ui with an HTML
page carrying the API's status and message (503), and as before everywhere else.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from scheduler_api.auth import ApiKey
from scheduler_api.errors import StoreUnavailable
from scheduler_api.settings import Settings
from scheduler_api.ui import deliveries, health, signin, trigger_form, workspace, workspace_settings, workspaces
from scheduler_api.ui.session import Sessions, ui_secret
from scheduler_api.ui.web import PageError, Ui, ui_of

STATIC = Path(__file__).parent / "static"
Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def install_ui(app: FastAPI, settings: Settings, keys: list[ApiKey]) -> None:
    """Mount the dashboard on `app`: its sessions are checked against `keys` (API_KEYS)."""
    app.state.ui = Ui(Sessions(ui_secret(settings), keys, lifetime=settings.ui_session_seconds))
    for module in (signin, workspaces, trigger_form, workspace_settings, workspace, deliveries, health):
        app.include_router(module.router, include_in_schema=False)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    app.add_exception_handler(PageError, _page_error)
    for unavailable in (StoreUnavailable, redis.ConnectionError, redis.TimeoutError):
        api_handler = app.exception_handlers.get(unavailable)  # the API's JSON 503 (api.errors)
        if api_handler is not None:
            app.add_exception_handler(unavailable, _unavailable_page(api_handler))


def _unavailable_page(api_handler: Handler) -> Handler:
    """Redis unavailable: the API's answer on /api, an HTML page with the same status on /ui."""

    async def handle(request: Request, exc: Exception) -> Response:
        answer = api_handler(request, exc)
        if inspect.isawaitable(answer):
            answer = await answer
        if not request.url.path.startswith("/ui") or not isinstance(answer, JSONResponse):
            return answer
        message = json.loads(bytes(answer.body)).get("error", "Redis is unavailable")
        html = (
            ui_of(request).env.get_template("error.html").render(page=None, status=answer.status_code, message=message)
        )
        return HTMLResponse(html, status_code=answer.status_code, headers={"Cache-Control": "no-store"})

    return handle


async def _page_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    if exc.location is not None:
        return RedirectResponse(exc.location, status_code=303)
    html = ui_of(request).env.get_template("error.html").render(page=None, status=exc.status, message=exc.message)
    return HTMLResponse(html, status_code=exc.status, headers={"Cache-Control": "no-store"})
