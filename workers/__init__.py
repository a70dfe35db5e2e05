"""mcp-celery-bridge: the Celery side. ``celery -A workers worker`` finds ``app`` here.

The names below are imported when first used, so that a project's worker importing only
``workers.integration`` never creates this package's own Celery app (a Celery app made
later becomes the process's current app, which ``@shared_task`` proxies resolve to)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.app import app
    from workers.bridged import expose
    from workers.context import (
        Answer,
        InputTimeout,
        InputUnavailable,
        TaskCancelled,
        ToolContext,
        current,
    )
    from workers.tools import Tool, catalogue, tool

_HOMES = {
    "app": "workers.app",
    "expose": "workers.bridged",
    "Answer": "workers.context",
    "InputTimeout": "workers.context",
    "InputUnavailable": "workers.context",
    "TaskCancelled": "workers.context",
    "ToolContext": "workers.context",
    "current": "workers.context",
    "Tool": "workers.tools",
    "catalogue": "workers.tools",
    "tool": "workers.tools",
}

__all__ = [
    "Answer",
    "InputTimeout",
    "InputUnavailable",
    "TaskCancelled",
    "Tool",
    "ToolContext",
    "app",
    "catalogue",
    "current",
    "expose",
    "tool",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'workers' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
