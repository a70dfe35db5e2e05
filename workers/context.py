"""What a tool body may ask of the bridge while it runs."""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from celery import Task
from celery.exceptions import Ignore

from mcp_celery_bridge.bridge.shared.records import TaskStatus
from mcp_celery_bridge.workers import monitor, runtime


class TaskCancelled(Ignore):
    """Raised by ``check_cancelled``; Celery then drops the task without a result."""


class InputUnavailable(Exception):
    """``ask`` was called, but the caller declared no elicitation: nobody can answer."""


class InputTimeout(Exception):
    """``ask`` got no answer in time; the question was withdrawn."""


@dataclass(frozen=True)
class Answer:
    """The user's answer to ``ask``: ``action`` is "accept" (with ``content``), "decline"
    or "cancel"."""

    action: str
    content: dict[str, Any] | None = None


log = logging.getLogger(__name__)

#: A question key a tool names: it travels in JSON-RPC ids (``mcp-input:<task>:<key>``),
#: ``inputRequests`` keys and Redis key names, so it stays short and plain.
QUESTION_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")

#: Minimum time between two progress writes, so a tight loop cannot flood Redis or clients.
PROGRESS_MIN_INTERVAL_S = 0.05
#: Minimum time between two progress events to Flower (a broker publish each).
FLOWER_MIN_INTERVAL_S = 1.0


@dataclass
class ToolContext:
    """The running call: ``task_id`` (the MCP task id), ``tool``, ``owner`` (what the task
    is bound to) and, when the caller authenticated, ``principal``."""

    task_id: str
    owner: str
    tool: str
    celery_task: Task[Any, Any] | None = field(default=None, repr=False)
    _last_report: float = field(default=0.0, repr=False)
    _last_event: float = field(default=0.0, repr=False)
    _last_done: float = field(default=float("-inf"), repr=False)

    @property
    def principal(self) -> str | None:
        return (
            self.owner.removeprefix("principal:") if self.owner.startswith("principal:") else None
        )

    def cancelled(self) -> bool:
        """True once the task was cancelled (or its record is gone): stop soon."""
        status = runtime.registry().status(self.task_id)
        return status is None or status is TaskStatus.CANCELLED

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise TaskCancelled()

    def report_progress(
        self, done: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Say how far the call got. One Redis round trip at most, and none when the last
        report was under ``PROGRESS_MIN_INTERVAL_S`` ago (the last step always goes out).
        ``done`` must increase: a report that does not is ignored."""
        now = time.monotonic()
        final = total is not None and done >= total
        if done <= self._last_done or (
            not final and now - self._last_report < PROGRESS_MIN_INTERVAL_S
        ):
            return
        self._last_report, self._last_done = now, done
        text = message or (f"{done:g}/{total:g}" if total is not None else f"{done:g}")
        runtime.registry().transition(
            self.task_id,
            self.owner,
            TaskStatus.WORKING,
            text,
            only_if_changed=True,
            progress=(done, total),
        )
        if self.celery_task is not None and (
            final or now - self._last_event >= FLOWER_MIN_INTERVAL_S
        ):
            self._last_event = now
            self._flower_event(done, total, text)

    def ask(
        self,
        message: str,
        schema: dict[str, Any],
        *,
        timeout: float = 300.0,
        key: str | None = None,
    ) -> Answer:
        """Ask the user (an elicitation with ``message`` and the flat ``schema`` of the
        wanted answer) and wait for the answer, at most ``timeout`` seconds. Meanwhile the
        task is ``input_required`` (questions asked at once, e.g. from several threads, are
        all pending together). ``key`` names the question on the wire (its ``inputRequests``
        key); it must be unique among the call's pending questions, and is random when not
        given. Raises InputUnavailable when the caller cannot answer, InputTimeout when it
        did not, TaskCancelled when the task was cancelled meanwhile."""
        if key is not None and not QUESTION_KEY.fullmatch(key):
            raise ValueError(f"a question key is 1 to 64 of A-Z a-z 0-9 _ . -, not {key!r}")
        registry = runtime.registry()
        record = registry.get(self.task_id)
        if record is None or record.status.terminal:
            raise TaskCancelled()
        if not record.can_ask:
            raise InputUnavailable("the client declared no elicitation capability")
        if key is None:
            key = uuid.uuid4().hex[:16]  # unique over the task's life, reruns included
        request = {
            "method": "elicitation/create",
            "params": {"mode": "form", "message": message, "requestedSchema": schema},
        }
        waiting = f"waiting for input: {message}"
        if not registry.ask(self.task_id, self.owner, key, request, waiting).applied:
            raise TaskCancelled()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                text = f"no answer within {timeout:g} s"
                raw = registry.withdraw(self.task_id, self.owner, key, text)
                if raw is None:
                    raise InputTimeout(text)
                break
            # Short waits, so a cancel is noticed within a second even without a revoke.
            raw = registry.wait_answer(self.task_id, key, min(1.0, remaining))
            if raw is not None:
                break
            self.check_cancelled()
        # Back to working, unless other questions (asked by other threads) are still
        # pending: the registry keeps the task input_required until every one is answered.
        registry.transition(self.task_id, self.owner, TaskStatus.WORKING, "input received")
        content = raw.get("content")
        return Answer(
            str(raw.get("action", "cancel")), content if isinstance(content, dict) else None
        )

    def _flower_event(self, done: float, total: float | None, text: str) -> None:
        assert self.celery_task is not None
        monitor.progress(self.celery_task, done, total, text)


_current: ContextVar[ToolContext | None] = ContextVar("mcp_tool_context", default=None)


def current() -> ToolContext:
    """The context of the tool call running in this process."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("current() is only available inside a running MCP tool")
    return ctx
