"""Deadlines on what a client sends, and the uvicorn options that bound connections.

uvicorn closes a keep-alive connection that stays idle after a response, and with
``limit_concurrency`` answers 503 to a request that arrives while too many connections are
open; it has no deadline on a request's headers or body. A client that trickles either holds
a connection (and, for a body, a task) for as long as it likes. Two pieces close that gap:

- ``HeaderDeadline``, mixed into uvicorn's HTTP/1.1 protocol: from the moment a connection
  opens, or its first byte after a response, the headers of the next request must be
  complete within ``header_timeout_s``; otherwise 408 and the connection is closed. This
  also bounds the rest of a body the application answered without reading (a 401 before
  the body): uvicorn discards it, and it must arrive in that time too.
- ``BodyDeadline``, pure ASGI middleware: once the headers are in, the body must arrive
  within ``body_timeout_s``. ``receive`` then raises a 408 ``HttpError`` that
  ``bridge.faults`` answers like any other refusal, with ``Connection: close``.

httptools is imported directly: ``uvicorn[standard]``, a dependency, always brings it.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any, cast

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mcp_celery_bridge.bridge.shared.errors import INVALID_REQUEST, HttpError
from mcp_celery_bridge.bridge.shared.settings import Settings

TIMEOUT = 408


def _error_body(message: str) -> bytes:
    error = {"code": INVALID_REQUEST, "message": message}
    return json.dumps({"jsonrpc": "2.0", "error": error}).encode()


def _refusal(status: int, message: str) -> bytes:
    """A whole response, written straight to the transport before any request exists."""
    body = _error_body(message)
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class HeaderDeadline(asyncio.Protocol):
    """Mixin for uvicorn's HTTP/1.1 protocols (httptools and h11), which both keep the
    request being served in ``self.cycle`` and replace it when a request's headers are
    complete: that replacement is what ends the deadline."""

    header_timeout_s: float = 10.0
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if self._header_timer is None and (cycle is None or cycle.response_complete):
            self._arm()
        super().data_received(data)
        if self.cycle is not cycle:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            limit = f"{self.header_timeout_s:g} s"
            self.transport.write(_refusal(TIMEOUT, f"Request Timeout: no headers within {limit}"))
            self.transport.close()


class H11WithDeadline(HeaderDeadline, H11Protocol):
    """h11 bounds the headers' size itself (``h11_max_incomplete_event_size``)."""


class HttpToolsWithDeadline(HeaderDeadline, HttpToolsProtocol):
    """httptools buffers a header of any size; this bounds the bytes a request's line and
    headers may take, give or take the one read that crosses the limit."""

    max_header_bytes: int = 64 * 1024
    _header_bytes: int | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        self._header_bytes = None
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_bytes is None or self.transport.is_closing():
            return
        self._header_bytes += len(data)
        if self._header_bytes > self.max_header_bytes:
            self._disarm()
            self.transport.write(_refusal(431, "Request Header Fields Too Large"))
            self.transport.close()


def http_protocol(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` option: the protocol uvicorn would pick, with the deadline."""
    base: type[asyncio.Protocol] = H11WithDeadline
    if issubclass(AutoHTTPProtocol, HttpToolsProtocol):
        base = HttpToolsWithDeadline
    attributes = {
        "header_timeout_s": settings.header_timeout_s,
        "max_header_bytes": settings.max_header_bytes,
    }
    return cast(type[asyncio.Protocol], type(base.__name__, (base,), attributes))


def server_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options that bound what clients may hold."""
    return {
        "http": http_protocol(settings),
        # uvicorn answers 503 once ``len(connections) >= limit_concurrency``, counting the
        # connection asking: + 1 serves exactly ``max_connections``.
        "limit_concurrency": settings.max_connections + 1,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }


class BodyDeadline:
    """Pure ASGI middleware: a request's body must be received within ``timeout_s`` of its
    headers. Only reads before the body's end are timed: a streaming response waiting on
    ``receive`` for the disconnect is not."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.timeout_s
        message_text = f"Request Timeout: the body took longer than {self.timeout_s:g} s"
        body_done = False
        expired = False
        started = False

        async def timed_receive() -> Message:
            nonlocal body_done, expired
            if body_done:
                return await receive()
            with anyio.move_on_after(deadline - anyio.current_time()):
                message = await receive()
                body_done = message["type"] != "http.request" or not message.get("more_body")
                return message
            expired = True
            raise HttpError(TIMEOUT, message_text)

        async def closing_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if expired:
                    # The rest of the body is still on its way: do not read it.
                    headers = [*message.get("headers", []), (b"connection", b"close")]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, timed_receive, closing_send)
        except HttpError as exc:
            # Only when the application let the timeout through, before answering.
            if exc.status != TIMEOUT or started:
                raise
            body = _error_body(message_text)
            await closing_send(
                {
                    "type": "http.response.start",
                    "status": TIMEOUT,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
