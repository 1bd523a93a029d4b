"""The chaos soak: ``python -m bench.chaos --minutes 10 [--seed N] [--rolling]`` (issue #19).

1. Starts a private redis-server (AOF with ``appendfsync always``, so a SIGKILL loses no write),
   the receiver (`bench.receiver`, answers at once and records every request), and the service's
   real processes with the production commands: one ``serve``, 2 ``scheduler`` and 2 ``worker``
   (``--schedulers``, ``--workers``), with WORKER_LEASE_SECONDS=``--lease`` (10 s here instead of
   30, so a freeze outlasts it quickly) and DELIVERY_TIMEOUT_SECONDS=``--timeout``.
2. Registers ``--triggers`` triggers on ``--cron`` (``*/5 * * * * *``), each with an explicit id,
   over ``--workspaces`` workspaces, through the HTTP API (one replace per workspace).
3. For ``--minutes``: every 15-40 s (seeded, ``--seed``) SIGKILLs a worker or a scheduler and
   starts a new one; once kills Redis and starts it again on the same port and AOF files after
   ``--redis-down`` seconds; once SIGSTOPs a worker for the lease + 5 s, then SIGCONTs it (each kill
   and the freeze lands 0-0.25 s after a due time, in the middle of a tick or a batch). With
   ``--rolling`` instead: SIGTERM, wait for the exit, start a new one, for every process in turn
   (workers, schedulers, the API), again and again, and no Redis restart nor freeze. Meanwhile a
   thread changes a quarter of the workspaces every 3-8 s: replaces (a few triggers removed, a few
   changed, a few added) and PATCHes (a payload, or the cron between ``*/5`` and ``*/10``, which
   reschedules), each logged (call started, call returned, what it removed); a call answered 503
   (Redis down) or refused (the API restarting) is repeated until it succeeds, and counted.
   A process that exits by itself is logged and started again (as Kubernetes would).
4. Stops the changes and the chaos, lets the batches settle, and reconciles every due firing
   (`bench.chaos_ledger`) against the receiver's log, the delivery records and what is still
   waiting in Redis. Prints the table and appends one JSON line (``"case": "chaos"``) to
   ``bench/results.jsonl`` (unless ``--no-save``).

The processes are driven by `bench.chaos_processes`, the changes by `bench.chaos_changes`, and the
reconciliation is `bench.chaos_ledger`. The processes' logs are in a temporary directory, removed
when the run is clean and kept (its path printed) when anything was lost, sent after a removal,
duplicated without an explanation, missed outside an outage or still waiting at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from bench import noisy
from bench.chaos_changes import CRON, Changes, trigger
from bench.chaos_ledger import Ledger, Reconciliation, reconcile
from bench.chaos_processes import Fleet
from bench.common import (
    RESULTS,
    ReceiverProcess,
    auth_headers,
    print_table,
    provenance_line,
    save,
    service_env,
    settings_in,
)
from scheduler_api.embedded_redis import RedisServer, free_port
from scheduler_api.storage import keys


@dataclass
class Options:
    """One run. `plan`: (seconds after the start, action) to run instead of the seeded one; an
    action is ``kill-worker``, ``kill-scheduler``, ``redis`` or ``freeze``."""

    seconds: float = 600.0
    seed: int = 1
    rolling: bool = False
    triggers: int = 2000
    workspaces: int = 20
    schedulers: int = 2
    workers: int = 2
    lease: float = 10.0
    timeout: float = 10.0
    redis_down: float = 4.0
    kill_every: tuple[float, float] = (15.0, 40.0)
    change_every: tuple[float, float] = (3.0, 8.0)
    settle: float = 60.0
    plan: list[tuple[float, str]] | None = None
    keep_logs: bool = False


# --- the run -------------------------------------------------------------------------------------


def seeded_plan(rng: random.Random, seconds: float, kill_every: tuple[float, float]) -> list[tuple[float, str]]:
    """Kills every 15-40 s from 10 s in until 10 s before the end; Redis once between 30 % and
    45 % of the run, the freeze once between 60 % and 75 %."""
    plan: list[tuple[float, str]] = []
    t = 10.0 + rng.uniform(*kill_every) / 2
    while t < seconds - 10:
        plan.append((t, rng.choice(["kill-worker", "kill-scheduler"])))
        t += rng.uniform(*kill_every)
    plan.append((rng.uniform(0.30, 0.45) * seconds, "redis"))
    plan.append((rng.uniform(0.60, 0.75) * seconds, "freeze"))
    return sorted(plan)


def register(
    client: httpx.Client, opts: Options, receiver_url: str, ledger: Ledger
) -> dict[str, dict[str, dict[str, Any]]]:
    lists: dict[str, dict[str, dict[str, Any]]] = {}
    per = [
        opts.triggers // opts.workspaces + (1 if w < opts.triggers % opts.workspaces else 0)
        for w in range(opts.workspaces)
    ]
    for w, count in enumerate(per):
        workspace = f"ws-{w}"
        lists[workspace] = {f"t{i}": trigger(workspace, f"t{i}", receiver_url) for i in range(count)}
        started = time.time()
        response = client.post(
            f"/api/workspaces/{workspace}/triggers", json={"triggers": list(lists[workspace].values())}
        )
        if response.status_code != 200:
            raise RuntimeError(f"registering {workspace}: HTTP {response.status_code}: {response.text[:300]}")
        returned = time.time()
        for trigger_id in lists[workspace]:
            ledger.begin(f"{workspace}:{trigger_id}", CRON, (started, returned))
    return lists


def chaos(opts: Options, fleet: Fleet, conn: Redis, rng: random.Random, until: float) -> None:
    """Run the plan (or the rolling restarts) until `until`, replacing processes that died."""
    t0 = time.time()
    if opts.rolling:
        order = ["worker"] * opts.workers + ["scheduler"] * opts.schedulers + ["api"]
        while time.time() < until:
            for kind in order:
                if time.time() >= until:
                    return
                fleet.revive()
                oldest = fleet.alive(kind)[0]
                fleet.roll(oldest, kind, conn)
                time.sleep(rng.uniform(3.0, 8.0))
        return
    plan = list(opts.plan if opts.plan is not None else seeded_plan(rng, opts.seconds, opts.kill_every))
    resumes: list[tuple[float, Callable[[], None]]] = []
    while time.time() < until:
        now = time.time() - t0
        for due, resume in list(resumes):
            if now >= due:
                resume()
                resumes.remove((due, resume))
        while plan and plan[0][0] <= now:
            _, action = plan.pop(0)
            if action != "redis":
                aim(rng)
            if action == "kill-worker":
                fleet.kill("worker", rng)
            elif action == "kill-scheduler":
                fleet.kill("scheduler", rng)
            elif action == "redis":
                fleet.restart_redis(opts.redis_down)
            elif action == "freeze":
                resumes.append((time.time() - t0 + opts.lease + 5.0, fleet.freeze(rng)))
            else:
                raise ValueError(f"unknown chaos action {action!r}")
        fleet.revive()
        time.sleep(0.2)
    for _, resume in resumes:
        resume()


def aim(rng: random.Random, every: float = 5.0) -> None:
    """Sleep until just after the next due time of `CRON` (0-0.25 s after it), so that a kill or
    a freeze finds the processes in the middle of a tick or a batch rather than idle between."""
    now = time.time()
    time.sleep((now // every + 1) * every - now + rng.uniform(0.0, 0.25))


def pending_ids(conn: Redis) -> set[str]:
    in_batches, retries = noisy.waiting_firings(conn)
    return in_batches | retries


def settle(conn: Redis, fleet: Fleet, lease: float, longest: float) -> float:
    """Wait a lease and more, then until nothing waits in batches or retries (or `longest` s)."""
    start = time.time()
    time.sleep(min(lease + 5.0, longest))
    while time.time() - start < longest:
        fleet.revive()
        try:
            if not pending_ids(conn):
                break
        except OSError:
            pass
        time.sleep(1.0)
    return time.time() - start


def outcomes(conn: Redis, workspaces: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for workspace in workspaces:
        for fid, raw in conn.hgetall(keys.records(workspace)).items():
            name = fid.decode() if isinstance(fid, bytes) else str(fid)
            out[name] = str(json.loads(raw).get("outcome"))
    return out


def dropped_total(conn: Redis, since: float) -> int:
    total = 0
    minute = int(since // 60 * 60)
    while minute <= time.time():
        total += int(conn.hget(keys.series_minute(minute), "dropped") or 0)
        minute += 60
    return total


def run(opts: Options) -> dict[str, Any]:
    """Start everything, run the chaos, reconcile; returns the result (see `report`)."""
    rng = random.Random(opts.seed)
    tmpdir = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    ledger = Ledger()
    redis = RedisServer(data_dir=tmpdir / "redis", extra_args=("--appendfsync", "always")).start()
    conn = Redis.from_url(redis.url, socket_timeout=30)
    receiver = ReceiverProcess(delay_ms=0, log_dir=tmpdir)
    env = service_env(
        redis.url,
        PORT=str(free_port()),
        WORKER_LEASE_SECONDS=f"{opts.lease:g}",
        DELIVERY_TIMEOUT_SECONDS=f"{opts.timeout:g}",
    )
    fleet = Fleet(env, tmpdir, redis, ledger)
    clean = False
    try:
        receiver.wait_ready()
        fleet.start(schedulers=opts.schedulers, workers=opts.workers, conn=conn)
        client = httpx.Client(base_url=fleet.base, headers=auth_headers(), timeout=60)
        lists = register(client, opts, receiver.url, ledger)
        start = time.time()
        changing = sorted(lists)[: max(1, len(lists) // 4)]
        changes = Changes(
            client,
            lists,
            changing,
            ledger,
            rng=random.Random(opts.seed + 1),
            every=opts.change_every,
            receiver_url=receiver.url,
        )
        changes.start()
        chaos(opts, fleet, conn, rng, start + opts.seconds)
        changes.stopping.set()
        changes.join(150)
        end = time.time()
        settled = settle(conn, fleet, opts.lease, opts.settle)
        arrivals: dict[str, list[float]] = defaultdict(list)
        for arrived, _answered, _scheduled, key in receiver.fetch_new():
            arrivals[key].append(arrived)
        result = reconcile(
            ledger,
            arrivals=arrivals,
            records=outcomes(conn, sorted(lists)),
            pending=pending_ids(conn),
            window=(start + 3.0, end - 3.0),
            drop_window=opts.timeout + opts.lease + 30.0,
            misfire_grace=float(env.get("MISFIRE_GRACE_SECONDS", "60")),
        )
        dropped = dropped_total(conn, start)
        client.close()
        # Firings counted as dropped by a change must have been dropped by the service: it counts
        # each firing it drops unsent (scheduler_api.storage.series), at the window's edges too.
        clean = (
            result.counts["lost"] == 0
            and not result.sent_after_removal
            and result.unexplained_duplicates == 0
            and result.counts["dropped_by_change"] <= dropped
            and result.counts["pending"] == 0
            and result.unexplained_missed == 0
        )
        if opts.rolling:
            clean = clean and result.counts["more_than_once"] == 0 and result.counts["missed"] == 0
        return summarise(opts, result, ledger, fleet, changes, env, start, end, settled, dropped, tmpdir, clean)
    finally:
        fleet.stop()
        receiver.stop()
        conn.close()
        if clean and not opts.keep_logs:
            shutil.rmtree(tmpdir, ignore_errors=True)


def summarise(
    opts: Options,
    result: Reconciliation,
    ledger: Ledger,
    fleet: Fleet,
    changes: Changes,
    env: dict[str, str],
    start: float,
    end: float,
    settled: float,
    dropped: int,
    tmpdir: Path,
    clean: bool,
) -> dict[str, Any]:
    events: dict[str, int] = defaultdict(int)
    for e in ledger.events:
        events[e.kind] += 1
    removed = sum(len(c.get("removed", ())) for c in ledger.changes)
    rescheduled = sum(1 for c in ledger.changes if c["kind"] == "patch" and "cron" in c["set"])
    return {
        "case": "chaos-rolling" if opts.rolling else "chaos",
        "seed": opts.seed,
        "seconds": round(end - start, 1),
        "settle_s": round(settled, 1),
        "triggers": opts.triggers,
        "workspaces": opts.workspaces,
        "schedulers": opts.schedulers,
        "workers": opts.workers,
        "settings": settings_in(env),
        "events": dict(events),
        "event_log": [e.describe() for e in ledger.events],
        "changes": {
            "calls": len(ledger.changes),
            "replaces": sum(1 for c in ledger.changes if c["kind"] == "replace"),
            "patches": sum(1 for c in ledger.changes if c["kind"] == "patch"),
            "removed_triggers": removed,
            "rescheduled": rescheduled,
            "retried_calls": changes.retried,
            "failed_calls": changes.failed[:10],
        },
        "exited_by_themselves": fleet.restarted_by_itself,
        "dropped_counted_by_service": dropped,
        **result.as_dict(),
        "clean": clean,
        "logs": None if clean and not opts.keep_logs else str(tmpdir),
    }


def report(result: dict[str, Any], path: Path | None) -> None:
    c = result["counts"]
    mode = "rolling restarts" if result["case"] == "chaos-rolling" else "kills, a Redis restart, a freeze"
    rows = [
        ["due firings", f"{c['due']:,}", ""],
        ["delivered exactly once", f"{c['once']:,}", ""],
        ["delivered more than once", f"{c['more_than_once']:,}", f"{result['unexplained_duplicates']} unexplained"],
        ["missed with a record", f"{c['missed']:,}", f"{result['unexplained_missed']} outside an outage"],
        ["other records", f"{c['other_record']:,}", json.dumps(result["other_records"])],
        [
            "dropped by a change (no record)",
            f"{c['dropped_by_change']:,}",
            f"service counted {result['dropped_counted_by_service']} dropped",
        ],
        ["still waiting at the end", f"{c['pending']:,}", ""],
        ["lost", f"{c['lost']:,}", "must be 0"],
        ["sent after removal", f"{c['sent_after_removal']:,}", "must be 0"],
    ]
    print_table(
        f"bench.chaos: {result['seconds']:g} s, {mode}; {result['triggers']:,} triggers on {CRON!r} in "
        f"{result['workspaces']} workspaces, {result['schedulers']} schedulers, {result['workers']} workers",
        ["firings", "count", "note"],
        rows,
    )
    ch = result["changes"]
    print(
        f"events: {json.dumps(result['events'])}; changes: {ch['replaces']} replaces, {ch['patches']} patches "
        f"({ch['removed_triggers']} triggers removed, {ch['rescheduled']} rescheduled), "
        f"{ch['retried_calls']} calls repeated"
    )
    for d in result["duplicates"][:20]:
        print(f"  duplicate {d['firing']} arrivals +{d['arrivals']} s: {'; '.join(d['explained_by']) or 'UNEXPLAINED'}")
    for s in result["sent_after_removal"][:20]:
        print(f"  sent after removal: {s}")
    for fid in result["lost"][:20]:
        print(f"  lost: {fid}")
    if result["logs"]:
        print(f"process logs kept in {result['logs']}")
    print(provenance_line())
    save(result, path)


def parse(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rolling", action="store_true", help="rolling restarts (SIGTERM) instead of kills")
    parser.add_argument("--triggers", type=int, default=2000)
    parser.add_argument("--workspaces", type=int, default=20)
    parser.add_argument("--schedulers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lease", type=float, default=10.0, help="WORKER_LEASE_SECONDS (default 10)")
    parser.add_argument("--timeout", type=float, default=10.0, help="DELIVERY_TIMEOUT_SECONDS (default 10)")
    parser.add_argument("--redis-down", type=float, default=4.0, help="seconds Redis stays down (default 4)")
    parser.add_argument("--settle", type=float, default=90.0, help="at most this long to settle (default 90)")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    opts = Options(
        seconds=args.minutes * 60,
        seed=args.seed,
        rolling=args.rolling,
        triggers=args.triggers,
        workspaces=args.workspaces,
        schedulers=args.schedulers,
        workers=args.workers,
        lease=args.lease,
        timeout=args.timeout,
        redis_down=args.redis_down,
        settle=args.settle,
        keep_logs=args.keep_logs,
    )
    return opts, args


def main(argv: list[str] | None = None) -> None:
    opts, args = parse(argv)
    report(run(opts), None if args.no_save else args.results)


if __name__ == "__main__":
    main()
