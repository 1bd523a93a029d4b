"""Fixtures of the dashboard's tests: the app with API keys (tests.support.ui.KEYS)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.api import create_app
from tests.support.factories import make_engine_settings
from tests.support.ui import KEYS, UI_SECRET


@pytest.fixture
def keyed(redis_url: str, conn: Redis) -> Iterator[TestClient]:
    """The app with an admin key and a key scoped to acme-*; nobody signed in."""
    settings = make_engine_settings(redis_url, api_keys=KEYS, ui_secret=UI_SECRET)
    with TestClient(create_app(settings)) as c:
        yield c
