"""mcp-celery-bridge: an MCP server whose long-running tools run as Celery tasks.

Everything is under this one top-level name, so that a project with packages of its own
called ``bridge`` or ``workers`` (common names) installs and uses this one: the repository's
``bridge/`` (the HTTP/MCP side) and ``workers/`` (the Celery side) are the subpackages
``mcp_celery_bridge.bridge`` and ``mcp_celery_bridge.workers``. (In a checkout they are
symlinks here; the wheel holds the files.)

What a tool module needs is here too, imported when first used, as in
``mcp_celery_bridge.workers``: a process importing only the shared side, or a project's
worker importing only ``mcp_celery_bridge.workers.integration``, creates no Celery app::

    from mcp_celery_bridge import expose, tool
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp_celery_bridge.workers import (
        Answer,
        InputTimeout,
        InputUnavailable,
        TaskCancelled,
        Tool,
        ToolContext,
        current,
        expose,
        tool,
    )

__version__ = "0.1.0"
__all__ = [
    "Answer",
    "InputTimeout",
    "InputUnavailable",
    "TaskCancelled",
    "Tool",
    "ToolContext",
    "__version__",
    "current",
    "expose",
    "tool",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'mcp_celery_bridge' has no attribute {name!r}")
    return getattr(importlib.import_module("mcp_celery_bridge.workers"), name)
