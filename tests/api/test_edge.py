"""What the API shows a hostile or careless client at its edge: no redirect to a client-given Host,
/metrics behind METRICS_KEY, and a JSON 400 naming what was wrong with a body the JSON parser refuses.
(The limits of the `serve` process itself: tests/processes/test_serve_limits.py.)
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from scheduler_api.api import create_app
from scheduler_api.settings import Settings

TRIGGERS = "/api/workspaces/acme/triggers"
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("path", ["/health/", "/docs/", "/api/workspaces/acme/triggers/"])
def test_a_trailing_slash_is_a_404_never_a_redirect_to_the_host_header(client: TestClient, path: str) -> None:
    r = client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404
    assert "location" not in r.headers
    assert r.json() == {"success": False, "error": "Not Found", "details": []}


def _metrics_client(settings: Settings, **overrides: object) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=overrides)))


def test_metrics_with_a_key_need_that_key(settings: Settings) -> None:
    key = "metrics-key-0123456789abcdef"
    with _metrics_client(settings, metrics_key=key) as c:
        anonymous = c.get("/metrics")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"] == "Metrics need the metrics key"
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert c.get("/metrics", headers={"Authorization": "Bearer not-the-key"}).status_code == 401
        ok = c.get("/metrics", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        assert "scheduler_queue_depth" in ok.text


def test_metrics_without_a_key_are_off_in_production_and_say_how_to_enable_them(settings: Settings) -> None:
    with _metrics_client(settings, app_env="production", api_keys="admin-key-0123456789_abc") as c:
        r = c.get("/metrics")
    assert r.status_code == 403
    assert r.json() == {
        "success": False,
        "error": "Metrics are disabled",
        "details": [
            {"path": "METRICS_KEY", "message": "set METRICS_KEY and scrape with Authorization: Bearer <METRICS_KEY>"}
        ],
    }


def test_metrics_without_a_key_are_open_in_development(client: TestClient) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200 and "scheduler_queue_depth" in r.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 1200 + b"]" * 1200, "nested too deeply: JSON arrays and objects may nest fewer than 1000 levels"),
        (b'{"triggers": [], "n": ' + b"9" * 5000 + b"}", "a number is too long: integers may have at most 4300 digits"),
        (b'{"triggers": [], "x": "caf\xe9"}', "not valid UTF-8 (byte 0xe9 at offset 26)"),
    ],
    ids=["nested", "long-integer", "not-utf8"],
)
def test_a_body_the_json_parser_refuses_is_a_400_saying_why(client: TestClient, body: bytes, message: str) -> None:
    r = client.post(TRIGGERS, content=body, headers=JSON)
    assert r.status_code == 400
    assert r.json() == {
        "success": False,
        "error": "Malformed JSON body",
        "details": [{"path": "body", "message": message}],
    }
