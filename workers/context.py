"""What a tool body may ask of the bridge while it runs."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from celery.exceptions import Ignore

from bridge.registry import TaskStatus
from workers import runtime


class TaskCancelled(Ignore):
    """Raised by ``check_cancelled``; Celery then drops the task without a result."""


#: Minimum time between two progress writes, so a tight loop cannot flood Redis or clients.
PROGRESS_MIN_INTERVAL_S = 0.05


@dataclass
class ToolContext:
    task_id: str
    owner: str
    tool: str
    _last_report: float = field(default=0.0, repr=False)

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
        now = time.monotonic()
        final = total is not None and done >= total
        if not final and now - self._last_report < PROGRESS_MIN_INTERVAL_S:
            return
        self._last_report = now
        text = message or (f"{done:g}/{total:g}" if total is not None else f"{done:g}")
        runtime.registry().transition(
            self.task_id, self.owner, TaskStatus.WORKING, text, only_if_changed=True
        )


_current: ContextVar[ToolContext | None] = ContextVar("mcp_tool_context", default=None)


def current() -> ToolContext:
    """The context of the tool call running in this process."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("current() is only available inside a running MCP tool")
    return ctx
