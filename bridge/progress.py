"""Progress reports: a request's ``progressToken`` and the ``notifications/progress`` a
task's reports become, for a task's whole life or a plain call's response stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp_celery_bridge.bridge.calls import Call
from mcp_celery_bridge.bridge.shared.records import TaskRecord


def progress_token(params: dict[str, Any]) -> str | int | None:
    """The request's ``_meta.progressToken``, if it asked for progress."""
    meta = params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    return token if isinstance(token, str | int) and not isinstance(token, bool) else None


def progress_notification(token: str | int, record: TaskRecord) -> dict[str, Any]:
    """``notifications/progress`` for ``token`` with the record's latest report."""
    params: dict[str, Any] = {"progressToken": token, "progress": record.progress}
    if record.total is not None:
        params["total"] = record.total
    if record.message:
        params["message"] = record.message
    return {"jsonrpc": "2.0", "method": "notifications/progress", "params": params}


def progress_reporter(call: Call, params: dict[str, Any]) -> Callable[[TaskRecord], None] | None:
    """What a plain call reports its progress through: each increase of the record's
    progress becomes a ``notifications/progress`` on the call's response stream (None when
    the request asked for no progress, or its answer is not streamed)."""
    token = progress_token(params)
    notify = call.notify
    if token is None or notify is None:
        return None
    last = float("-inf")

    def report(record: TaskRecord) -> None:
        nonlocal last
        if record.progress is not None and record.progress > last and not record.status.terminal:
            last = record.progress
            notify(progress_notification(token, record))

    return report
