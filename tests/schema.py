"""Validation of every server message against the official MCP JSON Schema."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SPEC = Path(__file__).parent / "spec"

RESULT_DEFS = {
    "initialize": "InitializeResult",
    "ping": "EmptyResult",
    "tools/list": "ListToolsResult",
    "tools/call": "CallToolResult",
    "tasks/get": "GetTaskResult",
    "tasks/list": "ListTasksResult",
    "tasks/cancel": "CancelTaskResult",
    "tasks/result": "CallToolResult",
}
NOTIFICATION_DEFS = {
    "notifications/tasks/status": "TaskStatusNotification",
    "notifications/progress": "ProgressNotification",
    "notifications/cancelled": "CancelledNotification",
}


@functools.cache
def _defs(revision: str) -> dict[str, Any]:
    doc = json.loads((SPEC / f"mcp-{revision}.schema.json").read_text())
    return dict(doc["$defs"])


@functools.cache
def validator(name: str, revision: str = "2025-11-25") -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": _defs(revision)})


def check(name: str, instance: Any, revision: str = "2025-11-25") -> None:
    errors = sorted(validator(name, revision).iter_errors(instance), key=str)
    assert not errors, f"{name} invalid: {errors[0].message} in {json.dumps(instance)[:500]}"


def check_response(method: str, message: dict[str, Any], *, task: bool = False) -> None:
    """A JSON-RPC response the server sent to ``method``."""
    if "error" in message:
        check("JSONRPCErrorResponse", message)
        return
    check("JSONRPCResultResponse", message)
    name = "CreateTaskResult" if task and method == "tools/call" else RESULT_DEFS[method]
    check(name, message["result"])
    if method == "tasks/result":
        check(
            "RelatedTaskMetadata",
            message["result"]["_meta"]["io.modelcontextprotocol/related-task"],
        )


def check_server_message(message: dict[str, Any]) -> None:
    """A message on a GET stream: a notification (or request) from the server."""
    if "id" in message and "method" in message:
        check("JSONRPCRequest", message)
        check("ServerRequest", message)
        return
    check("JSONRPCNotification", message)
    check("ServerNotification", message)
    name = NOTIFICATION_DEFS.get(message["method"])
    if name:
        check(name, message)


MODERN = "2026-07-28"
#: Messages of the tasks extension validate against its own schema, the rest against core.
_EXT_NAMES = frozenset(
    {
        "CreateTaskResult",
        "GetTaskResult",
        "CancelTaskResult",
        "UpdateTaskResult",
        "TaskStatusNotification",
        "DetailedTask",
    }
)


@functools.cache
def _ext_defs() -> dict[str, Any]:
    doc = json.loads((SPEC / "ext-tasks-draft.schema.json").read_text())
    return dict(doc["$defs"])


@functools.cache
def modern_validator(name: str) -> Draft202012Validator:
    defs = _ext_defs() if name in _EXT_NAMES else _defs(MODERN)
    return Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": defs})


def check_modern(name: str, instance: Any) -> None:
    errors = sorted(modern_validator(name).iter_errors(instance), key=str)
    assert not errors, f"{name} invalid: {errors[0].message} in {json.dumps(instance)[:500]}"


MODERN_RESULT_DEFS = {
    "server/discover": "DiscoverResult",
    "tools/list": "ListToolsResult",
    "tools/call": "CallToolResult",
    "tasks/get": "GetTaskResult",
    "tasks/update": "UpdateTaskResult",
    "tasks/cancel": "CancelTaskResult",
    "subscriptions/listen": "SubscriptionsListenResult",
}
MODERN_ERROR_DEFS = {
    -32020: "HeaderMismatchError",
    -32021: "MissingRequiredClientCapabilityError",
    -32022: "UnsupportedProtocolVersionError",
}


def check_modern_response(method: str, message: dict[str, Any]) -> None:
    """A response the server sent to a stateless (2026-07-28) request."""
    if "error" in message:
        check_modern("JSONRPCErrorResponse", message)
        special = MODERN_ERROR_DEFS.get(message["error"]["code"])
        if special:
            check_modern(special, message)
        return
    check_modern("JSONRPCResultResponse", message)
    result = message["result"]
    assert "resultType" in result, "every 2026-07-28 result carries resultType"
    if method == "tools/call" and result["resultType"] == "task":
        check_modern("CreateTaskResult", result)
    elif method == "tools/call" and result["resultType"] == "input_required":
        check_modern("InputRequiredResult", result)
    else:
        check_modern(MODERN_RESULT_DEFS[method], result)


def check_modern_notification(message: dict[str, Any]) -> None:
    check_modern("JSONRPCNotification", message)
    if message["method"] == "notifications/tasks":
        check_modern("TaskStatusNotification", message)
    else:
        check_modern("ServerNotification", message)
