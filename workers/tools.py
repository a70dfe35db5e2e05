"""Declaring tools: one decorator makes a plain function an MCP tool and a Celery task.

    @tool(task_support="required")
    def sleep(seconds: float, steps: int = 10) -> str: ...

The input schema comes from the type hints (or from the function's single pydantic-model
parameter). Declaring has no side effect beyond registering the task (a shared task: it
joins whichever Celery app the process runs, the bridge's or a project's own), so the
bridge can import tool modules to list and validate tools without running anything.
Stacked on an existing Celery task (``@tool`` over ``@app.task``), it bridges that task
instead (``workers.bridged``).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_type_hints, overload

import jsonschema
from celery import Task, shared_task
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from celery.signals import worker_init
from celery.utils.saferepr import saferepr
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from mcp_celery_bridge.bridge.shared.errors import ToolFailed, execution_error
from mcp_celery_bridge.bridge.shared.records import TaskStatus
from mcp_celery_bridge.bridge.shared.results import tool_error
from mcp_celery_bridge.workers import context, monitor, runtime
from mcp_celery_bridge.workers.lease import Heartbeat

TaskSupport = Literal["forbidden", "optional", "required"]

#: Celery task names of MCP tools start with this, so workers and Flower can tell them apart.
TASK_NAME_PREFIX = "mcp."


def kwargs_repr(mcp: dict[str, Any]) -> str:
    """What Celery's events, and so Flower and the worker's log, show of a tool call's kwargs
    (the message's ``kwargsrepr`` header): the MCP ids, never the arguments, which Celery
    would show to anyone who reaches Flower."""
    shown = {"task_id": str(mcp.get("task_id", "")), "tool": str(mcp.get("tool", ""))}
    return saferepr({"mcp": shown}, 1024)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    task_support: TaskSupport
    model: type[BaseModel]
    func: Callable[..., Any]
    takes_model: bool
    #: Seconds a run may take (Celery's soft time limit), else ``tool_time_limit_s``.
    time_limit: float | None = None
    #: The name of the existing Celery task this tool bridges (``workers.bridged``): the
    #: bridge publishes the arguments as that task's keyword arguments, and the project's
    #: own workers run it. None for a tool declared here, run by ``_execute``.
    task_name: str | None = None
    #: An input schema given by hand, for an existing task the bridge cannot import.
    schema: dict[str, Any] | None = None
    #: The module that declared the tool (the catalogue serves the configured modules').
    module: str = ""
    #: A bridged task declared as a workflow: it starts a canvas and returns the id of its
    #: result (``chain(...).apply_async().id``), and the MCP task follows that canvas.
    workflow: bool = False

    @property
    def bridged(self) -> bool:
        return self.task_name is not None

    @property
    def celery_name(self) -> str:
        return self.task_name or TASK_NAME_PREFIX + self.name

    @property
    def input_schema(self) -> dict[str, Any]:
        if self.schema is not None:
            return dict(json.loads(json.dumps(self.schema)))
        schema = self.model.model_json_schema()
        schema.pop("title", None)
        schema.setdefault("properties", {})
        return schema

    def validate(self, arguments: dict[str, Any]) -> BaseModel:
        """Raises ``pydantic.ValidationError``."""
        return self.model.model_validate(arguments)

    def problems(self, arguments: dict[str, Any]) -> str | None:
        """Why ``arguments`` do not fit the input schema (a short text), else None."""
        if self.schema is not None:
            errors = sorted(
                jsonschema.Draft202012Validator(self.schema).iter_errors(arguments),
                key=lambda e: list(e.path),
            )
            return (
                "; ".join(
                    f"{'.'.join(str(p) for p in e.path) or 'arguments'}: {e.message}"
                    for e in errors[:10]
                )
                or None
            )
        try:
            self.validate(arguments)
        except ValidationError as exc:
            return explain(exc)
        return None

    def call(self, arguments: dict[str, Any]) -> Any:
        parsed = self.validate(arguments)
        if self.takes_model:
            return self.func(parsed)
        return self.func(**{name: getattr(parsed, name) for name in type(parsed).model_fields})


def explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


_catalogue: dict[str, Tool] = {}


def add(declared: Tool) -> None:
    """Register ``declared`` (declaring the same function or task again is harmless)."""
    known = _catalogue.get(declared.name)
    if known is not None and (
        known.func is not declared.func or known.task_name != declared.task_name
    ):
        raise ValueError(f"tool {declared.name!r} is declared twice")
    _catalogue[declared.name] = declared


def catalogue() -> dict[str, Tool]:
    """Every tool declared by the modules imported so far, by name."""
    return dict(_catalogue)


def model_for(func: Callable[..., Any]) -> tuple[type[BaseModel], bool]:
    # With the extras: a parameter's ``Annotated[..., Field(...)]`` shapes its schema.
    hints = get_type_hints(func, include_extras=True)
    params = list(inspect.signature(func).parameters.values())
    if len(params) == 1:
        only = hints.get(params[0].name)
        if isinstance(only, type) and issubclass(only, BaseModel):
            return only, True
    fields: dict[str, Any] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"tool {func.__name__}: *args and **kwargs are not supported")
        annotation = hints.get(p.name, Any)
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (annotation, default)
    model = create_model(
        f"{func.__name__}_arguments",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )
    return model, False


#: The keys of a returned dict that make it a ``CallToolResult`` rather than data.
RESULT_KEYS = frozenset({"content", "structuredContent", "isError", "_meta"})


def is_call_tool_result(value: Any) -> bool:
    """A dict with a list of content blocks under "content" and nothing but result keys:
    how a tool returns images, audio, embedded resources or its own error."""
    if not isinstance(value, dict) or not value.keys() <= RESULT_KEYS:
        return False
    content = value.get("content")
    return isinstance(content, list) and all(
        isinstance(block, dict) and isinstance(block.get("type"), str) for block in content
    )


def to_call_tool_result(value: Any) -> dict[str, Any]:
    """A tool's return value as a ``CallToolResult``."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if value is None:
        return {"content": []}
    if isinstance(value, str):
        return {"content": [{"type": "text", "text": value}]}
    if is_call_tool_result(value):
        return dict(value)
    text = json.dumps(value, ensure_ascii=False, default=str)
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if isinstance(value, dict):
        # As JSON: a datetime, Decimal or UUID (which Celery's own JSON encodes) becomes its
        # text, as in the text block, so the stored result is always JSON.
        result["structuredContent"] = json.loads(text)
    return result


F = TypeVar("F", bound=Callable[..., Any])


@overload
def tool(func: F) -> F: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    task_support: TaskSupport = "optional",
    time_limit: float | None = None,
    workflow: bool = False,
) -> Callable[[F], F]: ...
def tool(
    func: F | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    task_support: TaskSupport = "optional",
    time_limit: float | None = None,
    workflow: bool = False,
) -> F | Callable[[F], F]:
    """Declare ``func`` as an MCP tool run by Celery workers; ``time_limit`` (seconds)
    overrides the ``tool_time_limit_s`` setting for it. Over an existing Celery task,
    ``workflow`` says the task returns the result id of a canvas it started
    (``workers.bridged.expose``)."""
    if time_limit is not None and not time_limit > 0:
        raise ValueError("time_limit must be a positive number of seconds")

    def register(func: F) -> F:
        # Here, not at the top: ``workers.bridged`` builds on this module's Tool.
        from mcp_celery_bridge.workers import bridged

        if bridged.is_task(func):
            bridged.declare(
                func,
                name=name,
                description=description,
                task_support=task_support,
                module=str(getattr(func, "__module__", "")),
                workflow=workflow,
            )
            return func
        if workflow:
            raise ValueError("workflow applies to an existing Celery task, not a function")
        model, takes_model = model_for(func)
        declared = Tool(
            name=name or func.__name__,
            description=description or inspect.cleandoc(func.__doc__ or ""),
            task_support=task_support,
            model=model,
            func=func,
            takes_model=takes_model,
            time_limit=time_limit,
            module=func.__module__,
        )
        add(declared)

        def run(
            self: Task[Any, Any], arguments: dict[str, Any], mcp: dict[str, str] | None = None
        ) -> Any:
            # ``mcp`` repeats the MCP ids of the message headers where Flower shows them (the
            # task's kwargs); the headers stay the source the worker trusts.
            return _execute(self, declared, arguments)

        # ``mcp_native`` (a class attribute of the task) tells the worker integration
        # (``workers.integration``) that this task does its own bookkeeping. (Celery's stubs
        # know no custom task attributes.)
        shared_task(  # type: ignore[call-overload]
            name=declared.celery_name, bind=True, ignore_result=True, mcp_native=True
        )(run)
        return func

    return register(func) if func is not None else register


