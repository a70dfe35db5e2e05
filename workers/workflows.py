"""Workflows: a bridged task whose body starts a canvas (a chain, group or chord) is one MCP
task, however many Celery tasks run it. Imported by ``workers.integration``.

The two idioms Celery supports, both seen without a change to the task body:

- ``return self.replace(chord([...], callback.s()))`` (Celery's own way for a task to become
  a workflow: the last part runs under the task's own id, and ``AsyncResult(id).get()``
  gives the workflow's result to any Celery caller too), and
- ``return chain(...).apply_async()`` / ``return chord(...)(...)`` / ``return
  group(...).apply_async()``: the body returns the result of a canvas it started (Celery
  stores such a return value as the result's ids, not the workflow's outcome).

How: while a bridged run or a part of its workflow runs in a pool process, every message
that process publishes gets the ``mcp_part_of`` header ([MCP task id, owner, root Celery
id]) and its id, with the ids of the signatures embedded in it (a chain's later links, a
chord's body), goes into the workflow's book (``bridge.shared.flows``) before it is sent.
So a chain link published by the worker that finished the link before, or a chord body
published by the one that finished the last header part, is a part too. When the root's run
ends (replaced, or returning the canvas's result) it names the final parts; each finished
part counts as MCP progress ("2 of 4 parts done"), the final parts' results complete the
MCP task, a failed part fails it, and a cancel revokes every part (``bridge.service``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Task
from celery._state import get_current_task
from celery.result import AsyncResult, GroupResult, ResultBase, ResultSet
from celery.signals import (
    before_task_publish,
    task_failure,
    task_postrun,
    task_prerun,
    task_revoked,
)
from celery.states import IGNORED, SUCCESS

from mcp_celery_bridge.bridge.shared.clients import sync_client
from mcp_celery_bridge.bridge.shared.errors import BridgeError, execution_error
from mcp_celery_bridge.bridge.shared.flows import Flows, Tally
from mcp_celery_bridge.bridge.shared.records import TaskStatus
from mcp_celery_bridge.workers import runtime
from mcp_celery_bridge.workers.tools import (
    error_result,
    failure_message,
    record_result,
    to_call_tool_result,
)

log = logging.getLogger(__name__)

#: The message header naming the MCP task a Celery task is a part of.
HEADER = "mcp_part_of"
#: Canvas tasks that only publish others: parts to revoke, not to count.
COMPOSITE = frozenset({"celery.chain", "celery.chord", "celery.group", "celery.starmap"})

#: Part runs in this process told to stop before their body (their MCP task had ended).
skipped: set[str] = set()
#: Root runs in this process that published parts (a replace or a started canvas).
_roots: set[str] = set()
_book: tuple[int, Flows] | None = None


def book() -> Flows:
    """This process's workflow book (a client made after the fork, as ``runtime``'s)."""
    global _book
    if _book is None or _book[0] != os.getpid():
        settings = runtime.settings()
        client = sync_client(settings.redis_url, patient=True, ca_file=settings.redis_ca_file)
        _book = (os.getpid(), Flows(settings, client))
    return _book[1]


def flow_of(task: Any) -> tuple[str, str, str] | None:
    """[MCP task id, owner, root Celery id] of the workflow ``task``'s run belongs to: a
    part's header, or a bridged run's own MCP ids (not a ``@tool``'s: those keep their
    own books)."""
    request = task.request
    part = getattr(request, HEADER, None)
    if part:
        mcp_id, owner, root = part
        return str(mcp_id), str(owner), str(root)
    mcp_id = getattr(request, "mcp_task_id", None)
    if not mcp_id or getattr(task, "mcp_native", False):
        return None
    return str(mcp_id), str(getattr(request, "mcp_owner", None) or ""), str(request.id)


@before_task_publish.connect(dispatch_uid="mcp-bridge-flow-publish")
def _publishing(
    sender: str = "", body: Any = None, headers: dict[str, Any] | None = None, **_: Any
) -> None:
    task = get_current_task()
    if task is None or headers is None or headers.get("mcp_task_id"):
        return  # not published from a task's run; or a bridged run's retry, its own message
    flow = flow_of(task)
    if flow is None:
        return
    part = str(headers.get("id") or "")
    embed = body[2] if isinstance(body, list | tuple) and len(body) > 2 else None
    if flow[2] == str(task.request.id) and not _canvas(sender, headers, embed, part, flow[2]):
        # A plain task the bridged run sends on the side (``send_email.delay()``): not part
        # of its work; it runs as Celery runs it, untouched.
        return
    headers[HEADER] = list(flow)
    found = [(part, sender not in COMPOSITE)] if part else []
    if isinstance(embed, dict):
        for key in ("chain", "chord", "callbacks"):  # not errbacks: they run on failure only
            found.extend(_embedded(embed.get(key)))
    if flow[2] == str(task.request.id) and getattr(task.request, "mcp_task_id", None):
        _roots.add(flow[2])
    try:
        book().add(flow[0], found)
    except BridgeError:
        log.exception("could not record the parts of MCP task %s", flow[0])


def _canvas(sender: str, headers: dict[str, Any], embed: Any, part: str, root: str) -> bool:
    """Whether a message the root run publishes belongs to a canvas it starts: a canvas
    task, a message carrying the rest of a chain, a chord or callbacks, a group member, or
    the replacement of the run itself (``Task.replace``)."""
    if sender in COMPOSITE or headers.get("group_id") or part == root:
        return True
    if int(headers.get("replaced_task_nesting") or 0) > 0:
        return True
    return isinstance(embed, dict) and any(embed.get(k) for k in ("chain", "chord", "callbacks"))


def _embedded(value: Any) -> list[tuple[str, bool]]:
    """The (id, counted) of every task in a signature (or list of them) a message carries."""
    if isinstance(value, list | tuple):
        return [found for item in value for found in _embedded(item)]
    if not isinstance(value, dict) or "task" not in value:
        return []
    options, kwargs = value.get("options") or {}, value.get("kwargs") or {}
    name = str(value["task"])
    found: list[tuple[str, bool]] = []
    if name in COMPOSITE:
        for key in ("tasks", "header", "body"):
            found.extend(_embedded(kwargs.get(key)))
    elif options.get("task_id"):
        found.append((str(options["task_id"]), True))
    for key in ("link", "chain"):
        found.extend(_embedded(options.get(key)))
    return found


@task_prerun.connect(dispatch_uid="mcp-bridge-flow-prerun")
def _part_starts(task_id: str = "", task: Task[Any, Any] | None = None, **_: Any) -> None:
    part = getattr(task.request, HEADER, None) if task is not None else None
    if not part or task is None:
        return
    worker = getattr(task.request, "hostname", None) or "unknown worker"
    try:
        status = book().start(str(part[0]), task_id, f"{worker} (pid {os.getpid()})")
    except BridgeError:
        log.exception("could not record the start of part %s of MCP task %s", task_id, part[0])
        return
    if status is TaskStatus.CANCELLED:
        # Dropped by ``workers.integration``'s before_start. Only a cancel stops a part:
        # one a finished task started and did not wait for (fire and forget) still runs.
        skipped.add(task_id)


@task_postrun.connect(dispatch_uid="mcp-bridge-flow-postrun")
def _part_ends(
    task_id: str = "",
    task: Task[Any, Any] | None = None,
    retval: Any = None,
    state: Any = None,
    **_: Any,
) -> None:
    if task_id in skipped:
        skipped.discard(task_id)
        return
    part = getattr(task.request, HEADER, None) if task is not None else None
    if not part or state != SUCCESS:
        return  # not a part; or retried, replaced again (a later run ends it), failed
    mcp_id, owner = str(part[0]), str(part[1])
    value = _results(retval) if isinstance(retval, ResultBase) else retval
    try:
        tally = book().finish(mcp_id, task_id, value)
    except BridgeError:
        log.exception("could not record the end of part %s of MCP task %s", task_id, mcp_id)
        return
    if tally is not None:
        _announce(mcp_id, owner, tally)


def root_ended(
    mcp_id: str,
    owner: str,
    celery_id: str,
    state: Any,
    retval: Any,
    declared: bool = False,
    run: int = 0,
) -> bool:
    """Called by ``workers.integration`` at the end of a bridged run: whether the run
    started a workflow, which now has the MCP task (its lease released, the final parts
    named). A task ``declared`` a workflow returns the id (or ids) of its canvas's result."""
    started = celery_id in _roots
    _roots.discard(celery_id)
    if state == SUCCESS and isinstance(retval, ResultBase):
        finals = _final_ids(retval)
    elif state == SUCCESS and declared and started and _ids(retval):
        finals = _ids(retval)
    elif state == IGNORED and started:
        finals = [celery_id]  # replaced: the last part runs under the run's own id
    else:
        finals = []
    if state == SUCCESS and finals and not _known(mcp_id, finals):
        # A result object of something this run did not start (an AsyncResult it looked up,
        # a nested group's id): no part would ever end the task, so it ends with the value.
        finals = []
    if not finals:
        if started:  # fire and forget: keep no results of those parts for anyone
            _no_finals(mcp_id)
        return False
    registry = runtime.registry()
    try:
        # The run ended, the task did not: without its lease the reaper leaves it be.
        registry.release_lease(mcp_id, owner, run)
        _announce(mcp_id, owner, book().shape(mcp_id, finals))
    except BridgeError:
        log.exception("could not record the workflow of MCP task %s", mcp_id)
    return True


