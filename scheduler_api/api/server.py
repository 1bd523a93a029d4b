"""The HTTP edge of `scheduler-api serve`: uvicorn's httptools protocol with limits, every refusal JSON.

uvicorn alone keeps a connection that sends nothing open for ever, buffers a header of any size
and answers its own errors in text/plain. `EdgeProtocol` (passed as ``http=`` to uvicorn) adds,
per connection:

* the request line plus headers at most `EdgeLimits.max_head_bytes`, each header (name + value)
  at most `max_header_bytes`: else **431** (counted on the raw bytes too, so an unterminated
  header costs at most one socket read beyond the cap);
* the head received within `header_timeout` seconds of the connection (or of a keep-alive
  request's first byte), the body within `body_timeout` seconds of the head: else **408** and the
  connection is closed (a connection that sent nothing is closed silently);
* at most `max_connections` connections: a new one over the cap first closes the oldest
  connection that has been sending its head for over `SHED_AFTER_SECONDS` (a slow client), so an
  ordinary client still gets in; a request with no slot left gets **503** with ``Retry-After``;
* a request the parser refuses (malformed request line or header) gets **400**.

Every answer has the API's error shape (scheduler_api.api.errors) and closes the connection.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from asyncio import TimerHandle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from scheduler_api.api.errors import error_body
from scheduler_api.errors import Details
from scheduler_api.settings import Settings

# An ordinary client sends its head in one packet: one still sending after this long (or a quarter
# of the header timeout, if shorter) is slow.
SHED_AFTER_SECONDS = 1.0


@dataclass(frozen=True, kw_only=True)
class EdgeLimits:
    max_head_bytes: int = 65_536
    max_header_bytes: int = 8192
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_connections: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        return cls(
            max_head_bytes=settings.max_request_head_bytes,
            max_header_bytes=settings.max_request_header_bytes,
            header_timeout=settings.request_header_timeout_seconds,
            body_timeout=settings.request_body_timeout_seconds,
            max_connections=settings.max_connections,
        )


def protocol_for(limits: EdgeLimits) -> type[asyncio.Protocol]:
    """The protocol class to pass as uvicorn's ``http=``, with `limits` bound."""
    return type("EdgeProtocol", (EdgeProtocol,), {"limits": limits})


class _Refused(Exception):
    def __init__(self, status: int, error: str, details: Details) -> None:
        super().__init__(error)
        self.status, self.error, self.details = status, error, details