@worker_init.connect
def _apply_time_limits(sender: Any = None, **_: Any) -> None:
    # In the worker's main process, after the tool modules are imported and before the pool
    # starts: the main process enforces the limits (a soft one by signalling the pool
    # process, a hard one by killing it), and the pool processes inherit them. A bridged
    # task keeps the limits its project gave it.
    settings = runtime.settings()
    tasks = sender.app.tasks
    for declared in _catalogue.values():
        task = tasks.get(declared.celery_name)
        if declared.bridged or task is None:
            continue
        soft = declared.time_limit or settings.tool_time_limit_s
        # Celery's stubs say int; its pool takes any number of seconds.
        task.soft_time_limit = soft
        task.time_limit = soft + settings.tool_kill_grace_s


#: A run refused because its owner is at ``max_running_per_owner`` goes back on the queue
#: for about this long, doubling per refusal up to ``DEFER_MAX_S`` (jittered, so deferred
#: calls do not come back together).
DEFER_FIRST_S = 0.25
DEFER_MAX_S = 4.0


def _defer(task: Task[Any, Any]) -> None:
    """Put the call back on the queue for a while: a Celery retry, so its pool process is
    free at once for someone else's call, and the message (same id, headers and time
    limits) comes back later. A retry is no run: it is not counted against ``max_runs``."""
    retries = int(getattr(task.request, "retries", 0) or 0)
    countdown = min(DEFER_MAX_S, DEFER_FIRST_S * 2 ** min(retries, 8))
    kwargs = task.request.kwargs or {}
    # The republished message must hide the arguments as the bridge's did.
    options: dict[str, Any] = {"kwargsrepr": kwargs_repr(kwargs.get("mcp") or {})}
    raise task.retry(countdown=countdown * random.uniform(0.75, 1.25), max_retries=None, **options)


