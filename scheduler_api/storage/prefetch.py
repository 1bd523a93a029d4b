"""Prefetch: parse, while idle, what is about to fire.

The first firing of a trigger in a process (after a start, or after a replace) pays for parsing
its stored definition, and in a worker its url (httpx's and aiohttp's parsers), its SSRF check
and its payload JSON: a large share of that delivery's CPU (README, Performance). Cron
workloads come in bursts - thousands of triggers share a due second and the processes are idle
in between - so an idle worker or scheduler looks `PREFETCH_SECONDS` ahead in the schedule and
does that parsing before the due time, into the same caches the firing then reads.

Failure rules: prefetching only fills caches. It never decides what is delivered (a firing reads
its definition again, and checks its version, when it runs); any error is logged at DEBUG and
the pass is abandoned; a pass stops between chunks as soon as its process has real work. An
entry is prefetched once per due time: a definition replaced after that is parsed when it fires,
as it would be without prefetching.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from redis import Redis

from scheduler_api.storage import keys
from scheduler_api.storage.triggers import StoredTrigger, load_definitions

log = logging.getLogger("scheduler_api.prefetch")

CHUNK = 500  # definitions per round trip; `busy` is asked between chunks
MAX_ENTRIES = 100_000  # schedule entries looked at per pass (the caches hold about that many)


class Prefetcher:
    """Parses the definitions of schedule entries due within `lookahead` seconds, once per due time.

    `warm` is called with each definition (the worker parses its url and payload there); `busy`
    says the process has real work, and the pass stops at the next chunk.
    """

    def __init__(
        self,
        conn: Redis,
        *,
        lookahead: float,
        warm: Callable[[StoredTrigger], object] = lambda trigger: None,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.conn = conn
        self.lookahead = lookahead
        self.warm = warm
        self.busy = busy
        self._done: dict[str, float] = {}  # jobId -> the due time it was prefetched for

    def run_once(self, now: float) -> int:
        """One pass; returns how many definitions were parsed (0 when there was nothing new)."""
        if self.lookahead <= 0:
            return 0
        try:
            return self._pass(now)
        except Exception as e:  # a cache filler: never let it take its process down
            log.debug("prefetch pass abandoned: %s", e)
            return 0

    def _pass(self, now: float) -> int:
        rows: list[tuple[bytes, float]] = self.conn.zrangebyscore(  # type: ignore[assignment]
            keys.SCHEDULE, now, now + self.lookahead, start=0, num=MAX_ENTRIES, withscores=True
        )
        due = {m.decode(): float(score) for m, score in rows}
        self._done = {jid: at for jid, at in self._done.items() if at >= now}
        todo = [jid for jid, at in due.items() if self._done.get(jid) != at]
        parsed = 0
        for start in range(0, len(todo), CHUNK):
            if self.busy():
                break
            chunk = todo[start : start + CHUNK]
            for trigger in load_definitions(self.conn, chunk).values():
                self.warm(trigger)
                parsed += 1
            for jid in chunk:
                self._done[jid] = due[jid]
        return parsed


def run_in_thread(
    prefetcher: Prefetcher, every: float, stop: threading.Event, clock: Callable[[], float]
) -> threading.Thread:
    """Run a pass every `every` seconds in a daemon thread until `stop` is set (the worker's use:
    its main thread blocks in RQ's dequeue while idle)."""

    def loop() -> None:
        while not stop.wait(every):
            if not prefetcher.busy():
                prefetcher.run_once(clock())

    thread = threading.Thread(target=loop, name="prefetch", daemon=True)
    thread.start()
    return thread
