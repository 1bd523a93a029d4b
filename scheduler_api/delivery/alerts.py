"""Alert firings: a workspace's failure, recovery and auto-disable alerts, sent like deliveries.

An alert is raised by the record script (``lua/record.lua``; when, in
scheduler_api.storage.workspace_settings) as a firing of the workspace's alert job
(``{ws}:~alert``) that carries its url and JSON body (`Firing.alert`): ``{"type":
"trigger.failing" | "trigger.recovered" | "trigger.disabled", "workspace_id", "id", "jobId",
"consecutive_failures", "last_record"}``. Rules:

* it is sent as a POST of that body through the same path as a trigger's delivery
  (scheduler_api.delivery.attempt.send, with a trigger built for it, `alert_trigger`): the same
  headers (``X-Scheduler-Trigger`` is the alert job ``{ws}:~alert``), the workspace's signature,
  the SSRF guard (a refused url is a ``blocked`` record and no request) and the timeout;
* it is retried with the worker's default policy (``DELIVERY_MAX_RETRIES``, backoff, Retry-After
  honoured; scheduler_api.delivery.retry), never a trigger's own;
* its record is its own, in the workspace's history, ``"kind": "alert"`` with ``"alert": {"type",
  "id", "url"}`` (`as_alert`);
* its outcome is never counted toward failures: a failing alert raises no other alert.
"""

from __future__ import annotations

import logging
import time

from redis import Redis

from scheduler_api.delivery.attempt import Attempt, send
from scheduler_api.delivery.retry import classify
from scheduler_api.delivery.runtime import DeliveryRuntime
from scheduler_api.storage import keys
from scheduler_api.storage.firings import Firing, Outcome
from scheduler_api.storage.triggers import StoredTrigger

log = logging.getLogger("scheduler_api.delivery")


def alert_trigger(firing: Firing) -> StoredTrigger:
    """The trigger an alert firing is sent as: a POST of its body to its url, no headers of its own."""
    assert firing.alert is not None
    workspace_id, index = keys.split_job_id(firing.job_id)
    return StoredTrigger(
        workspace_id=workspace_id,
        id=index,
        version=firing.version,
        cron=None,
        url=firing.alert["url"],
        method="POST",
        payload=firing.alert["body"],
        headers={},
    )


def as_alert(outcome: Outcome, firing: Firing) -> Outcome:
    """`outcome` with its record marked as an alert's (module docstring)."""
    if outcome.record is None or firing.alert is None:
        return outcome
    body = firing.alert["body"]
    about = {"type": body["type"], "id": body["id"], "url": firing.alert["url"]}
    return outcome._replace(record=outcome.record._replace(kind="alert", alert=about))


async def deliver(runtime: DeliveryRuntime, conn: Redis, firing: Firing) -> Outcome:
    """One attempt of an alert firing; its outcome (retrying or final) for the batch to record."""
    trigger = alert_trigger(firing)
    ws = trigger.workspace_id
    # Read the workspace's secrets for every alert (a rotation since the worker last read them must
    # apply; unchanged secrets are not decrypted again): alerts are rare, one small read each.
    runtime.load_signers(conn, [ws])
    error = runtime.signing_errors.get(ws)
    if error is not None:
        attempt = Attempt(time.time(), 0.0, error="secrets", message=str(error), final=True)
    else:
        attempt = await send(runtime.client(), trigger, firing, runtime.options)
    outcome = as_alert(classify(firing, trigger, attempt, runtime.retry, now=time.time()), firing)
    if not attempt.ok:
        log.warning(
            "alert %s to workspace=%s attempt=%d failed: %s",
            firing.id,
            ws,
            firing.attempt,
            attempt.detail or attempt.message or attempt.status,
        )
    return outcome
