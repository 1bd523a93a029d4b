"""`scheduler_api.storage.scripts`: every Lua script loads with its includes and counter names, and is
registered once per connection.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest
from redis import Redis

from scheduler_api.storage import connection, scripts


def test_every_script_loads_with_its_includes_and_counter_names() -> None:
    lua = resources.files("scheduler_api.storage").joinpath("lua")
    texts = {f.name: f.read_text() for f in lua.iterdir() if f.name.endswith(".lua")}
    fragments = {name for text in texts.values() for name in re.findall(r"^-- #include (\S+)$", text, re.M)}
    assert fragments == {"trim.lua"}
    for name in sorted(set(texts) - fragments):
        source = scripts.source(name.removesuffix(".lua"))
        assert "#include" not in source and "{{" not in source, name
        header = source.split("\n\n")[0]  # the opening comment: what the script does, its KEYS and ARGV
        assert header.startswith(f"-- {name.removesuffix('.lua')}:") and "-- KEYS[" in header and "-- ARGV[" in header
    assert "'outcome:delivered'" in scripts.source("record")


def test_a_script_is_registered_once_per_connection(conn: Redis, redis_url: str) -> None:
    assert scripts.script(conn, "list") is scripts.script(conn, "list")
    with connection.connect(redis_url, timeout=5) as other:
        assert scripts.script(other, "list") is not scripts.script(conn, "list")
    with pytest.raises(scripts.ScriptError, match="no Lua file"):
        scripts.source("nonexistent")


def _lua_files() -> dict[str, str]:
    lua = resources.files("scheduler_api.storage").joinpath("lua")
    return {f.name.removesuffix(".lua"): f.read_text() for f in lua.iterdir() if f.name.endswith(".lua")}


def test_every_script_compiles_in_redis(conn: Redis) -> None:
    """SCRIPT LOAD compiles each expanded script: a Lua syntax error fails here, not at its first use."""
    texts = _lua_files()
    fragments = {
        name.removesuffix(".lua") for text in texts.values() for name in re.findall(r"^-- #include (\S+)$", text, re.M)
    }
    for name in sorted(set(texts) - fragments):
        sha = conn.script_load(scripts.source(name))
        assert conn.script_exists(sha) == [True], name


def test_includes_are_expanded_with_the_fragments_text() -> None:
    texts = _lua_files()
    fragment = texts["trim"].rstrip("\n")
    including = [name for name, text in texts.items() if "-- #include trim.lua" in text]
    assert including
    for name in including:
        assert fragment in scripts.source(name), name


@pytest.mark.parametrize("placeholder", ["{{Counter.no_such_counter}}", "{{NoSuchTable.delivered}}"])
def test_an_unknown_placeholder_is_a_script_error(monkeypatch: pytest.MonkeyPatch, placeholder: str) -> None:
    name = f"test_placeholder_{abs(hash(placeholder))}"  # a name of its own: `source` caches by name
    real = scripts._read
    monkeypatch.setattr(scripts, "_read", lambda f: f"return {placeholder}" if f == f"{name}.lua" else real(f))
    with pytest.raises(scripts.ScriptError, match="unknown placeholder"):
        scripts.source(name)