def _known(mcp_id: str, finals: list[str]) -> bool:
    try:
        return book().known(mcp_id, finals)
    except BridgeError:
        log.warning("could not read the parts of MCP task %s", mcp_id, exc_info=True)
        return True  # as named: the parts, not a guess, decide then


def _ids(value: Any) -> list[str]:
    """The result ids a task declared a workflow returned (one id, or a list of them)."""
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) and v for v in value):
        return [str(v) for v in value]
    return []


def _no_finals(mcp_id: str) -> None:
    try:
        book().shape(mcp_id, [""])
    except BridgeError:
        log.warning("could not record the parts of MCP task %s", mcp_id, exc_info=True)


def _final_ids(result: ResultBase) -> list[str]:
    if isinstance(result, ResultSet):  # a group's GroupResult: every member's last task
        return [str(r.id) for r in result.results or []]
    return [str(result.id)] if isinstance(result, AsyncResult) else []


def _results(result: ResultBase) -> Any:
    # A part returning a canvas it started (not followed: its result is the ids, as Celery
    # stores it).
    return result.as_tuple() if isinstance(result, AsyncResult | GroupResult) else None


def _announce(mcp_id: str, owner: str, tally: Tally) -> None:
    registry = runtime.registry()
    # With the final parts' results the canvas is over, though a part before them may not
    # have recorded its end yet (a chain link's signals run after it sent the next link):
    # the progress says so, rather than stop one short, since nothing is announced after
    # the task's end.
    done = tally.total if tally.results is not None else tally.done
    try:
        registry.transition(
            mcp_id,
            owner,
            TaskStatus.WORKING,
            f"{done} of {tally.total} parts done",
            only_if_changed=True,
            progress=(done, tally.total),
        )
        if tally.results is not None:
            value = tally.results[0] if len(tally.results) == 1 else tally.results
            record_result(mcp_id, owner, to_call_tool_result(value))
    except BridgeError:
        log.exception("could not record the progress of MCP task %s", mcp_id)


