"""A 2026-07-28 plain ``tools/call`` (no task) whose tool asks the user: the multi
round-trip requests of SEP-2322.

The tool body runs on a worker and blocks in ``ask`` until the answer comes through Redis,
so the call keeps one hidden task across its rounds. The first ``tools/call`` starts it
(able to ask when that request declared ``elicitation``). When the task waits for input,
the request is answered with an ``InputRequiredResult``: the questions nobody answered, and
a ``requestState`` naming the task (``bridge.request_state``). The task keeps waiting, up to
each question's own timeout. A follow-up ``tools/call`` (same name and arguments, the state
echoed back, ``inputResponses`` keyed like the questions) delivers the answers and waits
again, for the next questions or the end, in as many rounds as the tool asks.

Rules the flow keeps:
- Answers a request carries go to the questions with their keys pending during that
  request, asked before or while it waits (so a first call may carry them), each delivered
  once; other keys are ignored. A value that is not an object is refused (-32602).
- Questions asked together (within ``SETTLE_S``, e.g. from several threads) go out in one
  round; one asked later comes in the next round.
- Ending the response of a round that asked does not cancel the call: the task waits for
  a follow-up. A client that never comes back costs a worker slot until the ``ask``'s
  timeout (``InputTimeout`` in the tool). A client that goes away while a round waits
  (its stream closes) cancels the call, as for any plain call.
- A refused follow-up (state tampered, expired, another caller's, another call's) cancels
  nothing: the state's rightful holder may still continue, and the timeout bounds the wait.
- A follow-up that finds the call ended answers its outcome; one whose record has expired
  (``plain_call_ttl_ms`` after the end) is refused (-32602).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp_celery_bridge.bridge.calls import Call
from mcp_celery_bridge.bridge.events import Subscription
from mcp_celery_bridge.bridge.request_state import RequestStates
from mcp_celery_bridge.bridge.service import WAIT_RECHECK_S, TaskService, new_task_id
from mcp_celery_bridge.bridge.shared.errors import InvalidParams
from mcp_celery_bridge.bridge.shared.records import TaskRecord, TaskStatus
from mcp_celery_bridge.workers.tools import Tool

#: After the first question nobody answered, how long to wait for more before answering:
#: a tool asking from several threads asks within milliseconds, and its questions then
#: travel in one round.
SETTLE_S = 0.2
#: ``inputResponses`` beyond this many keys are not read.
MAX_RESPONSES = 100
ACTIONS = ("accept", "decline", "cancel")


@dataclass(frozen=True)
class Round:
    """Where a request leaves the call: ended (``record`` terminal), or waiting for the
    ``questions`` (key -> request) nobody answered yet, with the state to come back with."""

    record: TaskRecord
    questions: dict[str, Any]
    state: str = ""


def input_responses(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A request's ``inputResponses``, checked before anything runs: an object of objects
    (each answer to an elicitation carries a valid ``action``)."""
    if "inputResponses" not in params:
        return {}
    responses = params["inputResponses"]
    if not isinstance(responses, dict):
        raise InvalidParams("inputResponses must be an object (question key -> response)")
    checked: dict[str, dict[str, Any]] = {}
    for key, response in list(responses.items())[:MAX_RESPONSES]:
        if not isinstance(response, dict):
            raise InvalidParams(f"inputResponses.{key[:64]} must be an object")
        if "action" in response and response["action"] not in ACTIONS:
            raise InvalidParams(f"inputResponses.{key[:64]}.action must be one of {ACTIONS}")
        if not isinstance(response.get("content", {}), dict):
            raise InvalidParams(f"inputResponses.{key[:64]}.content must be an object")
        checked[key] = response
    return checked


