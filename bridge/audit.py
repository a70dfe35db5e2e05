"""The audit trail: one structured log line per task creation, cancel, result read and
failed lookup, with who asked (a client, or an operator using the CLI). Logged on
``bridge.audit`` so operators can route it."""

from __future__ import annotations

import getpass
import logging
import socket
from typing import Any

from mcp_celery_bridge.bridge.calls import Call
from mcp_celery_bridge.bridge.shared import logs

log = logging.getLogger("bridge.audit")


def audit(event: str, call: Call, **fields: Any) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    who: dict[str, Any] = logs.owner_fields(call.owner)
    if call.session is not None:
        who["session"] = call.session.id
    log.info("%s", event, extra=logs.fields(audit=event, **who, request=call.request_id, **fields))


def audit_operator(event: str, **fields: Any) -> None:
    """An operator's action through the CLI: the OS account and host stand for the caller."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    log.info(
        "%s",
        event,
        extra=logs.fields(audit=event, operator=f"{user}@{socket.gethostname()}", **fields),
    )
