"""Every Redis key the service uses, in one place.

Triggers (written by the API, read by the scheduler and the workers):
  ``sa:ws:{workspace_id}``   hash: trigger id -> definition JSON (with a version ``v`` and its
                             position ``o`` in the list)
  ``sa:etag:{workspace_id}`` the workspace's ETag: a random token, new on every change of its
                             triggers; absent while it has none
  ``sa:schedule``            rq-scheduler's schedule: sorted set, member jobId
                             (``{workspace_id}:{trigger id}``), score = next run (unix seconds);
                             an ended trigger (``end_at``, ``max_firings``, a one-off that
                             fired) has no entry

  ``sa:paused``              set of paused workspace ids (their triggers keep their schedule)
  ``sa:state:{workspace_id}`` hash of the triggers' firing state (scheduler_api.storage.firings):
                             ``{trigger id}`` -> the active firing's id (overlap ``skip`` /
                             ``buffer_one``), ``{trigger id}+`` -> the waiting firing's JSON
                             (``buffer_one``), ``{trigger id}#`` -> firings counted toward
                             ``max_firings``, ``{trigger id}!`` -> its consecutive failed
                             firings, ``{trigger id}^`` -> present once a failing (or disabled)
                             alert was raised and no delivered firing followed yet
                             (scheduler_api.storage.workspace_settings), ``{firing id}`` -> the
                             number of its replay while one is pending (scheduler_api.storage.replay).
                             Trigger ids never contain ``+``, ``#``, ``!``, ``^`` or ``@``.
  ``sa:wsconf:{workspace_id}`` hash: the workspace's settings (``doc`` its JSON, ``etag``, and
                             ``alert_url`` / ``alert_after`` / ``disable_after`` for the
                             record script); absent: the defaults

Signing (scheduler_api.storage.signing_keys; written by the API and by a worker's first use):
  ``sa:sign:{workspace_id}`` hash: ``secret`` (sealed like header values), ``created_at``,
                             ``previous`` and ``previous_expires_at`` after a rotation

Firings (written by the scheduler and the workers):
  ``sa:batch:{id}``          hash: firing id -> firing JSON, the firings one RQ job carries;
                             a field is removed once its firing has an outcome
  ``sa:outbox``              sorted set: batch ids written but not yet taken by a worker, by when
                             the scheduler looks at them next (push, or check the pushed job)
  ``sa:pushed``              hash: batch id -> id of the RQ job it was pushed in, until a worker
                             takes the batch (claims its lease)
  ``sa:leases``              sorted set: batch id -> when its worker's lease runs out
  ``sa:retries``             sorted set: firing id -> when its next attempt is due
  ``sa:retry-data``          hash: firing id -> firing JSON for that attempt
  ``sa:rec:{ws}``            hash: firing id -> the firing's record JSON (outcome, attempts)
  ``sa:hist:{ws}``           sorted set: firing id by scheduled time, the history's order and cap
  ``sa:done:{ws}`` / ``sa:failed:{ws}``  firing ids by finish time, trimmed by retention

Changes (pub/sub channel, scheduler_api.delivery.changes):
  ``sa:changed``             one message per replace or delete, the workspace's jobId prefix

Dashboard reads (scheduler_api.storage.workspace_index, .series, .processes):
  ``sa:workspaces``          sorted set of the workspace ids that have triggers, score 0 (lex order),
                             kept by ``write.lua`` (backfilled at the API's start when absent)
  ``sa:series:{minute}``     hash per minute (its unix start): outcome kind -> count, ``l:{le}`` ->
                             lateness bucket count; expires a day after its minute
  ``sa:wsday:{hour}``        hash per hour (its unix start): ``{ws}:d`` / ``{ws}:f`` -> the
                             workspace's delivered / failed (or blocked) outcomes; expires after 25 h
  ``sa:schedulers``          sorted set: scheduler name -> its last heartbeat (engine.scheduler)
  ``sa:ui:revoked:{nonce}``  a signed-out dashboard session's nonce (scheduler_api.storage.ui_sessions);
                             expires when the session would have

Metrics (scheduler_api.metrics):
  ``sa:metrics``             hash of counters (names: scheduler_api.storage.counters);
                             ``sa:metrics:{histogram}`` hash of bucket counts

Quotas (scheduler_api.storage.quotas; a scope is an API key's: ``*``, a name or ``prefix*``):
  ``sa:quota:ws:{scope}``       hash: workspace id -> trigger count, the scope's workspaces
                                that have triggers
  ``sa:quota:triggers:{scope}`` the sum of those counts
  ``sa:quota:built:{scope}``    present once the two above were built from the stored workspaces
  ``sa:rate:{kind}:{ws}``       calls of one kind (``write``, ``run``) on a workspace in the
                                current one-minute window; expires with the window

Per-host rate limits (scheduler_api.storage.host_limits; only for a workspace's hosts with a limit):
  ``sa:host:{ws}:{host}``       hash: ``next`` (when the next request may start, the token
                                bucket's state) and ``until`` (held back by a 429/503's Retry-After
                                until then); expires once neither matters
  ``sa:flight:{ws}:{host}``     sorted set: lease id -> when it runs out, the requests in flight

Every key a Lua script (scheduler_api.storage.scripts) touches is built here and passed in its
KEYS, with one exception: ``reap_leases.lua`` finds the ids of expired batches inside the script
(in ``sa:leases``), so it cannot be given their keys; it gets `BATCH_PREFIX` in ARGV and builds
``sa:batch:{id}`` itself. The ``sa:changed`` channel is not a key: ``write.lua`` and
``signing_rotate.lua`` get it in ARGV.
"""

