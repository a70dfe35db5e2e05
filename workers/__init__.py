"""mcp-celery-bridge: the Celery side. ``celery -A workers worker`` finds ``app`` here."""

from workers.app import app
from workers.context import (
    Answer,
    InputTimeout,
    InputUnavailable,
    TaskCancelled,
    ToolContext,
    current,
)
from workers.tools import Tool, catalogue, tool

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
    "tool",
]
