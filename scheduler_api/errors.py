"""The service's own errors: every error it raises on purpose derives from `SchedulerApiError`.

    SchedulerApiError
    ├── SettingsError          a setting is invalid: the process refuses to start
    ├── CronError              a cron expression or time zone we cannot schedule (also a ValueError)
    ├── SecretsError           a stored header value cannot be decrypted (also a ValueError)
    ├── BlockedTarget          the SSRF guard refuses a delivery target (also an OSError, so the
    │                          HTTP client reports it as a connection failure)
    ├── StoreUnavailable       Redis cannot be reached, did not answer in time, or refuses writes
    ├── ScriptError            a Lua file of the package cannot be loaded (a packaging bug;
    │                          scheduler_api.storage.scripts)
    └── RequestError           the client's request is refused; nothing was changed
          ├── InvalidRequest       invalid input
          ├── Unauthorized         no or unknown API key
          ├── Forbidden            a key used outside its workspaces
          ├── NotFound             no such trigger (or record)
          ├── PreconditionFailed   a stale If-Match
          ├── PayloadTooLarge      a body over MAX_BODY_BYTES
          ├── QuotaExceeded        a key scope's workspaces or triggers quota is full (403)
          └── RateLimited          too many calls on a workspace this minute (429, `retry_after`)

Every `RequestError` carries `details`: ``[{"path": "triggers[1].cron", "message": "..."}]``. The API
maps each class to its status code in one table (`scheduler_api.api.errors.STATUS`) and answers
``{"success": false, "error": ..., "details": [...]}``; nothing reaches a client as a traceback.
"""

from __future__ import annotations


class SchedulerApiError(Exception):
    """Base of every error this package raises on purpose."""


class SettingsError(SchedulerApiError):
    """A setting read from the environment is invalid."""


class CronError(SchedulerApiError, ValueError):
    """The expression (or its time zone) is not one we can schedule; the message says why."""


class SecretsError(SchedulerApiError, ValueError):
    """A stored header value cannot be decrypted with the configured keys."""


class BlockedTarget(SchedulerApiError, OSError):
    """A delivery target resolves only to addresses the SSRF guard blocks."""


class StoreUnavailable(SchedulerApiError):
    """Redis could not be reached, did not answer in time, or refused the command for now.

    `maybe_done`: the command was sent and may have been carried out (a timeout), so the client
    must not be told that nothing changed. `refused`: Redis answered, refusing the command for now
    (out of memory, read-only).
    """

    def __init__(self, message: str, *, maybe_done: bool = False, refused: bool = False) -> None:
        super().__init__(message)
        self.maybe_done = maybe_done
        self.refused = refused


Details = list[dict[str, str]]


class RequestError(SchedulerApiError):
    """The client's request is refused; nothing was changed. `message` is the response's `error`."""

    def __init__(self, message: str, details: Details | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidRequest(RequestError):
    """The input is invalid (a trigger, the path, the JSON body, a limit)."""


class Unauthorized(RequestError):
    """No API key, or one that is not in API_KEYS."""


class Forbidden(RequestError):
    """The API key does not serve this workspace."""


class NotFound(RequestError):
    """The thing named in the path does not exist."""


class PreconditionFailed(RequestError):
    """The request's precondition (If-Match) no longer holds."""


class PayloadTooLarge(RequestError):
    """The request body is over MAX_BODY_BYTES."""


class QuotaExceeded(RequestError):
    """A write would take the key's scope over MAX_WORKSPACES_PER_SCOPE or MAX_TRIGGERS_PER_SCOPE."""


class RateLimited(RequestError):
    """Too many calls of one kind on a workspace in the current minute; `retry_after` seconds until
    the next window (sent as ``Retry-After``)."""

    def __init__(self, message: str, details: Details | None = None, *, retry_after: int) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after
