"""The Lua scripts of the storage wing: loaded from ``lua/*.lua``, registered once per connection.

A script is one file, ``lua/{name}.lua``, read with `importlib.resources` (the files ship in the
wheel as package data). Before registering, the loader expands two things in its text:

* a line ``-- #include {fragment}.lua`` is replaced by the fragment's text (``trim.lua``, shared
  by the scripts that write records), so a fragment is written once and never pasted in Python;
* ``{{Counter.NAME}}`` is replaced by the Lua string literal of that metrics counter
  (scheduler_api.storage.counters), so the counter names live in one table.

`script(conn, name)` registers a script with `conn` the first time it is asked for and keeps the
redis-py `Script` on the connection object itself (a `WeakKeyDictionary` would keep the
connection alive: a `Script` holds its client). A `Script` sends EVALSHA and loads the script
again if the server answers NOSCRIPT (a restart, a failover).

Failure rules: a script file that is missing, or names an unknown fragment or counter, raises
`ScriptError` the first time it is loaded (every script runs in the tests). Errors of running a
script are redis-py's (callers wrap them with `redis_util.redis_errors` where a client waits).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis import Redis
from redis.commands.core import Script

from scheduler_api.errors import SchedulerApiError
from scheduler_api.storage.counters import Counter

_ATTRIBUTE = "_scheduler_api_scripts"  # on a Redis client: {script name: registered Script}
_INCLUDE = re.compile(r"^-- #include (\S+)$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{(\w+)\.(\w+)\}\}")
_TABLES: dict[str, type[Counter]] = {"Counter": Counter}


class ScriptError(SchedulerApiError):
    """A Lua file cannot be loaded as it is written (a bug in the package, not a runtime failure)."""


def _read(filename: str) -> str:
    try:
        return resources.files("scheduler_api.storage").joinpath("lua").joinpath(filename).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ScriptError(f"no Lua file {filename!r} in scheduler_api/storage/lua") from e


@cache
def source(name: str) -> str:
    """The text of script `name` with its includes and placeholders expanded (once per process)."""
    text = _INCLUDE.sub(lambda m: _read(m.group(1)).rstrip("\n"), _read(f"{name}.lua"))

    def value(match: re.Match[str]) -> str:
        table, member = match.groups()
        try:
            return f"'{_TABLES[table][member].value}'"
        except KeyError:
            raise ScriptError(f"{name}.lua: unknown placeholder {match.group(0)}") from None

    return _PLACEHOLDER.sub(value, text)


def script(conn: Redis, name: str) -> Script:
    """Script `name`, registered with `conn` on first use."""
    registered: dict[str, Script] | None = conn.__dict__.get(_ATTRIBUTE)
    if registered is None:
        registered = conn.__dict__.setdefault(_ATTRIBUTE, {})
    found = registered.get(name)
    if found is None:
        found = registered[name] = conn.register_script(source(name))
    return found


def run(conn: Redis, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run script `name` on `conn` with `keys` and `args` (EVALSHA; loaded first if Redis lacks it)."""
    return script(conn, name)(keys=keys, args=args)
