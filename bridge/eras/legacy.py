"""The 2025-11-25 era over HTTP (and the older versions it negotiates down to): the
adapter that takes every POST no other era recognises. ``initialize`` mints a session;
later requests carry ``Mcp-Session-Id`` (missing: 400, unknown: 404); GET opens the
session's notification stream, DELETE ends the session. Its methods are
``bridge.eras.legacy_methods``.

Errors: a JSON-RPC error answering a request a method handled is HTTP 200; a store fault
before that (the session could not be checked) is 503, as for a notification or a client
response, which are answered nothing in-band.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from mcp_celery_bridge.bridge.callers import SESSION_HEADER, VERSION_HEADER, find_session
from mcp_celery_bridge.bridge.calls import Call
from mcp_celery_bridge.bridge.eras.legacy_methods import (
    ERA,
    LEGACY_VERSIONS,
    LegacyMethods,
    can_elicit,
    status_notification,
    task_progress,
)
from mcp_celery_bridge.bridge.events import valid_event_id
from mcp_celery_bridge.bridge.faults import answering, transport_status
from mcp_celery_bridge.bridge.jsonrpc import JsonResponse, Message
from mcp_celery_bridge.bridge.pipeline import accepts, principal
from mcp_celery_bridge.bridge.questions import SessionQuestions
from mcp_celery_bridge.bridge.sessions import Session
from mcp_celery_bridge.bridge.shared import logs
from mcp_celery_bridge.bridge.shared.errors import (
    LIMIT_EXCEEDED,
    BridgeError,
    HttpError,
    InvalidParams,
    MethodNotFound,
)
from mcp_celery_bridge.bridge.streams import SSE_HEADERS, CountedStream, sse, streamed_answer

if TYPE_CHECKING:
    from mcp_celery_bridge.bridge.eras import Parts

log = logging.getLogger(__name__)


def answered_in_band(exc: BaseException) -> int:
    """Once a method handles a request, its error is the answer: HTTP 200."""
    return 200


class LegacyEra:
    name = ERA
    versions: ClassVar[tuple[str, ...]] = LEGACY_VERSIONS

    def __init__(self, parts: Parts) -> None:
        self.settings = parts.settings
        self.sessions = parts.sessions
        self.hub = parts.hub
        self.tasks = parts.tasks
        self.methods = LegacyMethods(parts.sessions, parts.tasks, parts.catalogue)
        #: Open GET streams per session, in this process. Counted here, not in Redis: what a
        #: stream holds (a connection, a queue, a task) is this process's, and a count in
        #: Redis would outlive a process that died holding streams.
        self._streams: Counter[str] = Counter()

    def recognises(self, message: dict[str, Any], headers: Headers) -> bool:
        return True  # last in the registration: whatever no other era claims

    async def _session(self, request: Request) -> Session:
        caller = await principal(request)
        sid = request.headers.get(SESSION_HEADER)
        if not sid:
            raise HttpError(400, "Bad Request: missing Mcp-Session-Id header")
        logs.annotate(session=sid)
        # Another principal's session answers exactly like one that does not exist.
        session = await find_session(self.sessions, sid, caller)
        if session is None:
            raise HttpError(404, "Session not found")
        # Any version a session can speak is accepted, as the SDK servers do: a client may
        # send the latest it knows (the conformance suite does). Only an unknown one is 400.
        version = request.headers.get(VERSION_HEADER)
        if version is not None and version not in LEGACY_VERSIONS:
            raise HttpError(400, f"Bad Request: unsupported MCP-Protocol-Version {version!r}")
        return session

    # -- POST ------------------------------------------------------------------------------
    async def post(self, request: Request, message: Message) -> Response:
        known = answering(request)
        known.status = transport_status
        if message.method is None:
            # A client's response to a server request (an answer to a tool's question).
            await self.methods.response(await self._session(request), message.body)
            return Response(status_code=202)
        params = message.params
        if message.id is None:
            session = await self._session(request)  # notifications need a live session too
            if isinstance(params, dict) or params is None:
                await self.methods.notification(session, message.method, params or {})
            return Response(status_code=202)
        if message.method == "initialize":
            known.status = answered_in_band
            found = await principal(request)
            session, result = await self.methods.initialize(params, found.subject if found else "")
            logs.annotate(session=session.id)
            return JsonResponse(
                {"jsonrpc": "2.0", "id": message.id, "result": result},
                headers={"Mcp-Session-Id": session.id},
            )
        session = await self._session(request)
        known.status = answered_in_band
        if params is not None and not isinstance(params, dict):
            raise InvalidParams("params must be an object")
        handler = self.methods.handlers.get(message.method)
        if handler is None:
            raise MethodNotFound(f"Method not found: {message.method}")
        call = Call(owner=session.owner, request_id=message.id, session=session)
        _, sse_ok = accepts(request.headers)
        ping = self.settings.sse_ping_s
        if sse_ok and message.method == "tasks/result":  # the task's questions travel on it
            return sse(self.methods.result_stream(call, params or {}), ping)
        if sse_ok and self.methods.is_slow(session, message.method, params or {}):
            return sse(streamed_answer(handler, call, params or {}), ping)
        result = await handler(call, params or {})
        return JsonResponse({"jsonrpc": "2.0", "id": message.id, "result": result})

    # -- GET -------------------------------------------------------------------------------
    async def get(self, request: Request) -> Response | None:
        # Without a legacy session, GET and DELETE do not exist (the stateless era: 405).
        if request.headers.get(SESSION_HEADER) is None:
            return None
        _, sse_ok = accepts(request.headers)
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
        return CountedStream(
            self._streams,
            session.id,
            self._notifications(session, last),
            ping=self.settings.sse_ping_s,
            headers=SSE_HEADERS,
        )

    async def _notifications(
        self, session: Session, last: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        try:
            questions = SessionQuestions(can_elicit(session))
            opening, start = await questions.opening(self.tasks, session.owner, last)
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
    async def delete(self, request: Request) -> Response | None:
        if request.headers.get(SESSION_HEADER) is None:
            return None
        session = await self._session(request)
        await self.sessions.delete(session.id)
        # End the session's GET streams, in whichever bridge process holds them.
        await self.hub.close_session(session.owner, session.id)
        return Response(status_code=200)
