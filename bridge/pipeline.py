"""The request pipeline of the MCP endpoint, as pure ASGI middleware, outermost first:

1. ``RequestLog``: one log line per request (``bridge.requests``), with the MCP fields
   other modules ``annotate``, written when the answer starts (an SSE answer runs on).
2. ``Faults`` (``bridge.faults``): whatever fails below is answered there, in one place.
3. ``Authentication``: the caller's principal, once per request, kept in the scope
   (``principal``); a request without a valid token goes no further (401). A POST is
   authenticated at once, before its body is read; a GET or DELETE when its era needs to
   know who calls, so one no era serves (405) or that accepts no stream (406) is refused
   for that, as it always was.
4. ``Negotiation``: a POST must accept JSON or SSE (406) and send JSON (415).
5. ``BodyLimit``: a POST body over ``max_body_bytes`` is refused (413), announced or not.

Host and Origin are checked before the router (``bridge.guard``), for every path; the
transport (``bridge.transport``) comes last. Everything the headers decide comes before
the body is read: without a valid token a request costs no body, no parse.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import cast

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_celery_bridge.bridge.auth import Authenticator, Principal
from mcp_celery_bridge.bridge.faults import Faults
from mcp_celery_bridge.bridge.shared import logs
from mcp_celery_bridge.bridge.shared.errors import HttpError

#: One line per HTTP request, with the MCP fields other modules ``annotate``.
request_log = logging.getLogger("bridge.requests")
_PRINCIPAL = "mcp.principal"
_AUTHENTICATOR = "mcp.authenticator"


async def principal(conn: HTTPConnection | Scope) -> Principal | None:
    """The request's principal (None: authentication is off), authenticated on first use and
    kept for the rest of the request: a JWT is verified once. Raises ``Unauthorized``."""
    scope = conn.scope if isinstance(conn, HTTPConnection) else conn
    if _PRINCIPAL not in scope:
        authenticator: Authenticator = scope[_AUTHENTICATOR]
        found = await authenticator.authenticate(Headers(scope=scope).get("authorization"))
        scope[_PRINCIPAL] = found
        if found is not None:
            logs.annotate(principal=found.subject)
    return cast(Principal | None, scope[_PRINCIPAL])


def _media_types(header: str | None) -> set[str]:
    if not header:
        return {"*/*"}
    return {part.split(";")[0].strip().lower() for part in header.split(",") if part.strip()}


def accepts(headers: Headers) -> tuple[bool, bool]:
    """Whether the request's ``Accept`` allows JSON, and whether it allows SSE."""
    types = _media_types(headers.get("accept"))
    json_ok = bool(types & {"application/json", "application/*", "*/*"})
    sse_ok = bool(types & {"text/event-stream", "text/*", "*/*"})
    return json_ok, sse_ok


class RequestLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        line = logs.begin_request(http=scope["method"])
        written = False

        def write(status: int) -> None:
            nonlocal written
            written = True
            line["status"] = status
            line["ms"] = round((time.perf_counter() - started) * 1000, 1)
            where = line.get("rpc", scope["path"])
            fields = {"fields": line}
            request_log.info("%s %s %s", scope["method"], where, status, extra=fields)

        async def logged(message: Message) -> None:
            if message["type"] == "http.response.start" and not written:
                write(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, logged)
        finally:
            if not written:
                write(500)  # nothing answered: the server's own error page


class Authentication:
    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_AUTHENTICATOR] = self.authenticator
        if scope["method"] == "POST":
            await principal(scope)
        await self.app(scope, receive, send)


class Negotiation:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            headers = Headers(scope=scope)
            json_ok, sse_ok = accepts(headers)
            if not (json_ok or sse_ok):
                raise HttpError(
                    406, "Not Acceptable: accept application/json and text/event-stream"
                )
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise HttpError(415, "Unsupported Media Type: use application/json")
        await self.app(scope, receive, send)


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise HttpError(413, "Payload Too Large")
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HttpError(413, "Payload Too Large")
            return message

        await self.app(scope, counted, send)


def mcp_pipeline(
    endpoint: ASGIApp,
    authenticator: Authenticator,
    max_body_bytes: int,
    on_store_fault: Callable[[Scope], None],
) -> ASGIApp:
    """``endpoint`` behind the pipeline."""
    inner = BodyLimit(endpoint, max_body_bytes)
    return RequestLog(Faults(Authentication(Negotiation(inner), authenticator), on_store_fault))
