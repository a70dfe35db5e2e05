"""Who is asking, in which request (``Call``), and the shape of a method handler.

Handlers never see HTTP: they take a ``Call`` and the request's params, and return its
result or raise a ``JsonRpcError`` subclass, which ``bridge.faults`` turns into the answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mcp_celery_bridge.bridge.sessions import Session


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
