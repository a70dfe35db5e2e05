"""``CallToolResult``s the bridge and the workers make themselves: a tool error (text the
model reads, ``isError``), and the result a record stands for when it holds none."""

from __future__ import annotations

from typing import Any


def tool_error(text: str) -> dict[str, Any]:
    """A ``CallToolResult`` reporting an error to the model."""
    return {"content": [{"type": "text", "text": text}], "isError": True}


def outcome(result: dict[str, Any] | None, message: str, fallback: str) -> dict[str, Any]:
    """A finished run's ``CallToolResult``: its stored ``result``, else a tool error saying
    its status ``message`` (or ``fallback`` when it has none)."""
    return result or tool_error(message or fallback)
