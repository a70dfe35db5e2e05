"""What both protocol eras share: who is calling, parameter checks, cursors, timestamps.

Handlers never see HTTP; they raise ``JsonRpcError`` subclasses, which the transport turns
into JSON-RPC errors in one place."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from bridge import __version__
from bridge.sessions import Session
from bridge.shared.errors import InvalidParams
from bridge.shared.records import TaskRecord

#: Versions negotiated with ``initialize`` (sessions), newest first.
LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
#: Versions spoken statelessly, with per-request ``_meta``.
MODERN_VERSIONS = ("2026-07-28",)
SERVER_INFO = {"name": "mcp-celery-bridge", "version": __version__}
INSTRUCTIONS = (
    "Long-running tools run as tasks on Celery workers: create a task, then poll tasks/get "
    "(or listen for its notifications) until it is terminal."
)


@dataclass(frozen=True)
class Call:
    """Who is asking, in which request.

    ``owner`` is what tasks are bound to: the session (legacy era), the authenticated
    principal, or "" when there is neither, in which case a task id is a bearer capability.
    """

    owner: str
    request_id: str | int
    session: Session | None = None
    client_capabilities: dict[str, Any] = field(default_factory=dict)
    #: Sends a message on this request's own response stream, ahead of its answer (set
    #: when the answer is streamed as SSE; None when it goes out as plain JSON).
    notify: Callable[[dict[str, Any]], None] | None = field(default=None, compare=False)


Handler = Callable[[Call, dict[str, Any]], Awaitable[dict[str, Any]]]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def encode_cursor(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: Any) -> int:
    """The position in an opaque cursor made by ``encode_cursor(kind, ...)``."""
    if not isinstance(cursor, str) or len(cursor) > 64:
        raise InvalidParams("Invalid cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        number = int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidParams("Invalid cursor") from None
    if prefix != kind or number < 0 or not value.isdigit():
        raise InvalidParams("Invalid cursor")
    return number


def obj(value: Any, name: str, *, required: bool = False) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise InvalidParams(f"{name} must be an object")
    return value


def string(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidParams(f"{name} must be a non-empty string")
    return value


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


def tool_error(text: str) -> dict[str, Any]:
    """A ``CallToolResult`` reporting an error to the model."""
    return {"content": [{"type": "text", "text": text}], "isError": True}


def explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def tool_definition(declared: Any, *, with_execution: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": declared.name, "inputSchema": declared.input_schema}
    if declared.description:
        entry["description"] = declared.description
    if with_execution:
        entry["execution"] = {"taskSupport": declared.task_support}
    return entry


def non_finite(arguments: Any) -> str | None:
    """Where ``arguments`` hold a NaN or an infinity (a dotted path), else None. JSON has no
    such numbers (``bridge.jsonrpc`` refuses ``NaN`` and ``Infinity``), but a number beyond
    a float's range, ``1e400``, parses to infinity; a tool handed one may loop forever
    (``seconds=inf``), and no schema type says "finite". Iterative, so a deeply nested value
    cannot exhaust the stack."""
    stack: list[tuple[str, Any]] = [("", arguments)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return where or "arguments"
        if isinstance(value, dict):
            stack.extend((f"{where}.{key}" if where else str(key), v) for key, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}.{i}" if where else str(i), v) for i, v in enumerate(value))
    return None
