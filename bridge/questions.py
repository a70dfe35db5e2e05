"""A tool's questions to a 2025-11-25 client: the ``elicitation/create`` requests of an
``input_required`` task, which streams carry them, and how they are taken back.

A question goes out on every stream that can carry it while it is pending: the session's
GET streams (those open when it is asked and any opened later, resumed or not) and the
``tasks/result`` streams of its task (where the spec has the client look for it). So a
client may see one question more than once, always with the same JSON-RPC id; the first
answer counts and later ones are ignored (``answer.lua``). One stream carries a question at
most once, and when the question is withdrawn unanswered (no answer in time, the task
cancelled or ended), a ``notifications/cancelled`` for its id follows on that stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from mcp_celery_bridge.bridge.service import WAIT_RECHECK_S, TaskService
from mcp_celery_bridge.bridge.shared.records import TaskRecord
from mcp_celery_bridge.bridge.shared.schema import input_request_id

RELATED_TASK = "io.modelcontextprotocol/related-task"


def question(
    task_id: str, key: str, request: dict[str, Any], *, related: bool = True
) -> dict[str, Any]:
    """Question ``key`` of a task as a JSON-RPC request to the client; the id names the task
    and the question, so any bridge can route the answer (``LegacyMethods.response``).
    ``related``: it names its task (not for the hidden task behind a plain call)."""
    params = dict(request["params"])
    if related:
        params["_meta"] = {RELATED_TASK: {"taskId": task_id}}
    return {
        "jsonrpc": "2.0",
        "id": input_request_id(task_id, key),
        "method": request["method"],
        "params": params,
    }


def _order(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


class Delivery:
    """What one stream has carried: each question once, and the withdrawal of those."""

    def __init__(self, *, related: bool = True) -> None:
        self._sent: dict[str, set[str]] = {}  # task id -> ids of its questions sent
        self.related = related

    def questions(self, task_id: str, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        """The questions of ``inputs`` (key -> request) this stream has not carried yet."""
        sent = self._sent.setdefault(task_id, set())
        fresh = [
            question(task_id, key, request, related=self.related) for key, request in inputs.items()
        ]
        fresh = [message for message in fresh if message["id"] not in sent]
        sent.update(message["id"] for message in fresh)
        return fresh

    def withdrawals(self, record: TaskRecord) -> list[dict[str, Any]]:
        """``notifications/cancelled`` for the questions an event withdraws that this stream
        carried (a client never shown a question needs no word of its end)."""
        sent = self._sent.get(record.id, set())
        messages = []
        for key in record.withdrawn:
            request_id = input_request_id(record.id, key)
            if request_id in sent:
                sent.discard(request_id)
                params: dict[str, Any] = {
                    "requestId": request_id,
                    "reason": f"the question was withdrawn: {record.message or record.status}",
                }
                if self.related:
                    params["_meta"] = {RELATED_TASK: {"taskId": record.id}}
                messages.append(
                    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}
                )
        if record.status.terminal:
            self._sent.pop(record.id, None)  # it asks nothing more: forget it
        return messages


class SessionQuestions:
    """The questions a session's GET stream carries, if the session can answer any."""

    def __init__(self, asks: bool) -> None:
        self.asks = asks
        self.delivery = Delivery()
        self._newest = ""

    async def opening(
        self, tasks: TaskService, owner: str, last: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The questions pending on ``owner``'s tasks, sent first whenever the stream opens,
        and the event id to stream from: ``last``, else the owner's latest event at that
        point (later questions are announced by later events)."""
        if not self.asks:
            return [], last
        self._newest, pending = await tasks.pending(owner)
        messages = []
        for task_id, key, request in pending:
            messages += self.delivery.questions(task_id, {key: request})
        return messages, last if last is not None else self._newest

    def on_event(self, event_id: str, record: TaskRecord) -> list[dict[str, Any]]:
        """The questions an event announces and the withdrawals it brings. The questions of
        an event up to the opening snapshot were in it, or are no longer pending."""
        if not self.asks:
            return []
        fresh = not event_id or _order(event_id) > _order(self._newest)
        messages = self.delivery.questions(record.id, record.inputs) if fresh else []
        return messages + self.delivery.withdrawals(record)


async def task_questions(tasks: TaskService, task: TaskRecord) -> AsyncIterator[dict[str, Any]]:
    """Until the task ends: its pending questions, each once, and their withdrawals."""
    delivery = Delivery()
    task_id = task.id
    while True:
        async with tasks.subscribe(frozenset({task_id}), frozenset({task.owner})) as sub:
            # Read after subscribing, so no question falls between the read and the events.
            record = await tasks.current(task_id)
            while record is not None and not record.status.terminal:
                for message in delivery.questions(task_id, record.inputs):
                    yield message
                try:
                    event = await asyncio.wait_for(sub.get(), WAIT_RECHECK_S)
                except TimeoutError:  # re-read, in case a pub/sub message was lost
                    pass
                else:
                    if event is None:
                        break  # dropped (Redis was lost): subscribe again
                    for message in delivery.withdrawals(event.task):
                        yield message
                record = await tasks.current(task_id)
            else:
                return
