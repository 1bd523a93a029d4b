"""scheduler-api: fires HTTP requests on cron schedules, per workspace, on FastAPI + Redis + RQ."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scheduler-api")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
