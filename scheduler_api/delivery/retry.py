"""Which outcomes of an attempt are retried, and when (`RetryPolicy`, `classify`).

Rules:
* a 2xx response is **delivered** - final;
* a target the SSRF guard refuses (scheduler_api.ssrf) is **blocked** - final, never retried,
  the record says "blocked by the SSRF guard", the operator log says which addresses and why;
* an attempt that could not be made and never can (`Attempt.final`: a header value that cannot
  be decrypted or sent, an url that cannot be sent) is **failed** - final, never retried;
* any other status (3xx and 4xx included: redirects are not followed), a timeout of the whole
  exchange (`DELIVERY_TIMEOUT_SECONDS`) or a transport error (refused, reset, DNS, TLS) is a
  failed attempt: it is **retried** while retries remain (`DELIVERY_MAX_RETRIES`, 3 = four
  attempts in all), retry *n* after `DELIVERY_BACKOFF_SECONDS * 2**(n-1)` seconds scaled by a
  random factor in [0.5, 1]; after the last one the firing is **failed** - final.

A retry is not made inside the batch: it becomes its own entry, due after the backoff, that the
scheduler moves into a later batch, so one slow target never holds a batch for its backoff.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from scheduler_api.delivery.attempt import Attempt
from scheduler_api.settings import Settings
from scheduler_api.storage.firings import Firing, Outcome
from scheduler_api.storage.history import Record
from scheduler_api.storage.triggers import StoredTrigger


@dataclass(frozen=True)
class RetryPolicy:
    """How many times a failed attempt is retried, and after how long."""

    max_retries: int
    backoff_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(max_retries=settings.delivery_max_retries, backoff_seconds=settings.delivery_backoff_seconds)

    def retries(self, firing: Firing, attempt: Attempt) -> bool:
        """Whether `attempt` (the firing's latest) is followed by another one."""
        return not attempt.ok and not attempt.final and firing.attempt - 1 < self.max_retries

    def delay(self, retry_number: int, rand: float) -> float:
        """Seconds before retry `retry_number` (1-based)."""
        return backoff_seconds(self.backoff_seconds, retry_number, rand)


def backoff_seconds(base: float, retry_number: int, rand: float) -> float:
    """Delay before retry `retry_number` (1-based): base * 2**(n-1), scaled into [0.5, 1] by rand."""
    return float(base * (2 ** (retry_number - 1)) * (0.5 + rand / 2))


def classify(
    firing: Firing,
    trigger: StoredTrigger,
    attempt: Attempt,
    policy: RetryPolicy,
    *,
    now: float,
    rand: Callable[[], float] | None = None,
) -> Outcome:
    """The firing's outcome after `attempt` (see the module docstring for the rules); `rand` draws
    the backoff's jitter (default `random.random`)."""
    tries = [*firing.attempts, attempt.as_dict(firing.attempt)]
    if policy.retries(firing, attempt):
        due = now + policy.delay(firing.attempt, (rand or random.random)())
        nxt = Firing(firing.id, firing.job_id, firing.version, firing.scheduled_at, firing.attempt + 1, tries)
        return Outcome.retrying(Record.retrying(firing, trigger.workspace_id, tries, next_attempt_at=due), nxt, due)
    if attempt.ok:
        record = Record.delivered(firing, trigger.workspace_id, tries, finished_at=now)
    elif attempt.error == "blocked":
        record = Record.blocked(firing, trigger.workspace_id, tries, finished_at=now)
    else:
        record = Record.failed(firing, trigger.workspace_id, tries, finished_at=now)
    return Outcome.final(record)
