"""The chaos soak (`bench.chaos`, issue #19), short: real processes killed, frozen and restarted
under load, and nothing lost. First, that its reconciliation (`bench.chaos_ledger`) does catch a
loss, an unexplained duplicate and a firing sent after its trigger's removal, so that a clean
result means something."""

from __future__ import annotations

import pytest

from bench.chaos import Options, run
from bench.chaos_ledger import Event, Ledger, reconcile
from scheduler_api import cron as cronlib

T0 = 1_800_000_000.0  # a multiple of 5 s


def fid(job_id: str, due: float) -> str:
    return f"{job_id}@{cronlib.iso(due)}"


def ledger_of_one_trigger(*, removed_at: float | None = None) -> Ledger:
    ledger = Ledger()
    ledger.begin("ws:a", "*/5 * * * * *", (T0 - 10, T0 - 9))
    if removed_at is not None:
        ledger.end("ws:a", (removed_at, removed_at + 0.1), "removed")
    return ledger


def test_the_reconciliation_counts_each_due_firing_once_and_finds_the_lost_one() -> None:
    ledger = ledger_of_one_trigger()
    arrivals = {fid("ws:a", T0 + 5 * i): [T0 + 5 * i + 0.01] for i in range(4)}
    del arrivals[fid("ws:a", T0 + 10)]
    result = reconcile(
        ledger,
        arrivals=arrivals,
        records={},
        pending=set(),
        window=(T0 - 1, T0 + 16),
        drop_window=30,
        misfire_grace=60,
    )
    assert result.counts["due"] == 4
    assert result.counts["once"] == 3
    assert result.lost == [fid("ws:a", T0 + 10)]


def test_a_duplicate_is_explained_only_by_a_disruption_while_it_was_in_flight() -> None:
    ledger = ledger_of_one_trigger()
    twice = {fid("ws:a", T0): [T0 + 0.01, T0 + 12.0]}
    ledger.events.append(Event("kill", "worker-0", T0 + 100, T0 + 100))  # long after: explains nothing
    result = reconcile(
        ledger, arrivals=twice, records={}, pending=set(), window=(T0 - 1, T0 + 1), drop_window=30, misfire_grace=60
    )
    assert result.counts["more_than_once"] == 1
    assert result.unexplained_duplicates == 1
    ledger.events.append(Event("kill", "worker-1", T0 + 0.2, T0 + 0.2))
    result = reconcile(
        ledger, arrivals=twice, records={}, pending=set(), window=(T0 - 1, T0 + 1), drop_window=30, misfire_grace=60
    )
    assert result.unexplained_duplicates == 0
    assert result.duplicates[0]["explained_by"] == [Event("kill", "worker-1", T0 + 0.2, T0 + 0.2).describe()]


def test_a_firing_of_a_removed_trigger_arriving_after_the_removal_returned_is_reported() -> None:
    ledger = ledger_of_one_trigger(removed_at=T0 + 7)
    arrivals = {fid("ws:a", T0): [T0 + 0.01], fid("ws:a", T0 + 5): [T0 + 7.5]}  # the second: after the removal
    result = reconcile(
        ledger, arrivals=arrivals, records={}, pending=set(), window=(T0 - 1, T0 + 30), drop_window=30, misfire_grace=60
    )
    assert [s["firing"] for s in result.sent_after_removal] == [fid("ws:a", T0 + 5)]
    assert result.counts["due"] == 2  # nothing due after the removal


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_short_chaos_run_loses_nothing_and_explains_every_duplicate() -> None:
    """200 triggers on */5 s in 4 workspaces, 2 schedulers, 2 workers, a 5 s lease; a worker killed,
    a scheduler killed, Redis killed and restarted from its AOF, a worker frozen past its lease;
    replaces and PATCHes meanwhile."""
    result = run(
        Options(
            seconds=50,
            triggers=200,
            workspaces=4,
            lease=5,
            timeout=5,
            redis_down=3,
            settle=40,
            plan=[(5, "kill-worker"), (12, "kill-scheduler"), (20, "redis"), (30, "freeze")],
        )
    )
    counts = result["counts"]
    seen = f"{counts}, events {result['events']}, logs in {result['logs']}"
    assert counts["due"] > 1500, seen
    assert counts["lost"] == 0, (seen, result["lost"])
    assert counts["sent_after_removal"] == 0, (seen, result["sent_after_removal"])
    assert result["unexplained_duplicates"] == 0, (seen, result["duplicates"])
    assert result["unexplained_missed"] == 0, (seen, result["missed"])
    assert counts["pending"] == 0, (seen, result["pending"])
    assert counts["dropped_by_change"] <= result["dropped_counted_by_service"], seen
    assert {k: result["events"].get(k) for k in ("kill", "redis", "freeze")} == {"kill": 2, "redis": 1, "freeze": 1}
    assert result["changes"]["calls"] > 0, seen
