"""Fixtures of the tests that start real processes (every test here is marked `processes`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Child
from tests.support.sentinel import SentinelSet


@pytest.fixture
def spawned() -> Iterator[list[Child]]:
    """Every `Child` a test starts goes here; whatever is left is killed at the end."""
    started: list[Child] = []
    yield started
    for p in started:
        p.close()


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    """A real Sentinel set (tests.support.sentinel), stopped when the test ends."""
    s = SentinelSet(tmp_path)
    try:
        yield s
    finally:
        s.stop()
