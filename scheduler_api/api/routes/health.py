"""Outside /api: liveness and readiness, open to probes; Prometheus metrics, for the scraper.

`/metrics` shows every workspace's volumes together, so it is not for tenants: with `METRICS_KEY`
set it needs ``Authorization: Bearer <METRICS_KEY>`` (401 otherwise); without one it is open in
development and a 403 in production (saying how to enable it).
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from scheduler_api.api.deps import redis_of, settings_of
from scheduler_api.api.errors import error_response
from scheduler_api.api.schemas import ErrorResponse, HealthResponse
from scheduler_api.errors import Forbidden, Unauthorized
from scheduler_api.metrics import RedisCollector
from scheduler_api.storage.redis_util import redis_errors

router = APIRouter()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@router.get("/health", response_model=HealthResponse, summary="Liveness: the API process answers")
def health() -> dict[str, str]:
    return {"status": "ok", "timestamp": _now()}


@router.get(
    "/ready",
    response_model=HealthResponse,
    responses={503: {"model": ErrorResponse, "description": "Redis is unreachable."}},
    summary="Readiness: the API can reach Redis",
)
def ready(request: Request) -> Any:
    with redis_errors():
        redis_of(request).ping()
    return JSONResponse({"status": "ready", "timestamp": _now()})


@router.get("/metrics", include_in_schema=False)
def prometheus_metrics(request: Request) -> Response:
    """Prometheus text format; the counters live in Redis, so every replica answers the same."""
    refusal = _metrics_refusal(request)
    if refusal is not None:
        return error_response(refusal)
    registry = CollectorRegistry()
    registry.register(RedisCollector(redis_of(request), settings_of(request).queue_name))
    with redis_errors():
        body = generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _metrics_refusal(request: Request) -> Forbidden | Unauthorized | None:
    settings = settings_of(request)
    if not settings.metrics_key:
        if settings.app_env == "production":
            return Forbidden(
                "Metrics are disabled",
                [
                    {
                        "path": "METRICS_KEY",
                        "message": "set METRICS_KEY and scrape with Authorization: Bearer <METRICS_KEY>",
                    }
                ],
            )
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), settings.metrics_key.encode()):
        return None
    return Unauthorized(
        "Metrics need the metrics key",
        [{"path": "Authorization", "message": "send Authorization: Bearer <METRICS_KEY>"}],
    )
