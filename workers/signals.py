"""Celery signal handlers that move MCP tasks through their statuses.

Which process fires what (prefork): ``task_success`` and a ``task_failure`` raised by the
tool body fire in the pool child; ``task_revoked``, ``task_unknown`` and the
``task_failure`` of a lost child (``WorkerLostError``) fire in the worker's main process.
(The start of a run needs no signal: the worker's first registry call, ``take_lease`` in
``workers.tools``, checks the status, leases the task and announces it, in one step.)
Each handler is one registry transition; a terminal status is final, so a late success after
a cancel changes nothing. A handler must never raise (Celery only logs it), so failures to
reach Redis are logged here.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Task
from celery.signals import task_failure, task_revoked, task_success, task_unknown

from bridge.errors import BridgeError, execution_error
from bridge.records import TaskStatus
from workers import runtime

log = logging.getLogger(__name__)

#: Longest failure message kept: an exception's text may quote the call's arguments, and it
#: becomes the task's status message, its result and an event.
MAX_FAILURE_CHARS = 2_000


def _ids(request: Any) -> tuple[str, str] | None:
    """The MCP ids the bridge put in the message headers (Celery exposes custom headers as
    attributes of the task request)."""
    task_id = getattr(request, "mcp_task_id", None)
    owner = getattr(request, "mcp_owner", None) or ""
    return (str(task_id), str(owner)) if task_id else None


def _move(request: Any, status: TaskStatus, message: str, **kw: Any) -> None:
    ids = _ids(request)
    if ids is None:
        return
    try:
        runtime.registry().transition(ids[0], ids[1], status, message, **kw)
    except BridgeError:
        log.exception("could not move MCP task %s to %s", ids[0], status)


def _lost_process(request: Any) -> str:
    """The lost pool process as its lease recorded it (worker and pid), else the worker."""
    hostname = getattr(request, "hostname", None) or "unknown worker"
    ids = _ids(request)
    try:
        holder = runtime.registry().holder(ids[0]) if ids is not None else None
    except BridgeError:
        holder = None
    return holder or str(hostname)


def _error_result(message: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": message}], "isError": True}


@task_success.connect
def _on_success(sender: Task[Any, Any] | None = None, result: Any = None, **_: Any) -> None:
    if sender is None or not isinstance(result, dict):
        return
    if result.get("isError"):
        text = " ".join(c.get("text", "") for c in result.get("content", []) if isinstance(c, dict))
        _move(
            sender.request, TaskStatus.FAILED, text or "the tool reported an error", result=result
        )
    else:
        _move(sender.request, TaskStatus.COMPLETED, "completed", result=result)


@task_failure.connect
def _on_failure(
    sender: Task[Any, Any] | None = None, exception: BaseException | None = None, **_: Any
) -> None:
    if sender is None:
        return
    request = sender.request
    if isinstance(exception, WorkerLostError):
        # Not the tool's doing: a JSON-RPC error, ``failed`` in both eras.
        lost = _lost_process(request)
        message = f"worker lost ({lost}): {exception}"
        error = execution_error("worker_lost", message, worker=lost, cause=str(exception))
        _move(request, TaskStatus.FAILED, message, error=error)
        return
    # The tool raised: a tool result with isError (``completed`` in 2026-07-28).
    message = f"{type(exception).__name__}: {exception}"
    if len(message) > MAX_FAILURE_CHARS:
        message = message[:MAX_FAILURE_CHARS] + f"... ({len(message)} characters)"
    _move(request, TaskStatus.FAILED, message, result=_error_result(message))


@task_revoked.connect
def _on_revoked(
    request: Any = None,
    terminated: bool = False,
    signum: Any = None,
    expired: bool = False,
    **_: Any,
) -> None:
    if expired:
        message = "expired before a worker ran it"
    elif terminated:
        message = f"cancelled: terminated (signal {signum})"
    else:
        message = "cancelled before it ran"
    _move(request, TaskStatus.CANCELLED, message)


@task_unknown.connect
def _on_unknown(message: Any = None, name: str = "", **_: Any) -> None:
    headers = getattr(message, "headers", None) or {}
    text = f"no worker on this queue knows the tool task {name!r}"
    # The MCP ids are message headers; a request exposes them as attributes (``_ids``).
    request = SimpleNamespace(**{k: v for k, v in headers.items() if isinstance(k, str)})
    _move(request, TaskStatus.FAILED, text, error=execution_error("unknown_task", text, task=name))
