"""Streamable HTTP, one endpoint for every protocol era: reads a POSTed JSON-RPC message
strictly, checks its envelope, and hands it to the era adapter that recognises it
(``bridge.eras``); GET and DELETE go to the first adapter that serves them.

It runs behind the request pipeline (``bridge.pipeline``: the request log, fault answers,
authentication, content negotiation, the body limit) and knows no era: what a session is,
which methods exist, how a task is rendered and which status an error gets is each
adapter's. Whatever it or an adapter raises is answered by ``bridge.faults``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from mcp_celery_bridge.bridge.eras import Era
from mcp_celery_bridge.bridge.faults import answering
from mcp_celery_bridge.bridge.jsonrpc import Message, read
from mcp_celery_bridge.bridge.shared import logs
from mcp_celery_bridge.bridge.shared.errors import INVALID_REQUEST, HttpError
from mcp_celery_bridge.bridge.shared.settings import Settings

#: Every HTTP method some era serves.
ALLOWED = "GET, POST, DELETE"


class Transport:
    def __init__(self, settings: Settings, eras: list[Era]) -> None:
        self.settings = settings
        self.eras = eras

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.serve(Request(scope, receive))
        await response(scope, receive, send)

    async def serve(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.post(request)
        if request.method in ("GET", "DELETE"):
            for era in self.eras:
                serve = era.get if request.method == "GET" else era.delete
                response = await serve(request)
                if response is not None:
                    return response
            # No era serves it without what it needs (the stateless era has no GET).
            return Response(status_code=405, headers={"Allow": "POST"})
        raise HttpError(
            405, f"Method Not Allowed: {request.method}", INVALID_REQUEST, {"Allow": ALLOWED}
        )

    async def post(self, request: Request) -> Response:
        body = await read(await request.body(), self.settings.max_json_containers)
        if isinstance(body, list):
            raise HttpError(400, "Invalid Request: batches are not supported", INVALID_REQUEST)
        if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
            raise HttpError(400, "Invalid Request: not a JSON-RPC 2.0 message", INVALID_REQUEST)
        has_id = "id" in body
        msg_id = body.get("id")
        if has_id and (isinstance(msg_id, bool) or not isinstance(msg_id, str | int)):
            raise HttpError(400, "Invalid Request: id must be a string or an integer")
        method = body.get("method")
        params = body.get("params")
        era = next((e for e in self.eras if e.recognises(body, request.headers)), None)
        if era is None:
            raise HttpError(400, "Invalid Request: no protocol era recognises it", INVALID_REQUEST)
        logs.annotate(rpc=method if isinstance(method, str) else None, id=msg_id, era=era.name)
        if isinstance(params, dict) and isinstance(params.get("taskId"), str):
            # Known now: a slow answer (SSE) runs after this request's line is written.
            logs.annotate(task=params["taskId"][:128])
        if method is None:
            if has_id and ("result" in body) != ("error" in body):
                # A client's response to a server request.
                return await era.post(request, Message(body, None, msg_id, params))
            raise HttpError(400, "Invalid Request: no method", INVALID_REQUEST)
        if not isinstance(method, str):
            raise HttpError(400, "Invalid Request: method must be a string", INVALID_REQUEST)
        if has_id:
            answering(request).request_id = msg_id
        return await era.post(request, Message(body, method, msg_id, params))