class Rounds:
    def __init__(self, tasks: TaskService, states: RequestStates) -> None:
        self.tasks = tasks
        self.states = states

    async def run(
        self,
        call: Call,
        declared: Tool,
        arguments: dict[str, Any],
        params: dict[str, Any],
        on_change: Callable[[TaskRecord], None] | None = None,
    ) -> Round:
        """One request of a plain call: the first (no ``requestState``) starts the call, a
        follow-up continues the one its state names. Raises InvalidParams for bad
        ``inputResponses`` or a state that does not verify, before anything runs."""
        answers = input_responses(params)
        if "requestState" in params:
            task_id = await self.states.open(
                params["requestState"], call.owner, declared.name, arguments
            )
            record = await self.tasks.current(task_id)
            if (
                record is None
                or not record.hidden
                or record.owner != call.owner
                or record.tool != declared.name
            ):
                raise InvalidParams(
                    "The call this requestState continues is no longer known: call the tool "
                    "again without requestState"
                )
            async with self.tasks.subscribe(
                frozenset({task_id}), frozenset({record.owner})
            ) as events:
                found = await self._follow(record, events, answers, on_change)
        else:
            task_id = new_task_id(self.tasks.keys, call.owner)
            elicitation = call.client_capabilities.get("elicitation")
            async with self.tasks.subscribe(
                frozenset({task_id}), frozenset({call.owner})
            ) as events:
                # Subscribed before the call is queued: no change can come before we listen.
                record = await self.tasks.start(
                    call.owner,
                    declared,
                    arguments,
                    era="modern",
                    ttl=self.tasks.settings.plain_call_ttl_ms,
                    listed=False,
                    hidden=True,
                    task_id=task_id,
                    can_ask=isinstance(elicitation, dict),
                )
                found = await self._follow(record, events, answers, on_change)
        if not found.questions:
            return found
        state = await self.states.seal(call.owner, task_id, declared.name, arguments)
        return Round(found.record, found.questions, state)

    async def _follow(
        self,
        record: TaskRecord,
        events: Subscription,
        answers: dict[str, dict[str, Any]],
        on_change: Callable[[TaskRecord], None] | None,
    ) -> Round:
        try:
            found = await self._watch(record.id, events, answers, on_change)
            while found is None:  # the event stream broke (Redis lost): subscribe again
                async with self.tasks.subscribe(
                    frozenset({record.id}), frozenset({record.owner})
                ) as again:
                    found = await self._watch(record.id, again, answers, on_change)
            return found
        except asyncio.CancelledError:
            # The client went away while this round waited: nobody could continue the call.
            await asyncio.shield(self.tasks.cancel(record, "the client disconnected"))
            raise

    async def _watch(
        self,
        task_id: str,
        events: Subscription,
        answers: dict[str, dict[str, Any]],
        on_change: Callable[[TaskRecord], None] | None,
    ) -> Round | None:
        """Until the call ends or waits for questions nobody answered (None: the event
        stream broke). Reads the record after each change that may matter (a question or
        the end; a mere progress report while nothing waits does not), so nothing falls
        between the read and the events."""
        settle_until: float | None = None
        while True:
            record = await self.tasks.current(task_id)
            if record is None:
                raise InvalidParams(f"Task not found: {task_id}")
            if record.status.terminal:
                return Round(record, {})
            unanswered = await self._deliver(record, answers)
            now = time.monotonic()
            if not unanswered:
                settle_until, timeout = None, WAIT_RECHECK_S
            elif settle_until is None:
                settle_until = now + SETTLE_S
                timeout = SETTLE_S
            elif now >= settle_until:
                return Round(record, unanswered)
            else:
                timeout = settle_until - now
            while True:
                try:
                    event = await asyncio.wait_for(events.get(), timeout)
                except TimeoutError:
                    break  # settled, or re-read in case an announcement was lost
                if event is None:
                    return None
                if on_change is not None:
                    on_change(event.task)
                if settle_until is not None or event.task.status is not TaskStatus.WORKING:
                    break

    async def _deliver(
        self, record: TaskRecord, answers: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """Hand over the answers to pending questions; the pending ones left unanswered."""
        unanswered = {}
        for key, request in record.inputs.items():
            if key in answers:
                # Exactly once whichever bridge delivers it; False when it was withdrawn.
                await self.tasks.deliver(record.id, key, answers.pop(key))
            else:
                unanswered[key] = request
        return unanswered