from __future__ import annotations

PREFIX = "sa:"
SCHEDULE = PREFIX + "schedule"
OUTBOX = PREFIX + "outbox"
CHANGED = PREFIX + "changed"
PUSHED = PREFIX + "pushed"
LEASES = PREFIX + "leases"
LEASE_OWNERS = PREFIX + "lease-owners"  # hash: batch id -> the token of the worker holding it (storage.leases)
RETRIES = PREFIX + "retries"
RETRY_DATA = PREFIX + "retry-data"
METRICS = PREFIX + "metrics"
PAUSED = PREFIX + "paused"
WORKSPACE_PREFIX = PREFIX + "ws:"
BATCH_PREFIX = PREFIX + "batch:"
WORKSPACES = PREFIX + "workspaces"
# Sorted set (score 0) of the workspaces whose last trigger was removed: their history may remain
# until the retention sweep drops it (scheduler_api.engine.retention visits these and WORKSPACES).
RETIRED = PREFIX + "retired"
RETIRED_BUILT = PREFIX + "retired-built"  # set once RETIRED has been filled from existing histories
SCHEDULERS = PREFIX + "schedulers"
SCHEDULER_INSTANCE_PREFIX = PREFIX + "scheduler_instance:"  # rq-scheduler's registration key of one scheduler


def series_minute(minute_start: int) -> str:
    return f"{PREFIX}series:{minute_start}"


def workspace_day(hour_start: int) -> str:
    return f"{PREFIX}wsday:{hour_start}"


def ui_revoked(nonce: str) -> str:
    return f"{PREFIX}ui:revoked:{nonce}"


def workspace(workspace_id: str) -> str:
    return WORKSPACE_PREFIX + workspace_id


def etag(workspace_id: str) -> str:
    return f"{PREFIX}etag:{workspace_id}"


def state(workspace_id: str) -> str:
    return f"{PREFIX}state:{workspace_id}"


def signing(workspace_id: str) -> str:
    return f"{PREFIX}sign:{workspace_id}"


def fired_field(trigger_id: str) -> str:
    """The field of `state` that counts a trigger's firings toward its ``max_firings``."""
    return trigger_id + "#"


def workspace_settings(workspace_id: str) -> str:
    return f"{PREFIX}wsconf:{workspace_id}"


# The trigger id of a workspace's alert firings (``{ws}:~alert@...``): never a trigger's id (no ``~``).
ALERT_TRIGGER = "~alert"


def batch(batch_id: str) -> str:
    return BATCH_PREFIX + batch_id


def job_id(workspace_id: str, trigger_id: str) -> str:
    """The trigger's jobId, ``{workspace_id}:{trigger id}``: the original's ``{workspace_id}:{index}``
    when no id was given."""
    return f"{workspace_id}:{trigger_id}"


def split_job_id(job_id_: str) -> tuple[str, str]:
    """``ws:3`` -> (``ws``, ``3``). Workspace and trigger ids never contain a colon."""
    workspace_id, _, index = job_id_.rpartition(":")
    return workspace_id, index


def records(workspace_id: str) -> str:
    return f"{PREFIX}rec:{workspace_id}"


HISTORY_PREFIX = PREFIX + "hist:"


def history(workspace_id: str) -> str:
    return HISTORY_PREFIX + workspace_id


def done(workspace_id: str) -> str:
    return f"{PREFIX}done:{workspace_id}"


def failed(workspace_id: str) -> str:
    return f"{PREFIX}failed:{workspace_id}"


def history_keys(workspace_id: str) -> tuple[str, str, str, str]:
    """The keys of a workspace's history (records, history, done, failed), in the order the scripts
    take them in KEYS (``lua/trim.lua``)."""
    return records(workspace_id), history(workspace_id), done(workspace_id), failed(workspace_id)


def metric_histogram(name: str) -> str:
    return f"{METRICS}:{name}"


def workspace_of_firing(firing_id: str) -> str:
    """``ws:3@2026-...`` -> ``ws``."""
    return split_job_id(firing_id.partition("@")[0])[0]


def quota_keys(scope: str) -> tuple[str, str]:
    """The quota counts of a key scope: (workspace id -> trigger count hash, total triggers)."""
    return f"{PREFIX}quota:ws:{scope}", f"{PREFIX}quota:triggers:{scope}"


def quota_built(scope: str) -> str:
    return f"{PREFIX}quota:built:{scope}"


def rate(kind: str, workspace_id: str) -> str:
    return f"{PREFIX}rate:{kind}:{workspace_id}"


def host_limit(workspace_id: str, host: str) -> tuple[str, str]:
    """The keys of one (workspace, host) rate limit: its bucket-and-hold hash, its in-flight leases."""
    return f"{PREFIX}host:{workspace_id}:{host}", f"{PREFIX}flight:{workspace_id}:{host}"
