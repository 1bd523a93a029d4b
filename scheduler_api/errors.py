"""The service's own errors.

    SchedulerApiError
    ├── SettingsError        a setting is invalid: the process refuses to start
    ├── InvalidRequest       the client sent something we reject (400, or `status` such as 413)
    │     └── carries `details`: [{"path": "triggers[1].cron", "message": "..."}]
    └── StoreUnavailable     Redis cannot be reached (503)

The API turns `InvalidRequest` and `StoreUnavailable` into the JSON error shape
`{"success": false, "error": ..., "details": [...]}`; nothing else reaches a client as a traceback.
"""

from __future__ import annotations


class SchedulerApiError(Exception):
    """Base of every error this package raises on purpose."""


class SettingsError(SchedulerApiError):
    """A setting read from the environment is invalid."""


class InvalidRequest(SchedulerApiError):
    """The client's request is invalid; nothing was changed."""

    def __init__(self, message: str, details: list[dict[str, str]] | None = None, *, status: int = 400):
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.status = status


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
