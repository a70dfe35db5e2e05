"""What Flower (and any Celery event consumer) sees of an MCP task beyond Celery's own
events: its progress, and the end of a run Celery itself does not report.

Celery's event state ranks any custom state above ``REVOKED`` and ``STARTED``
(``celery.states.precedence``), so a task that once showed ``PROGRESS`` would keep showing
it after a revoke; and a task the worker drops (``Ignore``: cancelled while queued, or
cancelled by its own check) gets no final event at all and stays ``STARTED``. So:

- progress is a ``task-progress`` event: state ``PROGRESS``, its text in ``result`` (the
  field Flower's task page shows);
- every cancelled MCP task ends with a ``task-cancelled`` event: state ``CANCELLED``,
  whichever path cancelled it (a custom state follows ``PROGRESS``, ``REVOKED`` and
  ``STARTED`` alike);
- a run the worker gives up on outside Celery's view ends with ``task-failed``.

Completed and failed runs need nothing: Celery's ``task-succeeded`` and ``task-failed``
outrank every other state. Sending is best effort: a broker problem must not fail a tool.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task

from mcp_celery_bridge.bridge.shared.records import TaskStatus

log = logging.getLogger(__name__)

PROGRESS = "task-progress"
CANCELLED = "task-cancelled"
FAILED = "task-failed"


def progress(task: Task[Any, Any], done: float, total: float | None, text: str) -> None:
    """From the pool process running ``task``: how far it got."""
    shown = f"{done:g}/{total:g}: {text}" if total is not None else f"{done:g}: {text}"
    mcp_task_id = getattr(task.request, "mcp_task_id", None)
    _send(
        task, PROGRESS, mcp_task_id=mcp_task_id, done=done, total=total, message=text, result=shown
    )


def ended(task: Task[Any, Any], status: TaskStatus | None, message: str) -> None:
    """From the pool process: the run of ``task`` is dropped (``Ignore``) because the MCP
    task is ``status``; Celery will say nothing more of it."""
    if status is TaskStatus.CANCELLED:
        _send(task, CANCELLED, result=message)
    elif status is TaskStatus.FAILED:
        _send(task, FAILED, exception=message)


def cancelled(app: Celery, celery_id: str, hostname: str, message: str) -> None:
    """From the worker's main process (a revoke, where there is no running task to send
    with): Celery task ``celery_id`` ends cancelled."""
    try:
        with app.events.default_dispatcher(hostname=hostname) as dispatcher:
            dispatcher.send(CANCELLED, uuid=celery_id, result=message)
    except Exception:
        log.warning("could not send the cancelled event of %s", celery_id, exc_info=True)


def _send(task: Task[Any, Any], event: str, **fields: Any) -> None:
    try:
        task.send_event(event, **fields)
    except Exception:
        log.warning("could not send %s for %s", event, task.request.id, exc_info=True)
