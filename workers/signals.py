"""Celery signal handlers that move MCP tasks through their statuses.

Which process fires what (prefork): a ``task_failure`` raised in the pool child;
``task_revoked``, ``task_unknown`` and the ``task_failure`` of a lost child
(``WorkerLostError``) or of a hard time limit (``TimeLimitExceeded``) fire in the worker's
main process. (The start and the end of a run need no signal: ``workers.tools`` takes the
lease and announces the run in one step, and stores the tool's result or error itself, so
that Celery's events carry neither; its ``ToolFailed`` is already recorded.)
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
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure, task_revoked, task_unknown

from mcp_celery_bridge.bridge.shared.errors import BridgeError, ToolFailed, execution_error
from mcp_celery_bridge.bridge.shared.records import TaskStatus
from mcp_celery_bridge.workers import monitor, runtime
from mcp_celery_bridge.workers.tools import error_result, failure_message

log = logging.getLogger(__name__)


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


def _timed_out_request(kwargs: Any) -> Any:
    """The MCP ids of a call killed at its hard time limit. Celery reports that from the main
    process without the task's request, but with its kwargs, where the bridge repeats the
    MCP task id; the owner comes from the record."""
    mcp = kwargs.get("mcp") if isinstance(kwargs, dict) else None
    task_id = mcp.get("task_id") if isinstance(mcp, dict) else None
    if not task_id:
        return SimpleNamespace()
    try:
        record = runtime.registry().get(str(task_id))
    except BridgeError:
        log.exception("could not read MCP task %s", task_id)
        return SimpleNamespace()
    if record is None:
        return SimpleNamespace()
    return SimpleNamespace(mcp_task_id=record.id, mcp_owner=record.owner)


@task_failure.connect
def _on_failure(
    sender: Task[Any, Any] | None = None,
    exception: BaseException | None = None,
    kwargs: Any = None,
    **_: Any,
) -> None:
    if sender is None or isinstance(exception, ToolFailed):
        return  # not an MCP call, or its outcome is recorded already (``workers.tools``)
    request = sender.request
    if isinstance(exception, (SoftTimeLimitExceeded, TimeLimitExceeded)):
        # Not the tool's error but the limit of its run: a JSON-RPC error, ``failed`` in both
        # eras (the body did not catch the soft limit, or ignored it until the kill).
        message = "stopped: the tool ran longer than its time limit and did not stop"
        if isinstance(exception, TimeLimitExceeded):
            request = _timed_out_request(kwargs)
            message = (
                f"stopped: the tool ran longer than its time limit, killed after {exception} s"
            )
        _move(request, TaskStatus.FAILED, message, error=execution_error("time_limit", message))
        return
    if isinstance(exception, WorkerLostError):
        # Not the tool's doing: a JSON-RPC error, ``failed`` in both eras.
        lost = _lost_process(request)
        message = f"worker lost ({lost}): {exception}"
        error = execution_error("worker_lost", message, worker=lost, cause=str(exception))
        _move(request, TaskStatus.FAILED, message, error=error)
        return
    # Raised outside the tool body (``workers.tools`` records the body's own errors): a tool
    # result with isError, as a tool error would be.
    message = failure_message(exception) if exception is not None else "failed"
    _move(request, TaskStatus.FAILED, message, result=error_result(message))


@task_revoked.connect
def _on_revoked(
    sender: Task[Any, Any] | None = None,
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
    if sender is not None and _ids(request) is not None and getattr(request, "id", None):
        # Celery's REVOKED ranks below a PROGRESS the task showed (``workers.monitor``).
        hostname = getattr(request, "hostname", None) or "unknown worker"
        monitor.cancelled(sender.app, str(request.id), str(hostname), message)


@task_unknown.connect
def _on_unknown(message: Any = None, name: str = "", **_: Any) -> None:
    headers = getattr(message, "headers", None) or {}
    text = f"no worker on this queue knows the tool task {name!r}"
    # The MCP ids are message headers; a request exposes them as attributes (``_ids``).
    request = SimpleNamespace(**{k: v for k, v in headers.items() if isinstance(k, str)})
    _move(request, TaskStatus.FAILED, text, error=execution_error("unknown_task", text, task=name))
