"""The OpenAPI document of the workspace endpoints added with signing, settings and replay: each is
listed with its response model (and request body), and what the running app answers has the
fields its documented model names (required ones present, no undocumented one), nested models
included; /docs answers.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.storage import edits
from scheduler_api.triggers import Trigger
from tests.support.clock import ONCE, T, iso_second
from tests.support.engine import tick_and_deliver
from tests.support.factories import WS, make_engine_settings
from tests.support.receiver import Receiver

BASE = "/api/workspaces/{workspace_id}"
# (method, path, success status, response model, request body model or None)
ENDPOINTS = [
    ("get", BASE + "/signing-secret", "200", "SigningSecretResponse", None),
    ("post", BASE + "/signing-secret/rotate", "200", "SigningSecretResponse", None),
    ("get", BASE + "/settings", "200", "WorkspaceSettingsResponse", None),
    ("put", BASE + "/settings", "200", "WorkspaceSettingsResponse", "WorkspaceSettingsInput"),
    ("post", BASE + "/deliveries/{firing_id}/replay", "202", "ReplayResponse", None),
    ("post", BASE + "/deliveries/replay", "202", "BulkReplayResponse", "BulkReplayRequest"),
]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def mismatches(doc: dict[str, Any], schema: dict[str, Any], value: Any, at: str = "$") -> list[str]:
    """Where `value` has a field its schema does not document, or lacks a required one (objects
    through $ref, anyOf and array items; scalars are not checked)."""
    if "$ref" in schema:
        return mismatches(doc, doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], value, at)
    if "anyOf" in schema:
        options = [mismatches(doc, option, value, at) for option in schema["anyOf"]]
        return [] if any(not found for found in options) else min(options, key=len)
    if isinstance(value, list) and "items" in schema:
        return [m for i, item in enumerate(value) for m in mismatches(doc, schema["items"], item, f"{at}[{i}]")]
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        found = [f"{at}.{k}: not documented" for k in value if k not in props]
        found += [f"{at}.{k}: required, missing" for k in schema.get("required", []) if k not in value]
        return found + [m for k, v in value.items() if k in props for m in mismatches(doc, props[k], v, f"{at}.{k}")]
    return []


def test_every_new_endpoint_is_documented_with_its_models(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for method, path, status, model, body in ENDPOINTS:
        operation = doc["paths"][path][method]
        assert operation["responses"][status]["content"]["application/json"]["schema"] == ref(model), path
        assert model in doc["components"]["schemas"]
        assert operation.get("summary"), path
        if body is None:
            assert "requestBody" not in operation, path
        else:
            assert operation["requestBody"]["content"]["application/json"]["schema"] == ref(body), path
        assert {"401", "403", "503"} <= set(operation["responses"]), path
    replay_one = doc["paths"][BASE + "/deliveries/{firing_id}/replay"]["post"]["responses"]
    assert {"404", "409"} <= set(replay_one)  # no such record; the trigger is gone
    assert "412" in doc["paths"][BASE + "/settings"]["put"]["responses"]  # If-Match
    delivery = doc["components"]["schemas"]["Delivery"]["properties"]
    assert {"replays", "kind", "alert"} <= set(delivery)
    assert {"disabled_reason", "disabled_at"} <= set(doc["components"]["schemas"]["TriggerDetail"]["properties"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_the_answers_have_the_documented_fields(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url, delivery_max_retries=0)
    doc = client.get("/openapi.json").json()

    def check(response: Any, status: int, model: str) -> Any:
        assert response.status_code == status, response.text
        assert mismatches(doc, ref(model), response.json()) == []
        return response.json()

    ws = f"/api/workspaces/{WS}"
    check(client.get(ws + "/signing-secret"), 200, "SigningSecretResponse")
    rotated = check(client.post(ws + "/signing-secret/rotate"), 200, "SigningSecretResponse")
    assert rotated["previous"] is not None  # the nested PreviousSecret checked too
    check(client.get(ws + "/settings"), 200, "WorkspaceSettingsResponse")
    body = {
        "alerts": {"url": receiver.url + "/alerts", "after_failures": 1},
        "auto_disable_after_failures": 5,
        "rate_limits": [{"host": "api.example.com", "per_second": 10, "concurrency": 5}],
    }
    check(client.put(ws + "/settings", json=body), 200, "WorkspaceSettingsResponse")

    # A failed firing (and its failure alert) to replay, one by id and all failed ones by filter.
    receiver.on("/hook", (500, 0))
    edits.replace(conn, WS, [Trigger(cron=ONCE, url=receiver.url + "/hook", method="POST")], now=lambda: T)
    tick_and_deliver(conn, settings, T + 1.5)
    firing_id = f"{WS}:0@{iso_second(T + 1)}"
    check(client.post(f"{ws}/deliveries/{firing_id}/replay"), 202, "ReplayResponse")
    check(client.post(f"{ws}/deliveries/replay", json={"outcome": "failed", "limit": 10}), 202, "BulkReplayResponse")
    check(client.post(f"{ws}/deliveries/{WS}:0@nothing/replay"), 404, "ErrorResponse")
    tick_and_deliver(conn, settings, T + 2.5)
    listed = check(client.get(ws + "/deliveries"), 200, "DeliveriesResponse")["deliveries"]
    assert {d.get("kind") for d in listed} >= {"alert"} and any(d.get("replays") for d in listed)
    shown = check(client.get(ws + "/triggers/0"), 200, "TriggerResponse")
    assert "disabled_reason" not in shown["job"]  # one failure of five
