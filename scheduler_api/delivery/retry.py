"""Which outcomes of an attempt are retried, and when (`RetryPolicy`, `classify`).

Rules:
* an attempt that passes the trigger's success check (`Attempt.ok`: any 2xx by default, else its
  ``success`` field, scheduler_api.delivery.attempt) is **delivered** - final;
* a target the SSRF guard refuses (scheduler_api.ssrf) is **blocked** - final, never retried,
  the record says "blocked by the SSRF guard", the operator log says which addresses and why;
* an attempt that could not be made and never can (`Attempt.final`: a header value that cannot
  be decrypted or sent, an url that cannot be sent) is **failed** - final, never retried;
* an answer whose status is in the trigger's ``final_statuses`` (codes and classes) and that did
  not pass the success check is **failed** - final, never retried. The success check comes first:
  a status both lists name is delivered;
* any other status (3xx and 4xx included: redirects are not followed), an ``assertion`` failure
  of the success check, a timeout of the whole exchange (the trigger's ``timeout_seconds``, else
  ``DELIVERY_TIMEOUT_SECONDS``) or a transport error (refused, reset, DNS, TLS) is a failed
  attempt: it is **retried** while retries remain (the trigger's ``retry.max_retries``, else
  ``DELIVERY_MAX_RETRIES``, 3 = four attempts in all), retry *n* after
  ``min(backoff * 2**(n-1), max_backoff)`` seconds scaled by a random factor in [0.5, 1]
  (``retry.backoff_seconds`` / ``retry.max_backoff_seconds``, else ``DELIVERY_BACKOFF_SECONDS`` /
  ``DELIVERY_MAX_BACKOFF_SECONDS``), or after the answer's ``Retry-After`` when that is longer
  (a 429 or 503, any trigger; at most ``RETRY_AFTER_MAX_SECONDS``, `Attempt.retry_after`); after
  the last one the firing is **failed** - final.

A retry is not made inside the batch: it becomes its own entry, due after the backoff, that the
scheduler moves into a later batch, so one slow target never holds a batch for its backoff.
Every outcome carries the firing's `Firing.held` (its trigger's overlap rule), so that its final
one lets the trigger's next firing go.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from scheduler_api.delivery.attempt import Attempt
from scheduler_api.policy import Policy, StatusSet
from scheduler_api.settings import Settings
from scheduler_api.storage.firings import Firing, Outcome
from scheduler_api.storage.history import Record
from scheduler_api.storage.triggers import StoredTrigger


@dataclass(frozen=True)
class RetryPolicy:
    """How many times a failed attempt is retried, after how long, and which statuses end a firing."""

    max_retries: int
    backoff_seconds: float
    max_backoff_seconds: float = float("inf")
    final_statuses: StatusSet | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_retries=settings.delivery_max_retries,
            backoff_seconds=settings.delivery_backoff_seconds,
            max_backoff_seconds=settings.delivery_max_backoff_seconds,
        )

    def of(self, policy: Policy | None) -> RetryPolicy:
        """This policy (the worker's defaults) with a trigger's own retry fields and final statuses
        over it; this very object when the trigger sets none (nothing is built per delivery)."""
        if policy is None or (not policy.has_retry and policy.final_statuses is None):
            return self
        return RetryPolicy(
            max_retries=self.max_retries if policy.max_retries is None else policy.max_retries,
            backoff_seconds=self.backoff_seconds if policy.backoff_seconds is None else policy.backoff_seconds,
            max_backoff_seconds=(
                self.max_backoff_seconds if policy.max_backoff_seconds is None else policy.max_backoff_seconds
            ),
            final_statuses=policy.final_statuses,
        )

    def retries(self, firing: Firing, attempt: Attempt) -> bool:
        """Whether `attempt` (the firing's latest) is followed by another one."""
        if attempt.ok or attempt.final or firing.attempt - firing.first >= self.max_retries:
            return False
        final = self.final_statuses
        return final is None or attempt.status is None or not final.matches(attempt.status)

    def delay(self, retry_number: int, rand: float) -> float:
        """Seconds before retry `retry_number` (1-based), before any Retry-After."""
        return backoff_seconds(self.backoff_seconds, retry_number, rand, cap=self.max_backoff_seconds)


def backoff_seconds(base: float, retry_number: int, rand: float, *, cap: float = float("inf")) -> float:
    """Delay before retry `retry_number` (1-based): base * 2**(n-1), at most `cap`, scaled into
    [0.5, 1] by rand (the cap applies before the jitter, so capped retries still spread out)."""
    return float(min(base * (2 ** (retry_number - 1)), cap) * (0.5 + rand / 2))


def classify(
    firing: Firing,
    trigger: StoredTrigger,
    attempt: Attempt,
    policy: RetryPolicy,
    *,
    now: float,
    rand: Callable[[], float] | None = None,
) -> Outcome:
    """The firing's outcome after `attempt` (see the module docstring for the rules). `policy` is
    the worker's default (`RetryPolicy.from_settings`); the trigger's own fields override it.
    `rand` draws the backoff's jitter (default `random.random`)."""
    if trigger.policy is not None:
        policy = policy.of(trigger.policy)
    tries = [*firing.attempts, attempt.as_dict(firing.attempt)]
    if policy.retries(firing, attempt):
        delay = policy.delay(firing.attempt - firing.first + 1, (rand or random.random)())
        if attempt.retry_after is not None and attempt.retry_after > delay:
            delay = attempt.retry_after
        due = now + delay
        nxt = firing.next_attempt(tries)
        return Outcome.retrying(Record.retrying(firing, trigger.workspace_id, tries, next_attempt_at=due), nxt, due)
    if attempt.ok:
        record = Record.delivered(firing, trigger.workspace_id, tries, finished_at=now)
    elif attempt.error == "blocked":
        record = Record.blocked(firing, trigger.workspace_id, tries, finished_at=now)
    else:
        record = Record.failed(firing, trigger.workspace_id, tries, finished_at=now)
    return Outcome.final(record, held=firing.held)
