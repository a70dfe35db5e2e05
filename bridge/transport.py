"""Streamable HTTP: one endpoint, two protocol eras.

A POST whose ``_meta`` carries ``io.modelcontextprotocol/protocolVersion`` (or whose
``MCP-Protocol-Version`` header names a stateless version) is served statelessly under
2026-07-28; everything else follows 2025-11-25: ``initialize`` mints a session, later
requests carry ``Mcp-Session-Id``, GET opens the session's notification stream, DELETE ends
the session.

This module knows HTTP: methods, headers, session ids, status codes and SSE framing. It
hands JSON-RPC requests to the protocols; ``bridge.jsonrpc`` reads bodies and converts every
error to the wire in one place, so no traceback or bare 500 reaches a client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, cast

from sse_starlette.sse import EventSourceResponse
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bridge.auth import Authenticator, Principal
from bridge.events import EventHub, valid_event_id
from bridge.jsonrpc import JsonResponse, error_body, error_response, read
from bridge.legacy import (
    LegacyProtocol,
    can_elicit,
    status_notification,
    task_progress,
)
from bridge.metrics import Metrics
from bridge.modern import ModernProtocol, is_modern
from bridge.protocol import LEGACY_VERSIONS, Call, Handler
from bridge.questions import SessionQuestions
from bridge.sessions import Session
from bridge.shared import logs
from bridge.shared.errors import (
    INVALID_REQUEST,
    LIMIT_EXCEEDED,
    BridgeError,
    HttpError,
    InvalidMeta,
    InvalidParams,
    JsonRpcError,
    MethodNotFound,
    StoreUnavailable,
)
from bridge.shared.settings import Settings

log = logging.getLogger(__name__)
#: One line per HTTP request, with the MCP fields other modules ``annotate``.
request_log = logging.getLogger("bridge.requests")

SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"
_SESSION_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_SSE_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}
_UNKNOWN = object()
#: Stateless methods that look tasks up by id (and may see the named session's).
TASK_LOOKUPS = frozenset({"tasks/get", "tasks/update", "tasks/cancel", "subscriptions/listen"})
#: Handlers answering on a stream run as tasks of their own; the loop keeps only weak
#: references to tasks, so this keeps each alive until it is done.
_running: set[asyncio.Future[dict[str, Any]]] = set()


def _http_error(exc: HttpError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status == 405:
        headers = {"Allow": "GET, POST, DELETE"}
    return JsonResponse(error_body(exc.code, exc.message), status_code=exc.status, headers=headers)


def _media_types(header: str | None) -> set[str]:
    if not header:
        return {"*/*"}
    return {part.split(";")[0].strip().lower() for part in header.split(",") if part.strip()}


def _accepts(request: Request) -> tuple[bool, bool]:
    types = _media_types(request.headers.get("accept"))
    json_ok = bool(types & {"application/json", "application/*", "*/*"})
    sse_ok = bool(types & {"text/event-stream", "text/*", "*/*"})
    return json_ok, sse_ok


def _sse(messages: AsyncIterator[dict[str, Any]], ping_s: float) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, Any]]:
        async for message in messages:
            yield {"event": "message", "data": json.dumps(message)}

    return EventSourceResponse(events(), ping=ping_s, headers=_SSE_HEADERS)


class _CountedStream(EventSourceResponse):
    """A GET stream counted against its session from the moment it is granted (before any
    await, so a burst of requests cannot all pass the check) until it ends, however it ends."""

    def __init__(self, counts: Counter[str], session: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counts, self._session = counts, session
        counts[session] += 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._counts[self._session] -= 1
            if self._counts[self._session] <= 0:
                del self._counts[self._session]


class Transport:
    def __init__(
        self,
        settings: Settings,
        legacy: LegacyProtocol,
        modern: ModernProtocol,
        hub: EventHub,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.settings = settings
        self.legacy = legacy
        self.modern = modern
        self.hub = hub
        self.auth = Authenticator(settings)
        #: Open GET streams per session, in this process. Counted here, not in Redis: what a
        #: stream holds (a connection, a queue, a task) is this process's, and a count in
        #: Redis would outlive a process that died holding streams.
        self._streams: Counter[str] = Counter()

    async def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        line = logs.begin_request(http=request.method)
        status = 500  # unless an answer comes back: Starlette's error page then
        try:
            response = await self._serve(request)
            status = response.status_code
            return response
        finally:
            line["status"] = status
            line["ms"] = round((time.perf_counter() - started) * 1000, 1)
            request_log.info(
                "%s %s %s",
                request.method,
                line.get("rpc", request.url.path),
                status,
                extra={"fields": line},
            )

    async def _serve(self, request: Request) -> Response:
        try:
            if request.method == "POST":
                return await self.post(request)
            if request.method == "GET":
                return await self.get(request)
            if request.method == "DELETE":
                return await self.delete(request)
            raise HttpError(405, f"Method Not Allowed: {request.method}", INVALID_REQUEST)
        except HttpError as exc:
            return _http_error(exc)
        except ClientDisconnect:
            return Response(status_code=400)
        except BridgeError as exc:
            # Redis or the broker failed before a request id was known.
            self._count_failure(exc)
            return JsonResponse(error_response(exc, None), status_code=503)

    def _count_failure(self, exc: BaseException) -> None:
        if self.metrics is not None and isinstance(exc, StoreUnavailable):
            self.metrics.redis_errors.inc()

    # -- sessions --------------------------------------------------------------------------
    async def _principal(self, request: Request) -> Principal | None:
        # Authenticated once per request (``post`` does it before reading the body; the
        # handlers ask again): a JWT is verified once.
        known = request.scope.get("mcp.principal", _UNKNOWN)
        if known is not _UNKNOWN:
            return cast(Principal | None, known)
        principal = await self.auth.authenticate(request.headers.get("authorization"))
        request.scope["mcp.principal"] = principal
        if principal is not None:
            logs.annotate(principal=principal.subject)
        return principal

    async def _session(self, request: Request) -> Session:
        principal = await self._principal(request)
        sid = request.headers.get(SESSION_HEADER)
        if not sid:
            raise HttpError(400, "Bad Request: missing Mcp-Session-Id header")
        logs.annotate(session=sid)
        # Another principal's session answers exactly like one that does not exist.
        session = await self._find_session(sid, principal)
        if session is None:
            raise HttpError(404, "Session not found")
        # Any version a session can speak is accepted, as the SDK servers do: a client may
        # send the latest it knows (the conformance suite does). Only an unknown one is 400.
        version = request.headers.get(VERSION_HEADER)
        if version is not None and version not in LEGACY_VERSIONS:
            raise HttpError(400, f"Bad Request: unsupported MCP-Protocol-Version {version!r}")
        return session

    async def _find_session(self, sid: str, principal: Principal | None) -> Session | None:
        if not _SESSION_ID.match(sid):
            return None
        subject = principal.subject if principal else ""
        session = await self.legacy.sessions.get(sid, subject)
        return session if session is not None and session.principal == subject else None

    async def _named_session(self, request: Request) -> Session | None:
        """The live session a stateless request names in ``Mcp-Session-Id``, if any. The era
        has no sessions and ignores the header otherwise; it only lets a client that still
        holds its session reach that session's tasks (the tasks extension asks dual-era
        servers to allow ``tasks/get`` and ``tasks/cancel`` on legacy tasks)."""
        sid = request.headers.get(SESSION_HEADER)
        if not sid:
            return None
        return await self._find_session(sid, await self._principal(request))

    # -- POST ------------------------------------------------------------------------------
    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise HttpError(413, "Payload Too Large")
        chunks = bytearray()
        async for chunk in request.stream():
            chunks += chunk
            if len(chunks) > limit:
                raise HttpError(413, "Payload Too Large")
        return bytes(chunks)

    async def post(self, request: Request) -> Response:
        # Everything the headers decide comes before the body is read: without a valid token
        # a request costs no body, no parse (Host and Origin were checked by the guard). The
        # session is not checked here: a request without the header (initialize, or a
        # stateless one) needs its body read anyway, so checking one would stop nobody.
        await self._principal(request)
        json_ok, sse_ok = _accepts(request)
        if not (json_ok or sse_ok):
            raise HttpError(406, "Not Acceptable: accept application/json and text/event-stream")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HttpError(415, "Unsupported Media Type: use application/json")
        message = await read(await self._body(request), self.settings.max_json_containers)
        if isinstance(message, list):
            raise HttpError(400, "Invalid Request: batches are not supported", INVALID_REQUEST)
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise HttpError(400, "Invalid Request: not a JSON-RPC 2.0 message", INVALID_REQUEST)

        has_id = "id" in message
        msg_id = message.get("id")
        if has_id and (isinstance(msg_id, bool) or not isinstance(msg_id, str | int)):
            raise HttpError(400, "Invalid Request: id must be a string or an integer")
        method = message.get("method")
        params = message.get("params")
        modern = is_modern(params, request.headers.get(VERSION_HEADER))
        logs.annotate(
            rpc=method if isinstance(method, str) else None,
            id=msg_id,
            era="modern" if modern else "legacy",
        )
        if isinstance(params, dict) and isinstance(params.get("taskId"), str):
            # Known now: a slow answer (SSE) runs after this request's line is written.
            logs.annotate(task=params["taskId"][:128])
        if method is None:
            if has_id and ("result" in message) != ("error" in message):
                if modern:
                    raise HttpError(400, "Invalid Request: clients send no responses in 2026-07-28")
                # A client's response to a server request (an answer to a tool's question).
                session = await self._session(request)
                await self.legacy.response(session, message)
                return Response(status_code=202)
            raise HttpError(400, "Invalid Request: no method", INVALID_REQUEST)
        if not isinstance(method, str):
            raise HttpError(400, "Invalid Request: method must be a string", INVALID_REQUEST)
        if modern:
            return await self._post_modern(request, method, msg_id if has_id else None, params)
        return await self._post_legacy(request, method, has_id, msg_id, params)

    async def _post_legacy(
        self, request: Request, method: str, has_id: bool, msg_id: Any, params: Any
    ) -> Response:
        _, sse_ok = _accepts(request)
        if not has_id:
            session = await self._session(request)  # notifications need a live session too
            if isinstance(params, dict) or params is None:
                await self.legacy.notification(session, method, params or {})
            return Response(status_code=202)

        if method == "initialize":
            principal = await self._principal(request)
            try:
                session, result = await self.legacy.initialize(
                    params, principal.subject if principal else ""
                )
            except BridgeError as exc:
                return JsonResponse(error_response(exc, msg_id))
            logs.annotate(session=session.id)
            return JsonResponse(
                {"jsonrpc": "2.0", "id": msg_id, "result": result},
                headers={"Mcp-Session-Id": session.id},
            )

        try:
            session = await self._session(request)
        except HttpError:
            raise
        except BridgeError as exc:
            # Redis failed: a JSON-RPC error that names the request, not a bare 503 page.
            self._count_failure(exc)
            return JsonResponse(error_response(exc, msg_id), status_code=503)
        if params is not None and not isinstance(params, dict):
            return JsonResponse(error_response(InvalidParams("params must be an object"), msg_id))
        handler = self.legacy.handlers.get(method)
        if handler is None:
            error = MethodNotFound(f"Method not found: {method}")
            return JsonResponse(error_response(error, msg_id))
        call = Call(owner=session.owner, request_id=msg_id, session=session)
        if sse_ok and method == "tasks/result":  # the task's questions travel on it too
            return _sse(self.legacy.result_stream(call, params or {}), self.settings.sse_ping_s)
        if sse_ok and self.legacy.is_slow(session, method, params or {}):
            return _sse(self._answer(handler, call, params or {}), self.settings.sse_ping_s)
        try:
            result = await handler(call, params or {})
            return JsonResponse({"jsonrpc": "2.0", "id": msg_id, "result": result})
        except Exception as exc:
            return JsonResponse(error_response(exc, msg_id))

    async def _post_modern(
        self, request: Request, method: str, msg_id: str | int | None, params: Any
    ) -> Response:
        principal = await self._principal(request)
        if msg_id is None:
            # This revision defines no client notifications over HTTP (closing a response
            # stream is the cancellation): accept and ignore.
            return Response(status_code=202)
        _, sse_ok = _accepts(request)
        try:
            if not isinstance(params, dict):
                raise InvalidMeta("params with _meta are required")
            owner = principal.owner if principal else ""
            call = self.modern.call(request.headers, method, params, msg_id, owner)
            if method in TASK_LOOKUPS:
                call = replace(call, session=await self._named_session(request))
            if method == "subscriptions/listen":
                task_ids = await self.modern.listen_filter(call, params)
                return _sse(self.modern.listen(call, task_ids), self.settings.sse_ping_s)
            handler = self.modern.handlers[method]
            if sse_ok and self.modern.is_slow(call, method, params):
                # Closing this stream cancels the call (the 2026-07-28 rule).
                return _sse(self._answer(handler, call, params), self.settings.sse_ping_s)
            result = await handler(call, params)
            return JsonResponse({"jsonrpc": "2.0", "id": msg_id, "result": result})
        except JsonRpcError as exc:
            return JsonResponse(error_response(exc, msg_id), status_code=exc.http_status)
        except Exception as exc:
            return JsonResponse(error_response(exc, msg_id))

    async def _answer(
        self, handler: Handler, call: Call, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """A slow answer as a stream: the messages the handler sends meanwhile (its progress),
        then its answer, and nothing after it. Closing the stream cancels the handler."""
        sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        work = asyncio.ensure_future(handler(replace(call, notify=sent.put_nowait), params))
        _running.add(work)
        work.add_done_callback(_running.discard)
        try:
            while not work.done():
                message = asyncio.ensure_future(sent.get())
                await asyncio.wait({work, message}, return_when=asyncio.FIRST_COMPLETED)
                if not message.done():
                    message.cancel()
                    break
                yield message.result()
            while not sent.empty():
                yield sent.get_nowait()
            try:
                result = work.result()
                reply = {"jsonrpc": "2.0", "id": call.request_id, "result": result}
            except Exception as exc:
                reply = error_response(exc, call.request_id)
            yield reply
        finally:
            # The client went away (or the bridge stops): the handler's own cancellation
            # handling runs (a plain call cancels its task).
            work.cancel()

    # -- GET -------------------------------------------------------------------------------
    def _no_session(self, request: Request) -> Response | None:
        # Without a legacy session, GET and DELETE do not exist (the stateless era: 405).
        if request.headers.get(SESSION_HEADER) is None:
            return Response(status_code=405, headers={"Allow": "POST"})
        return None

    async def get(self, request: Request) -> Response:
        refused = self._no_session(request)
        if refused is not None:
            return refused
        _, sse_ok = _accepts(request)
        if not sse_ok:
            raise HttpError(406, "Not Acceptable: the GET stream is text/event-stream")
        session = await self._session(request)
        last = request.headers.get("last-event-id")
        if last is not None and not valid_event_id(last):
            raise HttpError(400, "Bad Request: malformed Last-Event-ID")
        most = self.settings.max_streams_per_session
        if self._streams[session.id] >= most:
            raise HttpError(
                429,
                f"Too many streams: at most {most} open GET streams per session; close one",
                LIMIT_EXCEEDED,
            )
        return _CountedStream(
            self._streams,
            session.id,
            self._notifications(session, last),
            ping=self.settings.sse_ping_s,
            headers=_SSE_HEADERS,
        )

    async def _notifications(
        self, session: Session, last: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        try:
            questions = SessionQuestions(can_elicit(session))
            opening, start = await questions.opening(self.legacy.tasks, session.owner, last)
            for message in opening:
                yield {"event": "message", "data": json.dumps(message)}
            async for event in self.hub.stream(session.owner, start, session.id):
                # A question for the client (or its withdrawal) and a progress report travel
                # ahead of the status notification of their event, without an id of their own.
                for message in questions.on_event(event.id, event.task):
                    yield {"event": "message", "data": json.dumps(message)}
                progress = task_progress(event.task)
                if progress is not None:
                    yield {"event": "message", "data": json.dumps(progress)}
                yield {
                    "event": "message",
                    "id": event.id,
                    "data": json.dumps(status_notification(event.task)),
                }
        except BridgeError as exc:
            # The stream ends cleanly; the client resumes with Last-Event-ID.
            log.warning("ending the SSE stream of %s: %s", session.owner, exc)

    # -- DELETE ----------------------------------------------------------------------------
    async def delete(self, request: Request) -> Response:
        refused = self._no_session(request)
        if refused is not None:
            return refused
        session = await self._session(request)
        await self.legacy.sessions.delete(session.id)
        # End the session's GET streams, in whichever bridge process holds them.
        await self.hub.close_session(session.owner, session.id)
        return Response(status_code=200)
