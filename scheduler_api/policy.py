"""A trigger's delivery policy and schedule bounds, as stored, and the run times they allow.

Every field is optional; a trigger without any has no `Policy` at all (``None``) and behaves as
the original's triggers do: the global ``DELIVERY_*`` settings, success = any 2xx, firings may
overlap, a schedule without end. Input validation is in `scheduler_api.triggers`; this module
holds the input models of the nested fields (`RetryConfig`, `SuccessCheck`, the status and time
types), the stored form (`Policy`, in a definition's ``p`` member) and the pure rules the
scheduler, the workers and the API share:

Input rules (each refused with a 400 whose ``details[].path`` names the field): ``timeout_seconds``
1 to ``MAX_DELIVERY_TIMEOUT_SECONDS`` (the upper bound is a setting: `triggers.check_limits`);
``retry`` keys ``max_retries`` 0-20, ``backoff_seconds`` 0.1-3600, ``max_backoff_seconds`` 0.1-86400
and >= ``backoff_seconds``; ``final_statuses`` and ``success.status``: 1-100 codes (100-599) and
classes (``"1xx"``-``"5xx"``); ``success.body_contains`` 1-1024 characters, a plain substring;
``overlap`` ``allow`` | ``skip`` | ``buffer_one``; ``start_at`` < ``end_at`` and ``at``: ISO 8601
text with an offset (a bare number is refused), ``at`` at most 10 years ahead; ``start_at``,
``end_at`` and ``max_firings`` (>= 1) only with a cron; ``jitter_seconds`` a whole number 0-3600.

* `StatusSet`: a list of codes and classes (``[400, "5xx"]``), matched in constant time;
* `jitter_offset`: the whole seconds a firing is sent after its nominal time, from a hash of its
  firing id (stable across processes and restarts);
* `first_run` / `next_run` / `last_run`: run times of a cron or one-off trigger within its
  ``start_at`` / ``end_at`` bounds (None: the trigger has ended). ``max_firings`` is counted where
  firings are committed (scheduler_api.storage.firings), not here.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    model_validator,
)

from scheduler_api import cron as cronlib

OVERLAP_MODES = ("allow", "skip", "buffer_one")
# The policy fields by their input names (`Policy.to_dict`), in the order diffs and files show them.
POLICY_FIELDS = (
    "timeout_seconds",
    "retry",
    "final_statuses",
    "success",
    "overlap",
    "start_at",
    "end_at",
    "max_firings",
    "jitter_seconds",
)
MAX_STATUS_ITEMS = 100
_STATUS_CLASS = re.compile(r"^[1-5]xx$")


def _iso_text(value: Any) -> Any:
    """Times are ISO 8601 text: a bare number (pydantic would read it as unix seconds) is refused."""
    if not isinstance(value, str | datetime):
        raise ValueError("must be an ISO 8601 date and time with an offset, such as 2027-01-01T09:00:00+01:00")
    return value


# Times the service can compute with and show: from 1970 to the end of 9998 (a schedule within a
# year of 9999 could not show its next runs).
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9999, 1, 1, tzinfo=UTC)


def _in_range(value: datetime) -> datetime:
    """Times are kept to the millisecond (as the API shows them), so what a client reads back and
    sends again is the same time."""
    if not MIN_TIME <= value < MAX_TIME:
        raise ValueError("must be between 1970-01-01 and 9998-12-31 (UTC)")
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_in_range)]


def _status(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError('must be a status code (404) or a class ("4xx")')
    if isinstance(value, int) and not 100 <= value <= 599:
        raise ValueError(f"status codes are 100-599, got {value}")
    if isinstance(value, str) and not _STATUS_CLASS.fullmatch(value):
        raise ValueError(f'a status class is "1xx" to "5xx", got {value[:20]!r}')
    return value


Status = Annotated[int | str, BeforeValidator(_status)]
StatusList = Annotated[list[Status], Field(min_length=1, max_length=MAX_STATUS_ITEMS)]
Seconds = Annotated[float, Field(strict=True)]


class RetryConfig(BaseModel):
    """A trigger's retries; each key defaults to the settings' DELIVERY_* value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_retries: StrictInt | None = Field(None, ge=0, le=20, description="Retries after the first attempt.")
    backoff_seconds: Seconds | None = Field(None, ge=0.1, le=3600, description="Wait before the first retry.")
    max_backoff_seconds: Seconds | None = Field(None, ge=0.1, le=86_400, description="Longest wait between tries.")

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if (
            self.backoff_seconds is not None
            and self.max_backoff_seconds is not None
            and self.max_backoff_seconds < self.backoff_seconds
        ):
            raise ValueError("max_backoff_seconds must be at least backoff_seconds")
        return self


