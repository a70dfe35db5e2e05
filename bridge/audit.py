"""The audit trail: one structured log line per task creation, cancel, result read and
failed lookup, with who asked. Logged on ``bridge.audit`` so operators can route it."""

from __future__ import annotations

import logging
from typing import Any

from bridge import logs
from bridge.protocol import Call

log = logging.getLogger("bridge.audit")


def audit(event: str, call: Call, **fields: Any) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    who: dict[str, Any] = {
        "principal": call.owner.removeprefix("principal:")
        if call.owner.startswith("principal:")
        else None,
        "session": call.session.id if call.session is not None else None,
    }
    log.info("%s", event, extra=logs.fields(audit=event, **who, request=call.request_id, **fields))