@task_failure.connect(dispatch_uid="mcp-bridge-flow-failure")
def _part_fails(
    sender: Task[Any, Any] | None = None, exception: BaseException | None = None, **_: Any
) -> None:
    part = getattr(sender.request, HEADER, None) if sender is not None else None
    if not part:
        return
    mcp_id, owner = str(part[0]), str(part[1])
    name = getattr(sender, "name", "a part")
    if isinstance(exception, WorkerLostError):
        message = f"worker lost running {name}: {exception}"
        kw: dict[str, Any] = {"error": execution_error("worker_lost", message)}
    else:
        message = failure_message(exception) if exception is not None else f"{name} failed"
        kw = {"result": error_result(message)}
    try:
        runtime.registry().transition(mcp_id, owner, TaskStatus.FAILED, message, **kw)
    except BridgeError:
        log.exception("could not fail MCP task %s", mcp_id)


@task_revoked.connect(dispatch_uid="mcp-bridge-flow-revoked")
def _part_revoked(request: Any = None, expired: bool = False, **_: Any) -> None:
    part = getattr(request, HEADER, None)
    if not part:
        return
    # Revoked by someone else than the bridge (whose cancel comes first: then no change).
    message = f"cancelled: part {getattr(request, 'id', '')} was revoked"
    if expired:
        message = f"cancelled: part {getattr(request, 'id', '')} expired before it ran"
    try:
        runtime.registry().transition(str(part[0]), str(part[1]), TaskStatus.CANCELLED, message)
    except BridgeError:
        log.exception("could not cancel MCP task %s", part[0])
