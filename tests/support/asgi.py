"""Requests driven at the ASGI level, below any HTTP client."""

from __future__ import annotations

import asyncio
import json
from typing import Any


def post_without_reading_the_body(app: Any, path: str) -> tuple[int, dict[str, Any]]:
    """POST `path` to the ASGI `app` with a huge Content-Length and a `receive` that fails the test
    if called: return the answer's status and JSON body (the app must answer without reading)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"999999999")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start"
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
