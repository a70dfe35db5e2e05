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
