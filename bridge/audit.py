"""The audit trail: one structured (JSON) log line per task creation, cancel, result read
and failed lookup, with who asked. Logged on ``bridge.audit`` so operators can route it."""

from __future__ import annotations

import json
import logging
from typing import Any

from bridge.protocol import Call

log = logging.getLogger("bridge.audit")


def audit(event: str, call: Call, **fields: Any) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    entry: dict[str, Any] = {
        "audit": event,
        "principal": call.owner.removeprefix("principal:")
        if call.owner.startswith("principal:")
        else None,
        "session": call.session.id if call.session is not None else None,
        "request": call.request_id,
        **fields,
    }
    log.info(json.dumps(entry, default=str, separators=(",", ":")))