class SuccessCheck(BaseModel):
    """What counts as delivered (default: any 2xx)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: StatusList | None = Field(None, description='Codes and classes, e.g. [200, 204] or ["2xx", 302].')
    body_contains: StrictStr | None = Field(
        None, min_length=1, max_length=1024, description="Text the response body must contain (plain substring)."
    )


class PolicyInput(Protocol):
    """The policy fields of a trigger as validated (scheduler_api.triggers.Trigger)."""

    @property
    def timeout_seconds(self) -> float | None: ...

    @property
    def retry(self) -> RetryConfig | None: ...

    @property
    def final_statuses(self) -> list[int | str] | None: ...

    @property
    def success(self) -> SuccessCheck | None: ...

    @property
    def overlap(self) -> str | None: ...

    @property
    def start_at(self) -> datetime | None: ...

    @property
    def end_at(self) -> datetime | None: ...

    @property
    def max_firings(self) -> int | None: ...

    @property
    def jitter_seconds(self) -> int | None: ...


def policy_input(fields: PolicyInput) -> dict[str, Any]:
    """The policy fields of a validated trigger that are set, in the stored form (`Policy.to_dict`)."""
    out: dict[str, Any] = {}
    if fields.timeout_seconds is not None:
        out["timeout_seconds"] = fields.timeout_seconds
    if fields.retry is not None:
        retry = fields.retry.model_dump(exclude_none=True)
        if retry:
            out["retry"] = retry
    if fields.final_statuses is not None:
        out["final_statuses"] = list(fields.final_statuses)
    if fields.success is not None:
        success = fields.success.model_dump(exclude_none=True)
        if success:
            out["success"] = success
    if fields.overlap is not None and fields.overlap != "allow":
        out["overlap"] = fields.overlap
    if fields.start_at is not None:
        out["start_at"] = fields.start_at.timestamp()
    if fields.end_at is not None:
        out["end_at"] = fields.end_at.timestamp()
    if fields.max_firings is not None:
        out["max_firings"] = fields.max_firings
    if fields.jitter_seconds:
        out["jitter_seconds"] = fields.jitter_seconds
    return out


@dataclass(frozen=True)
class StatusSet:
    """HTTP statuses given as codes (``404``) and classes (``"4xx"``)."""

    codes: frozenset[int]
    classes: frozenset[int]  # 4 for "4xx"

    @classmethod
    def parse(cls, items: list[int | str]) -> StatusSet:
        codes = frozenset(i for i in items if isinstance(i, int))
        classes = frozenset(int(i[0]) for i in items if isinstance(i, str))
        return cls(codes, classes)

    def matches(self, status: int) -> bool:
        return status in self.codes or status // 100 in self.classes

    def as_list(self) -> list[int | str]:
        return [*sorted(self.codes), *(f"{c}xx" for c in sorted(self.classes))]

    def describe(self) -> str:
        return ", ".join(str(x) for x in self.as_list())


@dataclass(frozen=True)
class Policy:
    """What a trigger sets beyond the original's fields (None: the default)."""

    timeout_seconds: float | None = None
    max_retries: int | None = None
    backoff_seconds: float | None = None
    max_backoff_seconds: float | None = None
    final_statuses: StatusSet | None = None
    success_statuses: StatusSet | None = None
    body_contains: str | None = None
    overlap: str = "allow"
    start_at: float | None = None
    end_at: float | None = None
    max_firings: int | None = None
    jitter_seconds: int = 0

    @property
    def has_retry(self) -> bool:
        return self.max_retries is not None or self.backoff_seconds is not None or self.max_backoff_seconds is not None

    @property
    def holds(self) -> bool:
        """Whether firings of the trigger take part in the overlap rule (skip or buffer_one)."""
        return self.overlap != "allow"

    def to_dict(self) -> dict[str, Any]:
        """The stored form (and the API's view), with the input's names; unset fields left out.
        Times are unix seconds here; the API shows them in ISO 8601."""
        retry = {
            "max_retries": self.max_retries,
            "backoff_seconds": self.backoff_seconds,
            "max_backoff_seconds": self.max_backoff_seconds,
        }
        statuses = self.success_statuses.as_list() if self.success_statuses is not None else None
        out = {
            "timeout_seconds": self.timeout_seconds,
            "retry": _set(retry) or None,
            "final_statuses": self.final_statuses.as_list() if self.final_statuses is not None else None,
            "success": _set({"status": statuses, "body_contains": self.body_contains}) or None,
            "overlap": self.overlap if self.overlap != "allow" else None,
            "start_at": self.start_at,
            "end_at": self.end_at,
            "max_firings": self.max_firings,
            "jitter_seconds": self.jitter_seconds or None,
        }
        return _set(out)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Policy | None:
        """The policy of a stored ``p`` member (or of validated input); None when nothing is set."""
        if not d:
            return None
        retry = d.get("retry") or {}
        success = d.get("success") or {}
        final = d.get("final_statuses")
        statuses = success.get("status")
        return cls(
            timeout_seconds=_float_or_none(d.get("timeout_seconds")),
            max_retries=retry.get("max_retries"),
            backoff_seconds=_float_or_none(retry.get("backoff_seconds")),
            max_backoff_seconds=_float_or_none(retry.get("max_backoff_seconds")),
            final_statuses=StatusSet.parse(final) if final is not None else None,
            success_statuses=StatusSet.parse(statuses) if statuses is not None else None,
            body_contains=success.get("body_contains"),
            overlap=d.get("overlap") or "allow",
            start_at=_float_or_none(d.get("start_at")),
            end_at=_float_or_none(d.get("end_at")),
            max_firings=d.get("max_firings"),
            jitter_seconds=int(d.get("jitter_seconds") or 0),
        )