def _execute(task: Task[Any, Any], declared: Tool, arguments: dict[str, Any]) -> Any:
    """Run the tool for an MCP task, storing its result or error in the registry itself.

    What a Celery task returns or raises is what its events carry (``task-succeeded`` shows
    the return value, ``task-failed`` the exception and traceback) and so what Flower shows
    to whoever reaches it. So a call's outcome goes to the registry, and Celery only learns
    whether it succeeded: the string ``"completed"``, or ``ToolFailed`` naming no more than
    the exception's type."""
    task_id = getattr(task.request, "mcp_task_id", None)
    owner = getattr(task.request, "mcp_owner", None) or ""
    if task_id is None:
        # Published by something other than the bridge (Flower, a script): just run it.
        return to_call_tool_result(declared.call(arguments))
    registry = runtime.registry()
    settings = runtime.settings()
    worker = getattr(task.request, "hostname", None) or "unknown worker"
    # The pid lets an operator (and the tests) find the pool process running the task.
    holder = f"{worker} (pid {os.getpid()})"
    # One round trip checks the status and the owner's running tasks, takes the lease the
    # reaper watches, and announces the task "running on <holder>".
    status, runs, busy = registry.take_lease(
        task_id, owner, worker, holder, int(settings.lease_s * 1000), settings.max_runs
    )
    if status is None or status.terminal:
        # Cancelled (or expired) while queued, or already failed by the reaper before a late-
        # acked message came back: a cancel must not depend on a worker having heard the
        # revoke broadcast, so the worker checks the registry itself.
        monitor.ended(task, status, "dropped: the task had ended before this run")
        raise Ignore()
    if busy:
        _defer(task)
    if runs > settings.max_runs:
        message = f"gave up after {settings.max_runs} runs: the worker was lost each time"
        registry.transition(
            task_id,
            owner,
            TaskStatus.FAILED,
            message,
            error=execution_error("worker_lost", message, runs=runs - 1),
            log_level=logging.WARNING,
        )
        monitor.ended(task, TaskStatus.FAILED, message)
        raise Ignore()
    token = context._current.set(context.ToolContext(task_id, owner, declared.name, task))
    try:
        with Heartbeat(registry, task_id, settings.lease_s):
            result = to_call_tool_result(declared.call(arguments))
    except Ignore as exc:
        if isinstance(exc, context.TaskCancelled):  # a cancel the body noticed
            monitor.ended(task, TaskStatus.CANCELLED, "cancelled: the tool stopped at its check")
        raise
    except SoftTimeLimitExceeded:
        limit = task.soft_time_limit or settings.tool_time_limit_s
        message = f"stopped: the tool ran longer than its time limit ({limit:g} s)"
        error = execution_error("time_limit", message, limit_s=limit)
        registry.transition(task_id, owner, TaskStatus.FAILED, message, error=error)
        raise ToolFailed("time limit reached") from None
    except Exception as exc:
        # The tool raised: a tool result with isError (``completed`` in 2026-07-28).
        message = failure_message(exc)
        registry.transition(
            task_id, owner, TaskStatus.FAILED, message, result=error_result(message)
        )
        raise ToolFailed(f"the tool raised {type(exc).__name__}") from None
    finally:
        context._current.reset(token)
    if not record_result(task_id, owner, result):
        raise ToolFailed("the tool returned an error result")
    return "completed"


