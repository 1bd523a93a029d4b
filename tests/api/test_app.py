"""`scheduler_api.api.app.create_app`: the OpenAPI document, and the start-up rules on API keys."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.api import create_app
from scheduler_api.errors import SettingsError
from tests.support.factories import make_settings, triggers_url


def test_openapi_documents_the_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/api/workspaces/{workspace_id}/triggers"]) == {"get", "post", "delete"}
    assert "/health" in paths
    assert client.get("/docs").status_code == 200


def test_openapi_declares_the_bearer_key(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from API_KEYS.",
    }
    for path, item in doc["paths"].items():
        for operation in item.values():
            if path.startswith("/api/"):
                assert operation["security"] == [{"HTTPBearer": []}], path
                assert {"401", "403"} <= set(operation["responses"]), path
            else:
                assert "security" not in operation, path


ADMIN = "admin-key-0123456789_abc"  # every workspace


TRIGGER = {"cron": "*/5 * * * *", "url": "https://example.com/hook", "method": "POST", "payload": {"a": 1}}


def test_production_refuses_to_start_without_keys(redis_url: str) -> None:
    with pytest.raises(SettingsError, match="API_KEYS"):
        create_app(make_settings(redis_url, app_env="production"))
    with pytest.raises(SettingsError, match="API_KEYS"):
        create_app(make_settings(redis_url, app_env="production", api_keys=" , "))
    create_app(make_settings(redis_url, app_env="production", api_keys=ADMIN))  # with a key it starts


def test_development_without_keys_runs_open_and_warns(
    redis_url: str, conn: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="scheduler_api"):
        app = create_app(make_settings(redis_url, app_env="development", api_keys=""))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "API_KEYS" in r.getMessage()]
    assert len(warnings) == 1
    assert "OPEN" in warnings[0].getMessage()
    with TestClient(app) as c:
        assert c.post(triggers_url("ws"), json={"triggers": [TRIGGER]}).status_code == 200
        assert c.get(triggers_url("ws")).json()["count"] == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scheduler_api"):
        create_app(make_settings(redis_url, api_keys=ADMIN))
    assert not [r for r in caplog.records if "API_KEYS" in r.getMessage()]


def test_openapi_shows_the_one_trigger_endpoints_their_headers_and_statuses(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    one = paths["/api/workspaces/{workspace_id}/triggers/{trigger_id}"]
    assert {"get", "put", "patch", "delete"} <= set(one)
    for method in ("put", "patch", "delete"):
        params = {(p["in"], p["name"]) for p in one[method]["parameters"]}
        assert {("header", "If-Match"), ("query", "dry_run"), ("path", "trigger_id")} <= params, method
        assert "412" in one[method]["responses"], method
    assert ("header", "If-None-Match") in {(p["in"], p["name"]) for p in one["put"]["parameters"]}
    assert {"200", "201"} <= set(one["put"]["responses"])
    assert "application/merge-patch+json" in one["patch"]["requestBody"]["content"]
    listing = paths["/api/workspaces/{workspace_id}/triggers"]
    for method in ("post", "delete"):
        assert "412" in listing[method]["responses"]
        assert ("header", "If-Match") in {(p["in"], p["name"]) for p in listing[method]["parameters"]}
    assert "after" in client.get("/openapi.json").json()["components"]["schemas"]["PreviewRequest"]["properties"]
