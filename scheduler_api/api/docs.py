"""The API's documentation pages, served entirely by the app: no CDN, nothing fetched at run time.

FastAPI's own ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from a public CDN, so in a cluster
without internet they are blank pages. Here both pages are FastAPI's (`get_swagger_ui_html`,
`get_redoc_html`) with every asset URL local: the script, stylesheet and favicon are the files the
``fastapi-offline`` package ships (Swagger UI 5, ReDoc 2; only its files are used, not its app),
served under ``/docs/assets/``. Swagger UI's validator badge (a request to an outside service) is
off, and ReDoc loads no web fonts.

Failure rules: none at run time beyond Starlette's (an unknown asset is a 404). A missing
``fastapi-offline`` package fails `install_docs`, i.e. the app's start, with ModuleNotFoundError.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
SWAGGER_PARAMETERS: dict[str, Any] = {"validatorUrl": None}  # no badge fetched from validator.swagger.io


def install_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve Swagger UI at `docs_url` and ReDoc at `redoc_url` from local assets (the app must be
    built with ``docs_url=None, redoc_url=None``)."""
    static = resources.files("fastapi_offline").joinpath("static")
    app.mount(ASSETS, StaticFiles(directory=str(static)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get(docs_url, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + oauth2_url,
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), **SWAGGER_PARAMETERS},
        )

    @app.get(oauth2_url, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
