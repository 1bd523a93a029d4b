"""`scheduler-api serve | worker | scheduler | dev`: the service's processes.

* ``serve``     the HTTP API under uvicorn on ``$HOST:$PORT``;
* ``worker``    a delivery worker (`scheduler_api.delivery.worker`);
* ``scheduler`` the scheduler (`scheduler_api.engine.scheduler`); run several for high availability;
* ``rotate-secrets``  re-encrypt stored header values with the first ``SECRETS_KEY`` key;
* ``dev``       all three as child processes, with an embedded Redis when none is configured
                or answering on localhost:6379 (persisted under ``--data-dir``). Ctrl-C stops all.
* ``apply``     a workspace's triggers from a YAML or JSON file: plan, then apply (`scheduler_api.apply`);
* ``get``       a workspace's triggers as such a file. Both are clients of the HTTP API (``--api``,
                ``--key``, or ``SCHEDULER_API_URL`` / ``SCHEDULER_API_KEY``) and read no settings.

Settings come from the environment and `.env`; an invalid one stops the command at start-up with
a message naming the variable (exit code 2).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler_api import tracing
from scheduler_api.errors import SettingsError
from scheduler_api.settings import DEFAULT_REDIS_URL, Settings, load_settings

if TYPE_CHECKING:
    from scheduler_api.health import HealthServer, Liveness


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as e:
        print(f"scheduler-api: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _serve_health(settings: Settings) -> tuple[Liveness | None, HealthServer | None]:
    """`GET /health` on `HEALTH_PORT` for a worker or a scheduler (scheduler_api.health); a port
    that cannot be bound stops the command (exit code 2)."""
    from scheduler_api.health import serve_health

    try:
        return serve_health(settings)
    except SettingsError as e:
        print(f"scheduler-api: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def serve(settings: Settings) -> None:
    import uvicorn

    from scheduler_api.api import create_app
    from scheduler_api.api.server import EdgeLimits, protocol_for
    from scheduler_api.logs import setup_logging

    setup_logging(settings)
    try:
        app = create_app(settings)  # refuses e.g. production without API_KEYS
    except SettingsError as e:
        print(f"scheduler-api: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    # uvicorn shuts down gracefully on SIGTERM / SIGINT, then raises the signal again with the
    # handlers it found, which would end the process "killed by SIGTERM" (or a KeyboardInterrupt
    # traceback). After a graceful stop the exit status is 0, as process managers expect.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.delivery_timeout_seconds),
        # Header and body limits, timeouts and MAX_CONNECTIONS, every refusal in JSON.
        http=protocol_for(EdgeLimits.from_settings(settings)),
    )


def worker(settings: Settings, burst: bool = False) -> None:
    from scheduler_api.delivery.worker import run_worker, tune_gc
    from scheduler_api.logs import setup_logging
    from scheduler_api.storage.connection import connect

    setup_logging(settings)
    tracing.install_from_env("worker")
    liveness, health = _serve_health(settings)
    tune_gc()
    try:
        run_worker(settings, connect(settings.redis_url), burst=burst, liveness=liveness)
    finally:
        if health is not None:
            health.close()


def scheduler(settings: Settings) -> None:
    from scheduler_api.engine.scheduler import TriggerScheduler
    from scheduler_api.logs import setup_logging
    from scheduler_api.storage.connection import connect

    setup_logging(settings)
    tracing.install_from_env("scheduler")
    liveness, health = _serve_health(settings)
    try:
        TriggerScheduler(settings, connection=connect(settings.redis_url, timeout=10), liveness=liveness).run()
    finally:
        if health is not None:
            health.close()


def rotate_secrets(settings: Settings) -> int:
    from scheduler_api.header_crypto import HeaderCipher
    from scheduler_api.storage.connection import connect
    from scheduler_api.storage.rotation import rotate_secrets as rotate

    if not settings.secrets_key:
        print("scheduler-api: SECRETS_KEY is not set: nothing to encrypt with", file=sys.stderr)
        return 2
    done = rotate(connect(settings.redis_url, timeout=10), HeaderCipher(settings.secrets_key))
    print(
        f"scheduler-api: re-encrypted the headers of {done.rewritten} trigger(s) with the first SECRETS_KEY key,"
        f" bound to their workspace and header name ({done.unbound} held unbound or plain values)"
    )
    return 0


def dev(settings: Settings, *, data_dir: Path, embedded: bool) -> int:
    from scheduler_api.embedded_redis import RedisServer, answers

    redis_server: RedisServer | None = None
    redis_url = settings.redis_url
    if embedded or (
        "REDIS_URL" not in os.environ
        and "redis_url" not in settings.model_fields_set
        and not answers(DEFAULT_REDIS_URL)
    ):
        redis_server = RedisServer(port=None if embedded else 6379, data_dir=data_dir / "redis").start()
        redis_url = redis_server.url
        print(f"scheduler-api dev: started redis-server on {redis_url} (data in {data_dir / 'redis'})", flush=True)
    else:
        print(f"scheduler-api dev: using Redis at {redis_url}", flush=True)

    env = dict(os.environ, REDIS_URL=redis_url)
    env.setdefault("HOST", "127.0.0.1")
    env["HEALTH_PORT"] = "0"  # the scheduler and the worker would both take it
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        for role in ("serve", "scheduler", "worker"):
            children[role] = subprocess.Popen([sys.executable, "-m", "scheduler_api.cli", role], env=env)
        host = "127.0.0.1" if env["HOST"] in ("0.0.0.0", "::") else env["HOST"]
        print(
            f"scheduler-api dev: API on http://{host}:{settings.port}  "
            f"docs on http://{host}:{settings.port}/docs  dashboard on http://{host}:{settings.port}/ui  "
            "(Ctrl-C stops everything)",
            flush=True,
        )
        while not stopping:
            for role, child in children.items():
                if child.poll() is not None:
                    print(
                        f"scheduler-api dev: {role} exited with {child.returncode}; stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    code = 1
                    stopping = True
            time.sleep(0.2)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + settings.delivery_timeout_seconds + 5
        for child in children.values():
            try:
                child.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if redis_server is not None:
            redis_server.stop()
        print("scheduler-api dev: stopped", flush=True)
    return code


def client_command(args: argparse.Namespace) -> int:
    """`apply` or `get` (exit codes: `scheduler_api.apply.run_apply`, `run_get`)."""
    from scheduler_api.apply import open_client, run_apply, run_get

    with open_client(args.api, args.key) as client:
        if args.command == "get":
            return run_get(client, args.workspace, fmt=args.output)
        return run_apply(client, args.file, args.workspace, dry_run=args.dry_run, exit_code=args.exit_code)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scheduler-api", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP API (uvicorn) on $HOST:$PORT")
    w = sub.add_parser("worker", help="run a delivery worker")
    w.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    sub.add_parser("scheduler", help="run the scheduler")
    sub.add_parser("rotate-secrets", help="re-encrypt stored header values with the first SECRETS_KEY key")
    d = sub.add_parser("dev", help="run API, scheduler and worker together, with Redis if needed")
    d.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".scheduler-api"),
        help="where the embedded Redis keeps its data (default: ./.scheduler-api)",
    )
    d.add_argument(
        "--embedded-redis",
        action="store_true",
        help="always start a private redis-server on a free port, even if one answers",
    )
    a = sub.add_parser("apply", help="plan and apply a workspace's triggers from a YAML or JSON file")
    a.add_argument("file", help='{"triggers": [...]} in YAML, or JSON (.json); "-" reads stdin')
    a.add_argument("--workspace", required=True, help="the workspace whose triggers the file replaces")
    a.add_argument("--dry-run", action="store_true", help="print the plan, apply nothing")
    a.add_argument("--exit-code", action="store_true", help="with --dry-run: exit 2 when the plan has changes")
    g = sub.add_parser("get", help="print a workspace's triggers in the file format apply reads")
    g.add_argument("workspace")
    g.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="format (default: yaml)")
    for client_parser in (a, g):
        client_parser.add_argument(
            "--api", help="the API's URL (default: $SCHEDULER_API_URL, else http://127.0.0.1:3000)"
        )
        client_parser.add_argument("--key", help="API key (default: $SCHEDULER_API_KEY)")
    args = parser.parse_args(argv)
    if args.command in ("apply", "get"):
        raise SystemExit(client_command(args))
    settings = _settings()
    if args.command == "serve":
        serve(settings)
    elif args.command == "worker":
        worker(settings, burst=args.burst)
    elif args.command == "scheduler":
        scheduler(settings)
    elif args.command == "rotate-secrets":
        raise SystemExit(rotate_secrets(settings))
    else:
        raise SystemExit(dev(settings, data_dir=args.data_dir, embedded=args.embedded_redis))


if __name__ == "__main__":
    main()
