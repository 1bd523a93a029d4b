"""What a receiver saw, as the delivery tests check it: requests in flight at once, requests in
any one second, and whether a request carries a valid Standard Webhooks signature."""

from __future__ import annotations

from standardwebhooks import Webhook, WebhookVerificationError

from tests.support.receiver import Received


def most_in_flight(requests: list[Received], held: float) -> int:
    """The most requests in flight at once, each held `held` seconds by the receiver."""
    events = sorted([(r.at, 1) for r in requests] + [(r.at + held, -1) for r in requests])
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def most_in_one_second(requests: list[Received], tolerance: float) -> int:
    """The most requests that arrived within any one second (less `tolerance`, for clock jitter)."""
    times = sorted(r.at for r in requests)
    return max(sum(1 for t in times if start <= t < start + 1 - tolerance) for start in times)


def verifies(secret: str, r: Received) -> bool:
    """Whether the `standardwebhooks` package accepts `r` as signed with `secret`."""
    try:
        Webhook(secret).verify(r.body, r.headers, json_parse=False)
    except WebhookVerificationError:
        return False
    return True