def record_result(task_id: str, owner: str, result: dict[str, Any]) -> bool:
    """Store a run's ``CallToolResult``: ``completed``, or ``failed`` when it is an error
    result or larger than ``max_result_bytes`` (False then)."""
    registry, settings = runtime.registry(), runtime.settings()
    size = len(json.dumps(result, separators=(",", ":"), default=str).encode())
    if size > settings.max_result_bytes:
        # Stored results live in Redis for the task's TTL: a limit keeps one call from
        # filling it. The call fails as a tool error the model can read.
        text = f"the tool's result is too large: {size} bytes (at most {settings.max_result_bytes})"
        result = error_result(text)
    if result.get("isError"):
        text = " ".join(c.get("text", "") for c in result.get("content", []) if isinstance(c, dict))
        registry.transition(
            task_id, owner, TaskStatus.FAILED, text or "the tool reported an error", result=result
        )
        return False
    registry.transition(task_id, owner, TaskStatus.COMPLETED, "completed", result=result)
    return True


#: Longest failure message kept: an exception's text may quote the call's arguments, and it
#: becomes the task's status message, its result and an event.
MAX_FAILURE_CHARS = 2_000


def failure_message(exc: BaseException) -> str:
    message = f"{type(exc).__name__}: {exc}"
    if len(message) > MAX_FAILURE_CHARS:
        message = message[:MAX_FAILURE_CHARS] + f"... ({len(message)} characters)"
    return message


def error_result(message: str) -> dict[str, Any]:
    return tool_error(message)
