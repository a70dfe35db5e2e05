"""The bridge inside a project's own workers: one line makes ``celery -A proj worker`` run
the MCP calls of its existing tasks (``workers.bridged``), their bodies unchanged::

    import mcp_celery_bridge.workers.integration  # in proj/celery.py, or
    imports = ["mcp_celery_bridge.workers.integration"]  # in the Celery configuration

A run of a task the bridge published (its message carries the MCP headers) takes the MCP
task's lease and sets the tool context before the body runs (``task_prerun``), so the body
may also use ``mcp_celery_bridge.current()``; a task cancelled meanwhile is not run at all
(``before_start``). Then:

- ``self.update_state(state="PROGRESS", meta={"current": 3, "total": 10})`` (as Celery's
  documentation and celery-progress put it; ``description``, ``message`` or ``status`` in
  ``meta`` becomes the status message) is MCP progress as well, and still goes to the
  project's result backend as before;
- a retry (``self.retry``, ``autoretry_for``) keeps the MCP task ``working`` with the status
  message "retry 2 of 5 in 10 s: <why>"; the task fails only when Celery gives up;
- the return value is the MCP result (``completed``), an exception the tool error
  (``failed``, by ``workers.signals``), as for a tool declared with ``@tool``;
- a body that replaces itself with a canvas (``self.replace(chord(...))``) or returns one it
  started is one MCP task until the canvas's last part ends (``workers.workflows``).

Cancel, a lost worker, an unknown task name: ``workers.signals``, as for any MCP task. A task
whose message has no MCP headers costs a header lookup per run, nothing more.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

from celery import Task
from celery.app import task as celery_task
from celery.exceptions import Ignore, Retry
from celery.signals import task_postrun, task_prerun, task_retry
from celery.states import READY_STATES, SUCCESS

from mcp_celery_bridge.bridge.shared.errors import BridgeError, execution_error
from mcp_celery_bridge.bridge.shared.records import TaskStatus
from mcp_celery_bridge.workers import context, monitor, runtime, signals, workflows
from mcp_celery_bridge.workers.lease import Heartbeat
from mcp_celery_bridge.workers.tools import (
    error_result,
    failure_message,
    record_result,
    to_call_tool_result,
)

log = logging.getLogger(__name__)

# Imported for their handlers: cancel, lost worker, unknown task; the parts of workflows.
__all__ = ["signals", "workflows"]


@dataclass
class _Run:
    task_id: str
    owner: str
    heartbeat: Heartbeat | None
    token: Any
    #: The MCP task had ended before this run (a cancel while it was queued): skip it.
    skip: bool = False
    #: The run's number (the task's ``runs`` when it took the lease).
    number: int = 0


#: Runs of bridged tasks in this process, by Celery task id (a thread pool runs several).
_runs: dict[str, _Run] = {}


def _bridged(task: Any) -> tuple[str, str] | None:
    """The MCP ids of a run this module looks after: a bridged task's, not a ``@tool``'s
    (those keep their own books: ``workers.tools``)."""
    if task is None or getattr(task, "mcp_native", False):
        return None
    request = task.request
    task_id = getattr(request, "mcp_task_id", None)
    if not task_id:
        return None
    return str(task_id), str(getattr(request, "mcp_owner", None) or "")


@task_prerun.connect(dispatch_uid="mcp-bridge-prerun")
def _start(task_id: str = "", task: Task[Any, Any] | None = None, **_: Any) -> None:
    ids = _bridged(task)
    if ids is None or task is None:
        return
    mcp_id, owner = ids
    settings = runtime.settings()
    registry = runtime.registry()
    worker = getattr(task.request, "hostname", None) or "unknown worker"
    retries = int(getattr(task.request, "retries", 0) or 0)
    try:
        # Each retry is a run of its own: allowed beside the runs a lost worker may cost.
        status, runs, _busy = registry.take_lease(
            mcp_id,
            owner,
            str(worker),
            f"{worker} (pid {os.getpid()})",
            int(settings.lease_s * 1000),
            settings.max_runs + retries,
            capped=False,
        )
    except BridgeError:
        log.exception("could not start MCP task %s", mcp_id)
        return
    if status is None or status.terminal:
        _runs[task_id] = _Run(mcp_id, owner, None, None, skip=True)
        monitor.ended(task, status, "dropped: the task had ended before this run")
        return
    if runs > settings.max_runs + retries:
        message = f"gave up after {settings.max_runs} runs: the worker was lost each time"
        error = execution_error("worker_lost", message, runs=runs - 1)
        registry.transition(mcp_id, owner, TaskStatus.FAILED, message, error=error)
        _runs[task_id] = _Run(mcp_id, owner, None, None, skip=True)
        monitor.ended(task, TaskStatus.FAILED, message)
        return
    heartbeat = Heartbeat(registry, mcp_id, settings.lease_s).__enter__()
    token = context._current.set(context.ToolContext(mcp_id, owner, _tool_name(task), task))
    _runs[task_id] = _Run(mcp_id, owner, heartbeat, token, number=runs)


def _before_start(self: Task[Any, Any], task_id: str, args: Any, kwargs: Any) -> None:
    # Celery calls a task's ``before_start`` inside its tracer, where ``Ignore`` drops the
    # run before the body: the one place a signal handler cannot reach.
    run = _runs.get(task_id)
    if (run is not None and run.skip) or task_id in workflows.skipped:
        raise Ignore()


@task_retry.connect(dispatch_uid="mcp-bridge-retry")
def _retrying(request: Any = None, reason: Any = None, sender: Any = None, **_: Any) -> None:
    task = sender
    ids = _bridged(task)
    if ids is None or task is None:
        return
    done = int(getattr(request, "retries", 0) or 0) + 1
    limit = task.max_retries
    of = f" of {limit}" if limit is not None else ""
    when = getattr(reason, "when", None)
    delay = f" in {when:g} s" if isinstance(when, int | float) and math.isfinite(when) else ""
    cause = getattr(reason, "exc", None)
    why = f": {type(cause).__name__}: {cause}" if cause is not None else ""
    message = f"retry {done}{of}{delay}{why}"[:2_000]
    registry = runtime.registry()
    run = _runs.get(str(getattr(request, "id", "")))
    try:
        # The run ends, the task does not: without its lease the reaper leaves it be. A next
        # run that started first (a countdown of 0) keeps its lease and its status message.
        if run is not None and registry.release_lease(*ids, run.number):
            registry.transition(ids[0], ids[1], TaskStatus.WORKING, message)
    except BridgeError:
        log.exception("could not record the retry of MCP task %s", ids[0])


@task_postrun.connect(dispatch_uid="mcp-bridge-postrun")
def _end(
    task_id: str = "",
    task: Task[Any, Any] | None = None,
    retval: Any = None,
    state: Any = None,
    **_: Any,
) -> None:
    run = _runs.pop(task_id, None)
    if run is None:
        return
    if run.heartbeat is not None:
        run.heartbeat.__exit__(None, None, None)
    if run.token is not None:
        context._current.reset(run.token)
    if run.skip:
        return
    declared_workflow = bool(task is not None and getattr(task.request, "mcp_workflow", None))
    if workflows.root_ended(
        run.task_id, run.owner, task_id, state, retval, declared_workflow, run.number
    ):
        return  # replaced by, or returned, a canvas: its parts end the MCP task
    if state != SUCCESS or isinstance(retval, Retry):
        return  # failures and retries have their own signals (``workers.signals``, above)
    try:
        record_result(run.task_id, run.owner, to_call_tool_result(retval))
    except BridgeError:
        log.exception("could not store the result of MCP task %s", run.task_id)
    except Exception as exc:
        # A return value the bridge cannot store: the call fails saying so, rather than
        # staying working until its lease runs out.
        log.exception("could not store the result of MCP task %s", run.task_id)
        message = f"the tool's result could not be stored: {failure_message(exc)}"
        with contextlib.suppress(BridgeError):
            runtime.registry().transition(
                run.task_id, run.owner, TaskStatus.FAILED, message, result=error_result(message)
            )


def _update_state(
    self: Task[Any, Any],
    task_id: str | None = None,
    state: str | None = None,
    meta: Any = None,
    **kwargs: Any,
) -> None:
    ctx = context._current.get()
    mine = ctx is not None and ctx.celery_task is self and task_id in (None, self.request.id)
    if mine and ctx is not None and state not in READY_STATES and isinstance(meta, dict):
        done, total = _number(meta.get("current")), _number(meta.get("total"))
        text = next((v for k in TEXT_KEYS if isinstance(v := meta.get(k), str) and v), None)
        try:
            if done is not None:
                ctx.report_progress(done, total, text)
        except BridgeError:
            log.warning("could not report the progress of %s", ctx.task_id, exc_info=True)
    _celery_update_state(self, task_id, state, meta, **kwargs)


#: Keys of an ``update_state`` meta whose text becomes the MCP status message, in order.
TEXT_KEYS = ("description", "message", "status")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _tool_name(task: Task[Any, Any]) -> str:
    return str(getattr(task.request, "mcp_tool", None) or task.name)


# Patched on Celery's base Task, so every task class of the project has them; Celery's
# tracer looks for a ``before_start`` patched there (``task_has_custom`` names
# ``celery.app.task`` as the module to see through). A project class that defines its own
# ``update_state`` or ``before_start`` without calling the base one keeps its own.
_celery_update_state = celery_task.Task.update_state
if getattr(_celery_update_state, "__module__", "") != __name__:
    celery_task.Task.update_state = _update_state  # type: ignore[method-assign]
    celery_task.Task.before_start = _before_start  # type: ignore[method-assign]
else:  # imported twice under another name: keep the first
    _celery_update_state = getattr(_celery_update_state, "__wrapped__", _celery_update_state)
_update_state.__wrapped__ = _celery_update_state  # type: ignore[attr-defined]
