"""Redis clients from `REDIS_URL`: one server, or the current primary of a Redis Sentinel set.

URL forms:

* ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) and
  ``unix:///path/to/socket?db=N``: redis-py's own (`redis.Redis.from_url`);
* ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]`` (port 26379
  unless given; `service` is the name the sentinels monitor, e.g. ``mymaster``): the client asks
  the listed sentinels for the current primary of `service`. ``rediss+sentinel://`` is the same
  with TLS to the primary. The credentials are the primary's; sentinels that require their own
  are given ``?sentinel_username=...&sentinel_password=...``. Other query options are redis-py's
  URL options (``?ssl_ca_certs=/path``, ...) and apply to the primary.

Failure rules: a malformed URL raises ValueError saying what is wrong (settings validation
turns it into a startup error, before any connection). With Sentinel, every new connection asks
the sentinels for the primary first; a connection still open to a primary that was demoted fails
its command with a ConnectionError (redis-py closes it; the next connection goes to the new
primary); while no sentinel answers or none knows a primary, commands raise
`redis.sentinel.MasterNotFoundError`, a ConnectionError. Callers treat all of these as "Redis is
unreachable" (the API answers 503, the scheduler and the workers retry), exactly as with one
server. Replication is asynchronous: a failover can lose the last writes the old primary
acknowledged (DEPLOYMENT.md says what that means for firings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from redis import ConnectionError, Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)
DEFAULT_SENTINEL_PORT = 26379
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    primary_kwargs: dict[str, Any] = field(default_factory=dict)  # db, credentials, TLS options
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)  # the sentinels' own credentials


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_sentinel_url(url: str) -> bool:
    return scheme_of(url) in SENTINEL_SCHEMES


def check_url(url: str) -> None:
    """Raise ValueError when `url` is not a Redis URL this service can connect with."""
    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        raise ValueError("must be a redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel:// URL")
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url)


_PASSWORD_IN_QUERY = re.compile(r"(?i)([?&][^=&]*password=)[^&]*")


def redacted(url: str) -> str:
    """`url` with its passwords (of the credentials, and query options such as
    ``sentinel_password``) replaced by ``***``, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    return _PASSWORD_IN_QUERY.sub(r"\1***", f"{scheme}://{netloc}{slash}{tail}")


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, service name and primary's options of a Sentinel URL (module docstring)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SENTINEL_SCHEMES:
        raise ValueError(f"not a Sentinel URL (scheme {parts.scheme!r})")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    sentinels = tuple(_host_port(item) for item in hostlist.split(","))
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments:
        raise ValueError("a Sentinel URL needs the monitored service name as its path, e.g. /mymaster")
    if len(segments) > 2:
        raise ValueError("a Sentinel URL's path is /service or /service/db")
    service_name, db = segments[0], segments[1] if len(segments) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"the database in a Sentinel URL must be a number, got {db!r}")
    query = parse_qsl(parts.query, keep_blank_values=False)
    sentinel_kwargs = {name[len("sentinel_") :]: value for name, value in query if name in _SENTINEL_OPTIONS}
    rest = [(name, value) for name, value in query if name not in _SENTINEL_OPTIONS]
    # The primary's credentials, database and options are parsed by redis-py itself, from the
    # same URL with the sentinels' addresses taken out.
    tls = parts.scheme.lower() == "rediss+sentinel"
    auth = f"{userinfo}@" if userinfo else ""
    primary: dict[str, Any] = parse_url(  # type: ignore[no-untyped-call]  # (redis-py leaves these unannotated)
        f"{'rediss' if tls else 'redis'}://{auth}sentinel-primary/{db}?{urlencode(rest)}"
    )
    primary.pop("host", None)
    primary.pop("connection_class", None)  # the Sentinel pool picks its own (TLS with `ssl`)
    if tls:
        primary["ssl"] = True
    return SentinelTarget(sentinels, service_name, primary, sentinel_kwargs)


def _host_port(item: str) -> tuple[str, int]:
    item = item.strip()
    if not item:
        raise ValueError("a Sentinel URL lists host[:port] of each sentinel, comma-separated")
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"no host in sentinel address {item!r}")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port in sentinel address {item!r}")
    return host, int(port) if port else DEFAULT_SENTINEL_PORT


SENTINEL_TIMEOUT_SECONDS = 2.0  # a sentinel that accepts but does not answer: ask the next one


def _retry(*, through_a_failover: bool = False) -> Retry:
    """Retries after a refused or broken connection only (a new primary may have been named
    meanwhile), never after a timeout: the command may have been applied, and sending it again
    would apply it twice. redis-py's default for a Sentinel-managed connection also retries
    timeouts, up to 10 times (a frozen primary would take several times the caller's timeout).

    One retry for callers with a time limit (the API answers 503 soon, the scheduler ticks
    again). `through_a_failover`: for the worker, whose RQ loop quits on a Redis error outside its
    dequeue: six retries with backoff, ~8 s, longer than a failover takes."""
    if through_a_failover:
        return Retry(ExponentialWithJitterBackoff(base=0.25, cap=2.0), 6, supported_errors=(ConnectionError,))
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 1, supported_errors=(ConnectionError,))


def connect(url: str, *, timeout: float | None = None) -> Redis:
    """A Redis client for `url` (any form in the module docstring).

    It returns bytes, as RQ needs. With `timeout`, connecting and each command give up after that
    many seconds (the sentinels are asked with the same limits), so a caller answers
    "unavailable" quickly instead of hanging. Without it (the worker), a Sentinel-managed
    connection rides out a failover (`_retry`).
    """
    common: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if not is_sentinel_url(url):
        return Redis.from_url(url, health_check_interval=30, **common)
    target = parse_sentinel_url(url)
    # The sentinels are always asked with a time limit, even by a caller that waits on the primary
    # without one (the worker): a sentinel that hangs must not hang the process.
    ask = timeout if timeout is not None else SENTINEL_TIMEOUT_SECONDS
    # Called through Any: redis-py types Sentinel's methods in some releases and not in others.
    sentinel: Any = cast(Any, Sentinel)(
        list(target.sentinels),
        sentinel_kwargs={"socket_timeout": ask, "socket_connect_timeout": ask, "retry": _retry()}
        | target.sentinel_kwargs,
    )
    # The URL's own options win over ours, as with Redis.from_url.
    retry = _retry(through_a_failover=timeout is None)
    primary = {**common, "health_check_interval": 30, "retry": retry} | target.primary_kwargs
    client = sentinel.master_for(target.service_name, redis_class=Redis, **primary)
    return cast(Redis, client)
