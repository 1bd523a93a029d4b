"""`scheduler_api.auth`: parsing API_KEYS and checking a key in constant time (no HTTP; the
check on every request is in tests/api/test_middleware.py).
"""

from __future__ import annotations

import hmac
import re
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
    keys = auth.parse_api_keys(f"{ADMIN},{TEAM}:team-*,third-key-0123456789abc")
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
    keys = auth.parse_api_keys(f" {ADMIN} ,, {TEAM}:team-* , {ONE}:acme,")
    assert keys == [auth.ApiKey(ADMIN), auth.ApiKey(TEAM, "team-*"), auth.ApiKey(ONE, "acme")]
    assert [k.scope for k in keys] == ["*", "team-*", "acme"]
    assert auth.parse_api_keys("") == []
    assert ADMIN not in repr(make_settings("redis://x", api_keys=ADMIN))


ONE = "one-key-0123456789-abcdef"


@pytest.mark.parametrize(
    ("scope", "covered", "not_covered"),
    [
        ("acme", ["acme"], ["acme2", "acme.x", "acme-x", "acmecorp-prod", "Acme", "acm", "xacme"]),
        ("acme-*", ["acme-", "acme-x", "acme-x.y", "acme--"], ["acme", "acmecorp", "acme2", "acme_x", "acme.x"]),
        ("acme_*", ["acme_x"], ["acme-x", "acmecorp"]),
        ("acme.*", ["acme.x", "acme.x-y"], ["acme-x", "acmex"]),
        ("*", ["acme", "acmecorp", "x"], []),
    ],
)
def test_scopes_cover_exact_names_or_separated_prefixes(scope: str, covered: list[str], not_covered: list[str]) -> None:
    [key] = auth.parse_api_keys(f"{ONE}:{scope}" if scope != "*" else ONE)
    for ws in covered:
        assert key.covers(ws), ws
        assert auth.authorize([key], f"Bearer {ONE}", ws) == key
    for ws in not_covered:
        assert not key.covers(ws), ws
        with pytest.raises(RequestError) as info:
            auth.authorize([key], f"Bearer {ONE}", ws)
        assert info.value.details[0]["path"] == "workspace_id"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (f"{ADMIN}:", "entry 1: the scope after ':' is empty"),  # would have been an all-workspace key
        (f"{ADMIN},{TEAM}:", "entry 2: the scope after ':' is empty"),
        (f"{ADMIN}:acme*", "entry 1: a prefix scope is 'prefix*' where the prefix"),  # no separator
        (f"{ADMIN}:a*b", "entry 1: a workspace name is 1-128 characters"),
        (f"{ADMIN}:*", "entry 1: a prefix scope"),
        (f"{ADMIN}:acme-**", "entry 1: a prefix scope"),
        (f"{ADMIN}:acme:x", "entry 1: a workspace name"),
        (f"{ADMIN}:{'a' * 129}", "entry 1: a workspace name"),
        (f"{ADMIN},{TEAM}:team-*,{ADMIN}:other", "entry 3: the same key as entry 1"),
        (f"{TEAM}:team-*, {TEAM}:team-*", "entry 2: the same key as entry 1"),
    ],
)
def test_refused_entries_stop_the_start_naming_the_entry(
    raw: str, why: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        auth.parse_api_keys(raw)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("API_KEYS", raw)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("invalid settings: API_KEYS: ") and why in message
    assert ADMIN not in message and TEAM not in message
    assert ADMIN not in str(info.value.__cause__) and TEAM not in str(info.value.__cause__)
