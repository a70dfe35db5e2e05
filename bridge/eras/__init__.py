"""The protocol eras the endpoint speaks, one adapter each, and their registration.

An adapter owns everything one era does over HTTP: how it recognises its requests, its
method handlers, how it renders a task, how it streams, and which HTTP status carries each
error (its ``StatusPolicy``, set on ``bridge.faults.answering`` as it serves). It calls the
task service (``bridge.service``) and the tool catalogue, never the registry. The transport
(``bridge.transport``) reads a POSTed message, asks the adapters below in order which one
recognises it, and hands it over; GET and DELETE go to the first adapter that serves them
(405 when none does). The transport knows no era.

Adding an era touches two places: a new module ``bridge/eras/<name>.py`` with a class that
satisfies ``Era`` (its constructor takes the ``Parts``), and its line in ``ERAS`` below,
placed before the adapters whose requests would also match it (the legacy adapter, last,
takes whatever no other recognises). The versions it speaks join ``Parts.versions``,
which ``server/discover`` and the unsupported-version error announce.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from mcp_celery_bridge.bridge.catalogue import Catalogue
from mcp_celery_bridge.bridge.eras.legacy import LegacyEra
from mcp_celery_bridge.bridge.eras.modern import ModernEra
from mcp_celery_bridge.bridge.events import EventHub
from mcp_celery_bridge.bridge.jsonrpc import Message
from mcp_celery_bridge.bridge.request_state import RequestStates
from mcp_celery_bridge.bridge.service import TaskService
from mcp_celery_bridge.bridge.sessions import Sessions
from mcp_celery_bridge.bridge.shared.settings import Settings


@dataclass(frozen=True)
class Parts:
    """What an adapter is built from: the app's services, shared by every era."""

    settings: Settings
    tasks: TaskService
    catalogue: Catalogue
    hub: EventHub
    sessions: Sessions
    states: RequestStates
    #: Every version of every registered era, in registration order (``build`` fills it).
    versions: tuple[str, ...] = ()


class Era(Protocol):
    #: The era's name in logs and metrics (legacy | modern).
    name: str
    #: The protocol versions it speaks, newest first.
    versions: ClassVar[tuple[str, ...]]

    def recognises(self, message: dict[str, Any], headers: Headers) -> bool:
        """Whether a POSTed JSON-RPC message is this era's."""

    async def post(self, request: Request, message: Message) -> Response:
        """Serve a message this era recognised (a request, a notification, a response)."""

    async def get(self, request: Request) -> Response | None:
        """Serve a GET, or None when it is none of this era's."""

    async def delete(self, request: Request) -> Response | None:
        """Serve a DELETE, or None when it is none of this era's."""


class EraClass(Protocol):
    @property
    def versions(self) -> tuple[str, ...]: ...

    def __call__(self, parts: Parts) -> Era: ...


#: The registered eras, in the order the transport asks them.
ERAS: tuple[EraClass, ...] = (ModernEra, LegacyEra)


def build(parts: Parts) -> list[Era]:
    """The adapters of the registered eras, in order."""
    versions = tuple(v for era in ERAS for v in era.versions)
    parts = replace(parts, versions=versions)
    return [era(parts) for era in ERAS]