def _set(fields: dict[str, Any]) -> dict[str, Any]:
    """The members of `fields` that are set (not None), in order."""
    return {name: value for name, value in fields.items() if value is not None}


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def jitter_offset(firing_id: str, jitter_seconds: int) -> int:
    """Whole seconds in ``[0, jitter_seconds)`` that the firing `firing_id` is sent after its
    nominal time: the first 8 bytes of its BLAKE2b hash, scaled. The same in every process."""
    if jitter_seconds <= 0:
        return 0
    digest = hashlib.blake2b(firing_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * jitter_seconds >> 64


def _bounds(policy: Policy | None) -> tuple[float | None, float | None]:
    if policy is None:
        return None, None
    return policy.start_at, policy.end_at


def next_run(cron: cronlib.Cron | None, at: float | None, policy: Policy | None, after: float) -> float | None:
    """The first run time strictly after `after` within the trigger's bounds, or None (ended).

    A one-off trigger (`at`, no cron) runs at `at` only. A cron trigger's runs start at
    ``start_at`` (the first run time at or after it) and end at ``end_at`` (a run time equal to it
    is the last)."""
    start, end = _bounds(policy)
    if cron is None:
        return at if at is not None and at > after else None
    if start is not None:
        # Run times are whole seconds: those after ceil(start) - 0.5 are those at or after start.
        after = max(after, math.ceil(start) - 0.5)
    try:
        nxt = cron.next_after(after)
    except cronlib.CronError:  # none before the end of the calendar
        return None
    if end is not None and nxt > end:
        return None
    return nxt


def last_run(cron: cronlib.Cron | None, at: float | None, policy: Policy | None, now: float) -> float | None:
    """The latest run time at or before `now` within the trigger's bounds, or None."""
    start, end = _bounds(policy)
    if cron is None:
        return at if at is not None and at <= now else None
    limit = now if end is None else min(now, end)
    latest = cron.last_at_or_before(limit)
    if start is not None and latest < start:
        return None
    return latest
