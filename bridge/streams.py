"""Answers as Server-Sent Events, for any era: a stream of JSON-RPC messages, a slow
handler's answer streamed (its notifications first, closing the stream cancels it), and a
stream counted against its owner while it is open."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.types import Receive, Scope, Send

from mcp_celery_bridge.bridge.calls import Call, Handler
from mcp_celery_bridge.bridge.jsonrpc import error_response

SSE_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}
#: Handlers answering on a stream run as tasks of their own; the loop keeps only weak
#: references to tasks, so this keeps each alive until it is done.
_running: set[asyncio.Future[dict[str, Any]]] = set()


def sse(messages: AsyncIterator[dict[str, Any]], ping_s: float) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, Any]]:
        async for message in messages:
            yield {"event": "message", "data": json.dumps(message)}

    return EventSourceResponse(events(), ping=ping_s, headers=SSE_HEADERS)


async def streamed_answer(
    handler: Handler, call: Call, params: dict[str, Any]
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
        except Exception as exc:  # in-band: the stream's status went out with its start
            reply = error_response(exc, call.request_id)
        yield reply
    finally:
        # The client went away (or the bridge stops): the handler's own cancellation
        # handling runs (a plain call cancels its task).
        work.cancel()


class CountedStream(EventSourceResponse):
    """A stream counted against ``key`` from the moment it is granted (before any await, so
    a burst of requests cannot all pass the check) until it ends, however it ends."""

    def __init__(self, counts: Counter[str], key: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counts, self._key = counts, key
        counts[key] += 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._counts[self._key] -= 1
            if self._counts[self._key] <= 0:
                del self._counts[self._key]
