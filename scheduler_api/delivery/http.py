"""The worker's HTTP client: one shared httpx client over aiohttp, built for many small requests.

Deliveries are httpx requests (`httpx.Request` in, `httpx.Response` out) sent by
httpx-aiohttp's transport, which keeps aiohttp's connection pool under httpx's API (httpx's own
pool manages a fraction of aiohttp's rate; see README "Performance"). Two things are trimmed off
the per-request path, because a worker sends thousands of requests a second and nothing in them
varies between requests:

* `DeliveryClient.deliver` hands a request straight to the transport: httpx's per-request client
  layers (header merging, auth, redirects, cookies, event hooks) are all switched off for
  deliveries anyway, and skipping them is most of this client's speed (README "Performance");
* `DeliveryTransport` reuses one aiohttp timeout per value and one parsed url per target instead
  of building them again for every request.

Failure rules: the whole exchange (connect, send, response head and the body read) is bounded by
one total timeout: the transport's own, or the seconds a request carries in its
``extensions[TIMEOUT_EXTENSION]`` (a trigger's ``timeout_seconds``). aiohttp's errors come out as
httpx's exceptions (httpx-aiohttp's mapping), with the aiohttp error as `__cause__`. A compressed
response body (aiohttp asks for gzip and deflate) is decompressed as it is read, so the record's
excerpt is text. No cookie is kept or sent: deliveries of every workspace share the client, and a
`Set-Cookie` from one target must never travel with another request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from typing import Any

import aiohttp
import httpx
import yarl
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions


class _NoCookies(httpx.Cookies):
    """A cookie store that keeps nothing and sends nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set_cookie_header(self, request: httpx.Request) -> None:
        return None


_NO_COOKIES = _NoCookies()

# A request's own total timeout in seconds (a float), in place of the transport's. Not httpx's
# "timeout" extension, whose value is a dict of four separate phase timeouts.
TIMEOUT_EXTENSION = "total_timeout"
# A request's headers as the list of (name, value) text pairs aiohttp takes, in place of
# `request.headers` (scheduler_api.delivery.attempt.build_request builds them so).
HEADERS_EXTENSION = "aiohttp_headers"


@lru_cache(maxsize=65_536)
def aiohttp_url(url: str) -> yarl.URL:
    """aiohttp's parse of an url httpx already normalised (and percent-encoded), once per url."""
    return yarl.URL(url, encoded=True)


@lru_cache(maxsize=1024)
def client_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """aiohttp's timeout of `seconds` for the whole exchange (and for the connect within it), one
    object per value: triggers share a handful of timeouts."""
    return aiohttp.ClientTimeout(total=seconds, sock_connect=seconds)


class ResponseBody(httpx.AsyncByteStream):
    """An aiohttp response's body as it arrives, with aiohttp's errors raised as httpx's (the
    mapping is entered only on an error, not around every read)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    def __aiter__(self) -> AsyncIterator[bytes]:
        # An iterator object, not an async generator: a reader that stops early (the delivery
        # keeps only an excerpt) leaves no generator behind to be finalised by the event loop.
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._response.content.readany()
        except Exception:
            with map_aiohttp_exceptions():
                raise
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        try:
            await self._response.__aexit__(None, None, None)  # releases the connection to the pool
        except Exception:
            with map_aiohttp_exceptions():
                raise


class DeliveryTransport(AiohttpTransport):
    """httpx-aiohttp's transport with the request path trimmed: a total timeout (`timeout` seconds
    for the whole exchange, body included, unless the request carries its own in
    ``extensions[TIMEOUT_EXTENSION]``) and url parses kept per url."""

    def __init__(self, *, timeout: float, client: Callable[[], aiohttp.ClientSession], **kwargs: Any) -> None:
        super().__init__(client=client, trust_env=False, **kwargs)
        self.timeout = client_timeout(timeout)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        content = request.content  # requests are built with their body read
        seconds = request.extensions.get(TIMEOUT_EXTENSION)
        timeout = self.timeout if seconds is None else client_timeout(seconds)
        headers = request.extensions.get(HEADERS_EXTENSION)
        if headers is None:
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        try:
            response = await self.client.request(
                request.method,
                aiohttp_url(str(request.url)),
                headers=headers,  # a list: aiohttp builds its own CIMultiDict from it (one, not two)
                data=content or None,
                allow_redirects=False,
                compress=False,
                timeout=timeout,
            ).__aenter__()
        except Exception:
            with map_aiohttp_exceptions():
                raise
        return httpx.Response(
            status_code=response.status, headers=response.raw_headers, stream=ResponseBody(response), request=request
        )


class DeliveryClient(httpx.AsyncClient):
    """The worker's one shared httpx client; deliveries go through `deliver` (module docstring)."""

    def __init__(self, transport: httpx.AsyncBaseTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, follow_redirects=False, trust_env=False, **kwargs)
        self.transport = transport

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, value: Any) -> None:
        return None

    async def deliver(self, request: httpx.Request) -> httpx.Response:
        """Send `request` as it is (no redirects followed); the body is left to stream."""
        return await self.transport.handle_async_request(request)
