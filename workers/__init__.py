"""mcp-celery-bridge: the Celery side. ``celery -A workers worker`` finds ``app`` here."""

from workers.app import app
from workers.context import TaskCancelled, ToolContext, current
from workers.tools import Tool, catalogue, tool

__all__ = ["TaskCancelled", "Tool", "ToolContext", "app", "catalogue", "current", "tool"]
