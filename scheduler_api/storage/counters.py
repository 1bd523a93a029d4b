"""The names of the metrics counters, fields of the ``sa:metrics`` hash (keys.METRICS).

One table for every writer and the reader: the Lua scripts get the names from it when they are
loaded (a ``{{Counter.ENQUEUED}}`` placeholder becomes ``'enqueued'``, scheduler_api.storage.scripts),
Python writers use it directly, and scheduler_api.metrics reads the same names at scrape time.
"""

from __future__ import annotations

from enum import StrEnum


class Counter(StrEnum):
    ENQUEUED = "enqueued"  # firings written into batches (scheduled, retries excluded, and "run now")
    MISSED = "missed"  # firings skipped beyond MISFIRE_GRACE_SECONDS
    RETRY = "retry"  # failed attempts that will be retried
    OUTCOME_DELIVERED = "outcome:delivered"  # final outcomes
    OUTCOME_FAILED = "outcome:failed"
    OUTCOME_BLOCKED = "outcome:blocked"
    OUTCOME_SKIPPED = "outcome:skipped"  # not sent: another firing of its trigger was active (overlap)
    ATTEMPT_OK = "attempt:ok"  # every attempt made (a blocked one is not made)
    ATTEMPT_ERROR = "attempt:error"
