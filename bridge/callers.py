"""The MCP headers that say who calls, and the 2025-11-25 session a request names: found
only for the principal that made it (another's answers like an unknown one)."""

from __future__ import annotations

import re

from mcp_celery_bridge.bridge.auth import Principal
from mcp_celery_bridge.bridge.sessions import Session, Sessions

SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"
_SESSION_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


async def find_session(sessions: Sessions, sid: str, principal: Principal | None) -> Session | None:
    """The live session ``sid`` of ``principal`` (None: unknown, malformed, another's)."""
    if not _SESSION_ID.match(sid):
        return None
    subject = principal.subject if principal else ""
    session = await sessions.get(sid, subject)
    return session if session is not None and session.principal == subject else None
