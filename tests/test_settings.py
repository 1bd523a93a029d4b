"""Settings: read from the environment and `.env`, original defaults, limits, bad values stop the start-up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from scheduler_api.errors import SettingsError
from scheduler_api.settings import Settings, load_settings

ENV_NAMES = [name.upper() for name in Settings.model_fields]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting in the environment (any case) and a cwd without `.env`."""
    for name in list(os.environ):
        if name.upper() in ENV_NAMES:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_issue_names_are_all_settings() -> None:
    issue_names = {
        "PORT",
        "APP_ENV",
        "REDIS_URL",
        "DELIVERY_TIMEOUT_SECONDS",
        "DELIVERY_MAX_RETRIES",
        "DELIVERY_BACKOFF_SECONDS",
        "WORKER_CONCURRENCY",
        "SCHEDULER_INTERVAL_SECONDS",
        "COMPLETED_KEEP_SECONDS",
        "COMPLETED_KEEP_COUNT",
        "FAILED_KEEP_COUNT",
        "MAX_TRIGGERS_PER_WORKSPACE",
    }
    assert issue_names <= set(ENV_NAMES)


def test_defaults_are_the_originals(clean_env: Path) -> None:
    s = load_settings()
    assert s.port == 3000
    assert s.app_env == "development"
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.delivery_timeout_seconds == 30  # "HTTP requests have a 30-second timeout"
    assert s.delivery_max_retries == 3  # "retried up to 3 times"
    assert s.worker_concurrency == 10  # "up to 10 jobs concurrently" (per workspace; all of one workspace's)
    # Fair delivery: all workspaces together may have twice that in flight, never less than one may.
    assert s.max_in_flight == 20 and load_settings(worker_concurrency=30).max_in_flight == 60
    assert load_settings(worker_concurrency=30, worker_max_in_flight=5).max_in_flight == 30
    assert s.completed_keep_seconds == 86_400  # "kept for 24 hours"
    assert s.completed_keep_count == 100  # "(last 100)"
    assert s.failed_keep_count == 1000  # "(last 1000)"
    assert s.delivery_backoff_seconds > 0
    assert 0 < s.scheduler_interval_seconds <= 1  # issue #3: "default 1 s or less"
    assert s.misfire_grace_seconds == 60  # issue #3
    assert s.history_cap == 2000 and load_settings(completed_keep_count=5000).history_cap == 6900
    assert s.max_triggers_per_workspace >= 100


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PORT", "8123", 8123),
        ("APP_ENV", "production", "production"),
        ("REDIS_URL", "redis://cache.internal:6380/2", "redis://cache.internal:6380/2"),
        ("REDIS_URL", "rediss://user:pw@cache.internal:6380/0", "rediss://user:pw@cache.internal:6380/0"),
        ("REDIS_URL", "unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("DELIVERY_TIMEOUT_SECONDS", "12.5", 12.5),
        ("DELIVERY_MAX_RETRIES", "0", 0),
        ("DELIVERY_BACKOFF_SECONDS", "0.25", 0.25),
        ("WORKER_CONCURRENCY", "64", 64),
        ("SCHEDULER_INTERVAL_SECONDS", "0.5", 0.5),
        ("COMPLETED_KEEP_SECONDS", "3600", 3600),
        ("COMPLETED_KEEP_COUNT", "7", 7),
        ("FAILED_KEEP_COUNT", "9", 9),
        ("MAX_TRIGGERS_PER_WORKSPACE", "5", 5),
    ],
)
def test_each_variable_is_read_from_the_environment(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: Any
) -> None:
    monkeypatch.setenv(name, value)
    assert getattr(load_settings(), name.lower()) == expected


def test_dotenv_in_cwd_is_read(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text(
        "# local settings\nPORT=4321\nAPP_ENV=production\nREDIS_URL=redis://from-dotenv:6379/3\nWORKER_CONCURRENCY=4\n",
        encoding="utf-8",
    )
    s = load_settings()
    assert (s.port, s.app_env, s.redis_url, s.worker_concurrency) == (
        4321,
        "production",
        "redis://from-dotenv:6379/3",
        4,
    )
    # The real environment wins over `.env`.
    monkeypatch.setenv("PORT", "5555")
    assert load_settings().port == 5555


def test_dotenv_elsewhere_is_not_read(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("PORT=4321\n", encoding="utf-8")
    sub = clean_env / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert load_settings().port == 3000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "0"),
        ("PORT", "70000"),
        ("APP_ENV", "staging"),
        ("WORKER_CONCURRENCY", "0"),
        ("WORKER_CONCURRENCY", "lots"),
        ("DELIVERY_TIMEOUT_SECONDS", "0"),
        ("DELIVERY_MAX_RETRIES", "-1"),
        ("REDIS_URL", "http://localhost:6379"),
        ("MAX_TRIGGERS_PER_WORKSPACE", "0"),
        ("COMPLETED_KEEP_COUNT", "-5"),
        ("HISTORY_MAX_PER_WORKSPACE", "1099"),  # below the default keep counts, 100 + 1000
    ],
)
def test_a_bad_value_names_the_variable(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert f"{name}:" in message
    assert value in message


@pytest.mark.parametrize(
    "url",
    [
        "http://user:hunter2@cache:6379/0",
        "redis+sentinel://:hunter2@s1,s2/svc/zero",
        "redis+sentinel://s1:notaport/svc?sentinel_password=hunter2",
    ],
)
def test_a_bad_redis_url_is_named_without_its_password(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("API_KEYS", "k" * 40)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "REDIS_URL:" in message and "***" in message
    assert "hunter2" not in message and "k" * 40 not in message


def test_every_bad_variable_is_named(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "abc")
    monkeypatch.setenv("APP_ENV", "staging")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "PORT:" in message and "APP_ENV:" in message


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("MAX_BODY_BYTES", "4096", "max_body_bytes"),
        ("MAX_TRIGGERS_PER_WORKSPACE", "7", "max_triggers_per_workspace"),
        ("MAX_PAYLOAD_BYTES", "100", "max_payload_bytes"),
        ("MAX_HEADERS", "0", "max_headers"),
        ("MAX_HEADER_BYTES", "50", "max_header_bytes"),
        ("MAX_URL_LENGTH", "100", "max_url_length"),
    ],
)
def test_limits_are_settings(name: str, value: str, field: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    assert getattr(load_settings(), field) == int(value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_URL_LENGTH", "4096"),  # can only lower the 2048 ceiling
        ("MAX_URL_LENGTH", "0"),
        ("MAX_BODY_BYTES", "10"),
        ("MAX_HEADERS", "-1"),
        ("MAX_PAYLOAD_BYTES", "big"),
        ("MAX_TRIGGERS_PER_WORKSPACE", "0"),
    ],
)
def test_bad_limits_fail_settings(name: str, value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()
