"""`scheduler_api.auth`: parsing API_KEYS and checking a key in constant time (no HTTP; the
check on every request is in tests/api/test_middleware.py).
"""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest

from scheduler_api import auth
from scheduler_api.errors import RequestError, SettingsError
from scheduler_api.settings import load_settings
from tests.support.factories import make_settings

ADMIN = "admin-key-0123456789_abc"  # every workspace


TEAM = "team-key-0123456789-abcd"  # only workspaces whose id starts with "team-"


def test_keys_are_compared_in_constant_time_against_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """`hmac.compare_digest` for each configured key, whatever matches: no early exit, no `==`."""
    keys = auth.parse_api_keys(f"{ADMIN},{TEAM}:team-,third-key-0123456789abc")
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    for token in (ADMIN, TEAM, "wrong-key-0123456789abcdef", ""):
        calls.clear()
        try:
            auth.authorize(keys, f"Bearer {token}", "team-a")
        except RequestError:
            pass
        assert len(calls) == 3, token  # every key, even after the first one matched
        assert all(b == token.encode() for _, b in calls)


@pytest.mark.parametrize(
    "raw",
    [
        "sh0rt-secret-k",  # 14 characters
        "has space in it 0123456789",
        "bad!chars!0123456789abcdef",
        "ünicode-key-0123456789abc",
        f"{ADMIN},sh0rt-secret-k",  # one bad entry among good ones
        f"{ADMIN}:bad prefix!",
    ],
)
def test_invalid_api_keys_fail_settings_without_echoing_them(
    raw: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("API_KEYS", raw)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "API_KEYS" in message
    for part in [p for chunk in raw.split(",") for p in chunk.split(":")]:
        assert part.strip() not in message
        assert part.strip() not in str(info.value.__cause__)  # nor in a traceback's chained error


def test_api_keys_parsing() -> None:
    keys = auth.parse_api_keys(f" {ADMIN} ,, {TEAM}:team- ,")
    assert keys == [auth.ApiKey(ADMIN), auth.ApiKey(TEAM, "team-")]
    assert auth.parse_api_keys("") == []
    assert ADMIN not in repr(make_settings("redis://x", api_keys=ADMIN))
