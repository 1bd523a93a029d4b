"""`create_app(settings)`: the FastAPI application, built from its parts.

The app's Redis client is opened in the lifespan (or passed in); its settings, API keys, header
cipher and SSRF policy are built here once and kept on ``app.state`` for the routes
(scheduler_api.api.deps). Error rules: scheduler_api.api.errors.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.security import HTTPBearer
from redis import Redis, RedisError

from scheduler_api import __version__
from scheduler_api.api.docs import install_docs
from scheduler_api.api.errors import install_handlers
from scheduler_api.api.middleware import ApiKeyCheck, BodySizeLimit, HeadAsGet
from scheduler_api.api.routes import cron, deliveries, health, triggers, workspaces
from scheduler_api.api.routes import settings as settings_routes
from scheduler_api.api.routes import signing as signing_routes
from scheduler_api.auth import parse_api_keys
from scheduler_api.errors import SettingsError, StoreUnavailable
from scheduler_api.header_crypto import HeaderCipher
from scheduler_api.settings import Settings
from scheduler_api.ssrf import TargetPolicy
from scheduler_api.storage import connection, workspace_index
from scheduler_api.ui.app import install_ui

log = logging.getLogger("scheduler_api.api")


def create_app(settings: Settings, *, redis_client: Redis | None = None) -> FastAPI:
    """Build the API. Redis is opened in the lifespan (or `redis_client` is used as given)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = redis_client is None
        app.state.redis = redis_client or connection.connect(settings.redis_url, timeout=settings.redis_timeout_seconds)
        try:
            workspace_index.backfill(app.state.redis)  # when the index is absent (README "Architecture")
        except (StoreUnavailable, RedisError) as e:  # the API starts anyway; the list is then incomplete
            log.warning("workspace index: backfill failed (tried again at the next start): %s", e)
        try:
            yield
        finally:
            if own:
                app.state.redis.close()

    app = FastAPI(
        title="scheduler-api",
        version=__version__,
        description="Fires HTTP requests on cron schedules, per workspace.",
        lifespan=lifespan,
        # A trailing slash is a 404: Starlette's redirect would send the client to its own Host header.
        redirect_slashes=False,
        # /docs and /redoc are served with local assets by install_docs (no CDN).
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.api_keys = parse_api_keys(settings.api_keys)
    if not app.state.api_keys:
        if settings.app_env == "production":
            raise SettingsError("API_KEYS: the API refuses to start in production without API keys")
        log.warning("API_KEYS is not set: the management API is OPEN to anyone who can reach it (development only)")
    app.state.cipher = HeaderCipher(settings.secrets_key) if settings.secrets_key else None
    app.state.target_policy = TargetPolicy.from_settings(settings)
    app.include_router(health.router)
    # The key itself is checked by `ApiKeyCheck` before routing; this documents it in OpenAPI (and
    # gives /docs its "Authorize" button). auto_error=False: it never answers anything itself.
    documented_key = [Depends(HTTPBearer(auto_error=False, description="An API key from API_KEYS."))]
    for resource in (triggers, workspaces, deliveries, cron):
        app.include_router(resource.router, dependencies=documented_key)
    app.include_router(signing_routes.router, dependencies=documented_key)
    app.include_router(settings_routes.router, dependencies=documented_key)
    install_docs(app)
    install_handlers(app)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    app.add_middleware(ApiKeyCheck, keys=app.state.api_keys)
    app.add_middleware(HeadAsGet)
    # The dashboard under /ui (scheduler_api.ui): after the handlers it wraps, and its page headers
    # middleware added last, so it runs first: every /ui answer has them, a 413 included.
    install_ui(app, settings, app.state.api_keys)
    return app
