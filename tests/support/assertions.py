"""Assertions on what the API answers."""

from __future__ import annotations

from typing import Any


def assert_error(response: Any, status: int, error: str | None = None) -> dict[str, Any]:
    """`response` is an error in the API's shape (``success``, ``error``, ``details`` of ``path`` and
    ``message``), with `status` (and the `error` text, if given), JSON, and no traceback; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"success", "error", "details"}
    assert body["success"] is False
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["details"], list)
    for d in body["details"]:
        assert set(d) == {"path", "message"} and d["message"]
    assert "Traceback" not in response.text
    if error is not None:
        assert body["error"] == error
    return body
