"""How a failure becomes an answer: the one mapping from an exception to the JSON-RPC error
body and the HTTP status a client receives, and the middleware that applies it to every
request of the MCP endpoint (``bridge.pipeline``), so no traceback or bare 500 reaches a
client.

- ``HttpError`` (a refusal before any method runs: 400, 401, 404, 405, 406, 413, ...): its
  own status and headers, an error without an id.
- A client gone mid-body (``ClientDisconnect``): an empty 400, which nobody reads.
- Anything else: the JSON-RPC error of ``bridge.jsonrpc.error_response`` (a ``JsonRpcError``
  with its code and public message; any other exception logged and told ``-32603 Internal
  error``), naming the request when one is known, with the status the request's protocol
  era gives it. Until an era takes the request, a fault of Redis or the broker is 503, any
  other 500 (``transport_status``).

What is known of the request so far (its id, the era's status policy) travels in the ASGI
scope (``answering``), set by the transport and the era adapter as they learn it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_celery_bridge.bridge.jsonrpc import JsonResponse, error_body, error_response
from mcp_celery_bridge.bridge.shared.errors import BridgeError, HttpError, StoreUnavailable

#: An era's HTTP status for an exception answered as a JSON-RPC error.
StatusPolicy = Callable[[BaseException], int]
_KEY = "mcp.answering"


def transport_status(exc: BaseException) -> int:
    """Before an era answers in-band: Redis or the broker failed (503), or a bug (500)."""
    return 503 if isinstance(exc, BridgeError) else 500


@dataclass
class Answering:
    """What the answer to a failure may say: the id of the JSON-RPC request being served
    (None until known, and for notifications and client responses), and the status policy
    of the era serving it."""

    request_id: str | int | None = None
    status: StatusPolicy = transport_status


def answering(conn: HTTPConnection | Scope) -> Answering:
    scope = conn.scope if isinstance(conn, HTTPConnection) else conn
    return cast(Answering, scope.setdefault(_KEY, Answering()))


def fault_response(exc: BaseException, known: Answering) -> Response:
    """The answer to ``exc``: the one place an exception becomes a response."""
    if isinstance(exc, ClientDisconnect):
        return Response(status_code=400)
    if isinstance(exc, HttpError):
        body = error_body(exc.code, exc.message)
        return JsonResponse(body, status_code=exc.status, headers=exc.headers)
    body = error_response(exc, known.request_id)
    return JsonResponse(body, status_code=known.status(exc))


class Faults:
    """Pure ASGI middleware answering whatever the app inside raises, before it answered.
    ``on_store_fault`` counts the requests refused because Redis failed."""

    def __init__(self, app: ASGIApp, on_store_fault: Callable[[Scope], None]) -> None:
        self.app = app
        self.on_store_fault = on_store_fault

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        known = answering(scope)
        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if started:
                raise  # a stream failed midway: nothing can be answered any more
            response = fault_response(exc, known)
            if response.status_code == 503 and isinstance(exc, StoreUnavailable):
                self.on_store_fault(scope)
            await response(scope, receive, send)
