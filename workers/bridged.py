"""Existing Celery tasks as MCP tools, their bodies unchanged.

Stack ``@tool`` on a project's task, or name one in a tool module::

    @tool(task_support="required")
    @app.task(bind=True)
    def build_report(self, rows: int) -> dict: ...

    expose("proj.tasks.build_report", task_support="required")
    expose("billing.invoice", name="invoice", input_schema={...})  # code not importable here

The input schema comes from the task function's signature and type hints (its bound
``self`` left out), or is given by hand; the bridge checks the arguments against it, then
publishes them as the task's keyword arguments, by its Celery name, through the project's
own Celery app (``MCP_BRIDGE_CELERY_APP``), so its routes, queues and serializer apply. The
project's workers run it; ``workers.integration`` (one import there) turns its run, its
``update_state`` progress, its retries and its end into the MCP task's life.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from celery import Task
from celery.local import Proxy
from celery.utils.imports import symbol_by_name

from mcp_celery_bridge.workers.tools import TaskSupport, Tool, add, model_for


def is_task(value: Any) -> bool:
    """A Celery task object, or the lazy proxy ``@shared_task`` returns."""
    return isinstance(value, Proxy | Task)


def declare(
    task: Any,
    *,
    name: str | None = None,
    description: str | None = None,
    task_support: TaskSupport = "optional",
    input_schema: dict[str, Any] | None = None,
    module: str = "",
    workflow: bool = False,
) -> Tool:
    """Register ``task`` (a task object, or the name of one) as the MCP tool ``name``."""
    if isinstance(task, str):
        task_name = task
        if input_schema is None:
            task = find(task)
            task_name = str(task.name)
        func: Any = task
    else:
        task_name = str(task.name)
        func = task
    if input_schema is not None:
        if input_schema.get("type") != "object":
            raise ValueError(f"tool for {task_name}: an input schema must be of type object")
        # Model only for the type checker's sake: a hand-given schema validates alone.
        model, takes_model = model_for(_no_arguments)
    else:
        # The bound ``self`` of ``bind=True`` is not in the signature of the task's ``run``.
        model, takes_model = model_for(task.run)
    declared = Tool(
        name=name or task_name.rsplit(".", 1)[-1],
        description=description
        if description is not None
        else inspect.cleandoc(_docstring(task) if not isinstance(task, str) else ""),
        task_support=task_support,
        model=model,
        func=func,
        takes_model=takes_model,
        task_name=task_name,
        schema=input_schema,
        module=module,
        workflow=workflow,
    )
    add(declared)
    return declared


def expose(
    task: Any,
    *,
    name: str | None = None,
    description: str | None = None,
    task_support: TaskSupport = "optional",
    input_schema: dict[str, Any] | None = None,
    workflow: bool = False,
) -> Tool:
    """Serve the existing Celery task ``task`` as an MCP tool, from a tool module.

    ``task`` is the task object (``from proj.tasks import build_report``), its import path
    (``"proj.tasks.build_report"`` or ``"proj.tasks:build_report"``), or, with
    ``input_schema`` given, just its Celery name: then nothing is imported and the bridge
    needs none of the task's code. ``name`` defaults to the task name's last part;
    ``description`` to the task's docstring. ``workflow``: the task starts a canvas and
    returns the id of its result (``chain(...).apply_async().id``, a chord's id, or a list
    of ids); the MCP task is then that canvas (``docs/workflows.md``)."""
    caller = sys._getframe(1).f_globals.get("__name__", "")
    return declare(
        task,
        name=name,
        description=description,
        task_support=task_support,
        input_schema=input_schema,
        module=str(caller),
        workflow=workflow,
    )


def find(path: str) -> Any:
    """The task object at import path ``path``."""
    try:
        found = symbol_by_name(path)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(
            f"cannot import the task {path!r} ({exc}): give its import path, or its Celery "
            "name together with input_schema"
        ) from exc
    if not is_task(found):
        raise ValueError(f"{path!r} is not a Celery task but {type(found).__name__}")
    return found


def _docstring(task: Any) -> str:
    run = getattr(task, "run", None)
    return str(getattr(run, "__doc__", None) or getattr(task, "__doc__", None) or "")


def _no_arguments() -> None:
    """No parameters: the tool's hand-given schema is what checks its arguments."""
