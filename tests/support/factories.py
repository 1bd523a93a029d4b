"""Builders of test settings and triggers."""

from __future__ import annotations

from typing import Any

from scheduler_api.settings import Settings
from scheduler_api.triggers import Trigger

WS = "ws"  # the workspace most tests use


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    """Settings for tests: fast ticks and backoff; `.env` files are not read."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "scheduler_interval_seconds": 0.05,
        "delivery_backoff_seconds": 0.05,
        "delivery_timeout_seconds": 2.0,
        "worker_lease_seconds": 3.0,
        "misfire_grace_seconds": 60.0,
        "allow_private_targets": True,  # the receiver is on 127.0.0.1; tests of the guard turn it off
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def make_engine_settings(redis_url: str, **overrides: Any) -> Settings:
    """Test settings with at most 5 requests in flight unless told otherwise: the receiver
    (http.server) has a listen backlog of 5, and more simultaneous new connections can sit
    unanswered past the delivery timeout."""
    return make_settings(redis_url, **{"worker_concurrency": 5, **overrides})


def make_trigger(url: str, cron_expr: str = "* * * * * *", method: str = "POST", **kw: Any) -> Trigger:
    """A trigger firing every second unless told otherwise."""
    return Trigger(cron=cron_expr, url=url, method=method, **kw)


def triggers_url(ws: str) -> str:
    """The path of a workspace's triggers in the API."""
    return f"/api/workspaces/{ws}/triggers"


def trigger_body(n: int = 0, **changes: Any) -> dict[str, Any]:
    """A valid trigger as the API takes it (JSON), numbered `n` in its url, with `changes` applied."""
    return {"cron": "0 9 * * 1-5", "url": f"https://api.example.com/hook/{n}", "method": "GET", **changes}


def numbered_trigger(n: int) -> dict[str, object]:
    """A valid trigger as the API takes it, with the id `t{n}` and `n` in its url (daily at 09:00)."""
    return {"id": f"t{n}", "cron": "0 9 * * *", "url": f"https://api.example.com/{n}", "method": "GET"}


# The README's example: two triggers whose header values must never be shown.
SECRET = "Bearer sk-live-Very-Secret-Value-123"
OTHER_SECRET = "api-key-Also-Secret-456"
README_TRIGGERS: list[dict[str, Any]] = [
    {
        "cron": "0 */2 * * *",
        "url": "https://api.example.com/webhook",
        "method": "POST",
        "payload": {"event": "scheduled_task", "data": {}},
        "headers": {"Authorization": SECRET, "Content-Type": "application/json"},
    },
    {
        "cron": "0 9 * * 1-5",
        "url": "https://api.example.com/report",
        "method": "GET",
        "headers": {"X-API-Key": OTHER_SECRET},
    },
]

# Three triggers as the API takes them: New York time with a payload and secret headers (values
# TRIGGERS_SECRET and "also-secret"), a disabled six-field one, and a plain UTC one.
TRIGGERS_SECRET = "Bearer sk-Very-Secret-Header-Value"
TRIGGERS: list[dict[str, Any]] = [
    {
        "cron": "30 1 * * *",
        "url": "https://example.com/ny",
        "method": "POST",
        "timezone": "America/New_York",
        "payload": {"a": 1},
        "headers": {"Authorization": TRIGGERS_SECRET, "X-Trace": "also-secret"},
    },
    {"cron": "*/10 * * * * *", "url": "https://example.com/off", "method": "GET", "enabled": False},
    {"cron": "0 9 * * 1-5", "url": "https://example.com/utc", "method": "GET"},
]