def _answer(status: int, error: str, details: Details, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete HTTP/1.1 response in the API's error shape, for writing straight to the socket."""
    body = json.dumps(error_body(error, details)).encode()
    head = [STATUS_LINE[status]]
    for name, value in default_headers:
        head += [name, b": ", value, b"\r\n"]
    head.append(b"content-type: application/json\r\n")
    head.append(b"content-length: %d\r\n" % len(body))
    if status == 503:
        head.append(b"retry-after: 1\r\n")
    head.append(b"connection: close\r\n\r\n")
    return b"".join(head) + body


@dataclass
class _Connections:
    """Per server: connections still sending their head, oldest first (candidates for shedding),
    and those shed but not yet gone."""

    awaiting_head: dict[EdgeProtocol, float] = field(default_factory=dict)
    shed: set[EdgeProtocol] = field(default_factory=set)


_per_server: weakref.WeakKeyDictionary[ServerState, _Connections] = weakref.WeakKeyDictionary()


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `EdgeLimits` (see the module docstring)."""

    limits: ClassVar[EdgeLimits] = EdgeLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # uvicorn's own check: replaced by `_over_the_cap`
        self._timer: TimerHandle | None = None
        self._in_head = True
        self._head_began = False
        self._raw_head_bytes = 0
        self._head_size = 0
        self._refusal: _Refused | None = None

    # -- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()
        self._shed_slow_clients()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._awaiting().pop(self, None)
        self._state().shed.discard(self)
        super().connection_lost(exc)

    def _state(self) -> _Connections:
        return _per_server.setdefault(self.server_state, _Connections())

    def _awaiting(self) -> dict[EdgeProtocol, float]:
        return self._state().awaiting_head

    def _await_head(self) -> None:
        self._in_head = True
        self._raw_head_bytes = 0
        self._head_size = 0
        self._awaiting()[self] = time.monotonic()
        self._arm(self.limits.header_timeout, self._head_timed_out)

    def _excess(self) -> int:
        return len(self.connections) - len(self._state().shed) - self.limits.max_connections

    def _shed_slow_clients(self) -> None:
        """Over the cap: close the oldest connections still sending their head, if they are slow."""
        excess = self._excess()
        if excess <= 0:
            return
        state = self._state()
        slow_since = time.monotonic() - min(SHED_AFTER_SECONDS, self.limits.header_timeout / 4)
        shed = 0
        for conn, since in list(state.awaiting_head.items()):
            if shed >= excess or since > slow_since:
                break
            if conn is not self:
                del state.awaiting_head[conn]
                state.shed.add(conn)
                conn.transport.close()
                shed += 1
        if shed:
            self.logger.warning("over %d connections: closed %d slow ones", self.limits.max_connections, shed)

    # -- timers

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if not self._head_began:
            self.transport.close()  # nothing sent at all (or an idle keep-alive): no answer
            return
        limit = self.limits.header_timeout
        self._refuse(
            _Refused(408, "Request timeout", [{"path": "headers", "message": f"not received within {limit:g} s"}])
        )

    def _body_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        limit = self.limits.body_timeout
        if self.cycle is not None and not self.cycle.response_started:
            self.cycle.disconnected = True  # the app reads a disconnect; its own answer, if any, is dropped
            self.cycle.message_event.set()
            refusal = _Refused(
                408, "Request timeout", [{"path": "body", "message": f"not received within {limit:g} s"}]
            )
            self.transport.write(_answer(refusal.status, refusal.error, refusal.details, self._default_headers()))
        self.transport.close()

    # -- parsing

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._in_head:
            self._raw_head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as e:
            refusal = self._refusal or _Refused(
                400, "Malformed HTTP request", [{"path": "request", "message": str(e) or "could not be parsed"}]
            )
            self.logger.warning("refused a request: %s", refusal.details[0]["message"])
            self._refuse(refusal)
            return
        if self._in_head and self._raw_head_bytes > self.limits.max_head_bytes:
            self._refuse(self._head_too_large())

    def send_400_response(self, msg: str) -> None:
        self._refuse(_Refused(400, "Malformed HTTP request", [{"path": "request", "message": msg}]))

    def _refuse(self, refusal: _Refused) -> None:
        self._cancel_timer()
        self.transport.write(_answer(refusal.status, refusal.error, refusal.details, self._default_headers()))
        self.transport.close()

    def _default_headers(self) -> list[tuple[bytes, bytes]]:
        return list(self.server_state.default_headers)

    def _head_too_large(self) -> _Refused:
        limit = self.limits.max_head_bytes
        return _Refused(
            431,
            "Request header fields too large",
            [{"path": "headers", "message": f"the request line and headers must be at most {limit} bytes"}],
        )

    def _fail(self, refusal: _Refused) -> None:
        """In a parser callback: stop parsing; `data_received` answers `refusal`."""
        self._refusal = refusal
        raise refusal

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_began = True
        if self._timer is None:  # a keep-alive connection's next request
            self._await_head()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_size += len(url)
        if self._head_size > self.limits.max_head_bytes:
            self._fail(self._head_too_large())

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        if size > self.limits.max_header_bytes:
            shown = name[:64].decode("latin-1")
            message = f"at most {self.limits.max_header_bytes} bytes (name and value), got {size}"
            self._fail(
                _Refused(431, "Request header fields too large", [{"path": f"headers.{shown}", "message": message}])
            )
        self._head_size += size + 4
        if self._head_size > self.limits.max_head_bytes:
            self._fail(self._head_too_large())
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._awaiting().pop(self, None)
        self._arm(self.limits.body_timeout, self._body_timed_out)
        self._shed_slow_clients()
        over = self._excess() > 0 or len(self.tasks) >= self.limits.max_connections
        self.limit_concurrency = 0 if over else None  # 0: uvicorn answers `service_unavailable`
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_timer()
        self._head_began = False
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if app is service_unavailable:
            app = self._overloaded
        super()._start_asgi_task(cycle, app)

    async def _overloaded(self, scope: Any, receive: Any, send: Any) -> None:
        message = f"this API process serves at most {self.limits.max_connections} connections at once; retry shortly"
        body = json.dumps(error_body("Server busy", [{"path": "connection", "message": message}])).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
