"""mcp-celery-bridge: the Celery side, ``mcp_celery_bridge.workers``. ``celery -A
mcp_celery_bridge.workers worker`` finds ``app`` here.

The names below are imported when first used, so that a project's worker importing only
``mcp_celery_bridge.workers.integration`` never creates this package's own Celery app (a
Celery app made later becomes the process's current app, which ``@shared_task`` proxies
resolve to)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp_celery_bridge.workers.app import app
    from mcp_celery_bridge.workers.bridged import expose
    from mcp_celery_bridge.workers.context import (
        Answer,
        InputTimeout,
        InputUnavailable,
        TaskCancelled,
        ToolContext,
        current,
    )
    from mcp_celery_bridge.workers.tools import Tool, catalogue, tool

_HOMES = {
    "app": "mcp_celery_bridge.workers.app",
    "expose": "mcp_celery_bridge.workers.bridged",
    "Answer": "mcp_celery_bridge.workers.context",
    "InputTimeout": "mcp_celery_bridge.workers.context",
    "InputUnavailable": "mcp_celery_bridge.workers.context",
    "TaskCancelled": "mcp_celery_bridge.workers.context",
    "ToolContext": "mcp_celery_bridge.workers.context",
    "current": "mcp_celery_bridge.workers.context",
    "Tool": "mcp_celery_bridge.workers.tools",
    "catalogue": "mcp_celery_bridge.workers.tools",
    "tool": "mcp_celery_bridge.workers.tools",
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
