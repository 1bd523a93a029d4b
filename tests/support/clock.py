"""The injected clock: instants the in-process tests tick at, and crons that match one second."""

from __future__ import annotations

from datetime import UTC, datetime

# 2027-01-15T08:00:00Z (a Friday), a whole hour in the future of the real clock: retries, due at
# the real time + backoff, are moved by the next tick at an injected time after T.
T = 1_800_000_000.0
ONCE = "1 0 8 15 1 *"  # matches T + 1 only (2027-01-15T08:00:01Z), once a year


def iso_second(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def once_cron(ts: float) -> str:
    """A six-field cron matching the second `ts` only (once a year)."""
    d = datetime.fromtimestamp(ts, UTC)
    return f"{d.second} {d.minute} {d.hour} {d.day} {d.month} *"


EVERY_SECOND = "* * * * * *"
YEARLY = "0 0 1 1 *"  # midnight UTC on January 1st: never due while a test runs


def parse(text: str) -> float:
    """Unix seconds of an ISO time with its offset or a Z."""
    return datetime.fromisoformat(text).timestamp()
