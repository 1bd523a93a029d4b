"""The package's shape, read from its source with `ast`: imports point only downwards through the layers,
no import cycles, Lua only in .lua files, small modules, and no side effects on import.

Layers, top to bottom (README "Architecture"); a module imports only from layers below its own, or
from its own wing or layer:

  entry points   cli, main, apply (the CLI's `apply` / `get`, over the HTTP API)
  wings          api/, engine/, delivery/ (never one another), ui/ (the dashboard: it calls api/'s route
                 functions, so it may import api/; api/ imports it only where create_app mounts it)
  beside them    metrics (counts in Redis: imports storage, is imported only by the wings)
  storage        storage/
  shared         triggers, cron, cron_syntax, ssrf, signing, auth, header_crypto, embedded_redis,
                 schedule_warnings, tracing, health
  base           errors, settings, logs, and the package root (its __version__)

Imports inside functions count too (cli.py imports lazily).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scheduler_api"
MAX_LINES = 350

WINGS = ("api", "engine", "delivery", "ui")
# The one wing that may import another: the dashboard goes through the API's own functions.
SIDEWAYS = {("ui", "api")}
# The one import of ui/ by api/: create_app mounts the dashboard.
MOUNTS = {("scheduler_api.api.app", "scheduler_api.ui.app")}
LAYERS: dict[str, int] = {
    "cli": 5,
    "main": 5,
    "apply": 5,  # the CLI's `apply` / `get`: a client of the HTTP API
    "api": 4,
    "engine": 4,
    "delivery": 4,
    "ui": 4,
    "metrics": 3,
    "storage": 2,
    "triggers": 1,
    "policy": 1,
    "cron": 1,
    "cron_syntax": 1,
    "ssrf": 1,
    "signing": 1,
    "auth": 1,
    "header_crypto": 1,
    "embedded_redis": 1,
    "schedule_warnings": 1,
    "tracing": 1,  # W3C trace context and OpenTelemetry spans (no Redis)
    "health": 1,  # the liveness endpoint of the worker and the scheduler (no Redis)
    "errors": 0,
    "settings": 0,
    "logs": 0,
    "": 0,  # the package root: scheduler_api.__version__
}
# Known imports against the layers, reported and waiting for a fix in the package: each pair must still
# exist (remove it here once fixed), and no other may appear. settings.py validates REDIS_URL, API_KEYS
# and SECRETS_KEY with the functions of the modules that use them, importing upwards (inside validators).
KNOWN_UPWARD = {
    ("scheduler_api.settings", "scheduler_api.storage.connection"),
    ("scheduler_api.settings", "scheduler_api.auth"),
    ("scheduler_api.settings", "scheduler_api.header_crypto"),
}
LAYER_NAMES = {5: "entry points", 4: "wings", 3: "beside the wings", 2: "storage", 1: "shared", 0: "base"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit(module: str) -> str:
    """The part of the package `module` belongs to: its wing or storage/, else its own name."""
    parts = module.split(".")[1:]
    return parts[0] if parts else ""


def imports_of(module: str) -> Iterator[tuple[str, int]]:
    """(imported scheduler_api module, line) for every import in `module`, at any depth."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "scheduler_api":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "scheduler_api":
                continue
            for alias in node.names:  # `from scheduler_api import cron`: the module, not the package
                candidate = f"{target}.{alias.name}"
                yield (candidate if candidate in MODULES else target), node.lineno


def edges() -> list[tuple[str, str, int]]:
    return [(m, target, line) for m in MODULES for target, line in imports_of(m) if target != m]


def test_every_module_has_a_layer() -> None:
    assert {unit(m) for m in MODULES} <= set(LAYERS), set(map(unit, MODULES)) - set(LAYERS)
    assert "scheduler_api.storage.triggers" in MODULES and "scheduler_api.api.routes.triggers" in MODULES


def test_imports_point_only_downwards() -> None:
    wrong = []
    known = set()
    for importer, imported, line in edges():
        assert imported in MODULES, f"{importer}:{line} imports {imported}, which is not a module of the package"
        a, b = unit(importer), unit(imported)
        if a == b or a not in LAYERS or b not in LAYERS:
            continue  # inside one wing or storage/; a module without a layer fails the test above
        same_level = LAYERS[a] == LAYERS[b]
        sideways = same_level and (a in WINGS or b in WINGS) and (a, b) not in SIDEWAYS  # one wing importing another
        if (importer, imported) in MOUNTS:
            continue
        if (importer, imported) in KNOWN_UPWARD:
            known.add((importer, imported))
        elif LAYERS[b] > LAYERS[a] or sideways:
            where = f"{MODULES[importer].relative_to(PACKAGE.parent)}:{line}"
            layers = f"{LAYER_NAMES[LAYERS[a]]} -> {LAYER_NAMES[LAYERS[b]]}"
            wrong.append(f"{where}: {importer} imports {imported} ({layers})")
    assert not wrong, "\n".join(wrong)
    assert known == KNOWN_UPWARD, f"fixed, remove from KNOWN_UPWARD: {KNOWN_UPWARD - known}"


def test_metrics_is_imported_only_by_the_wings() -> None:
    importers = {unit(i) for i, imported, _ in edges() if imported == "scheduler_api.metrics"}
    assert importers and importers <= set(WINGS), importers


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for importer, imported, _ in edges():
        graph[importer].add(imported)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append([*path[path.index(n) :], n])
            elif n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_rules_see_lazy_and_relative_imports() -> None:
    """Not vacuous: cli.py's imports inside functions are found, and a wing does import storage."""
    cli = {target for target, _ in imports_of("scheduler_api.cli")}
    assert "scheduler_api.delivery.worker" in cli and "scheduler_api.engine.scheduler" in cli
    assert any(unit(i) in WINGS and unit(t) == "storage" for i, t, _ in edges())


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_lua_in_python(module: str) -> None:
    """Lua lives in storage/lua/*.lua, loaded by storage/scripts.py."""
    text = MODULES[module].read_text(encoding="utf-8")
    assert "redis.call" not in text and "redis.pcall" not in text, module


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_small(module: str) -> None:
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES})"


def test_importing_the_package_has_no_side_effects() -> None:
    """Import every module but main in a fresh interpreter: no app, settings or Redis client is built, no
    thread started. Only main.py builds `app` (for `uvicorn scheduler_api.main:app`)."""
    names = sorted(m for m in MODULES if m != "scheduler_api.main")
    script = textwrap.dedent(
        f"""
        import gc, importlib, threading
        for name in {names!r}:
            importlib.import_module(name)
        from fastapi import FastAPI
        from redis import Redis
        from scheduler_api.settings import Settings
        built = [type(o).__name__ for o in gc.get_objects() if isinstance(o, (FastAPI, Redis, Settings))]
        assert not built, built
        assert threading.active_count() == 1, threading.enumerate()
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_only_main_builds_an_app_at_module_level() -> None:
    builders = {"create_app", "FastAPI", "load_settings", "Settings", "connect", "Redis"}
    found = []
    for module, path in MODULES.items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:  # module level only
            for call in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.ClassDef) else ():
                if isinstance(call, ast.Call):
                    func = call.func
                    name = (
                        func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                    )
                    if name in builders:
                        found.append(f"{module}:{call.lineno} {name}()")
    assert found == ["scheduler_api.main:6 create_app()", "scheduler_api.main:6 load_settings()"], found
