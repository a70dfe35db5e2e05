"""The 2026-07-28 era over HTTP: stateless requests carrying their version and
capabilities in ``_meta`` (or naming a stateless version in ``MCP-Protocol-Version``),
checked against their mirrored headers before anything runs. No sessions: GET and DELETE
are none of its own, and a client sends no responses. A request may name a 2025-11-25
session in ``Mcp-Session-Id`` to reach that session's tasks. Its methods are
``bridge.eras.modern_methods``.

Errors use the spec's HTTP statuses (``STATUS``); any other JSON-RPC error is HTTP 200.
Closing a streamed answer cancels the call.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from mcp_celery_bridge.bridge.callers import SESSION_HEADER, VERSION_HEADER, find_session
from mcp_celery_bridge.bridge.eras.modern_methods import (
    ERA,
    MODERN_VERSIONS,
    TASK_METHODS,
    ModernMethods,
)
from mcp_celery_bridge.bridge.faults import answering
from mcp_celery_bridge.bridge.jsonrpc import JsonResponse, Message
from mcp_celery_bridge.bridge.pipeline import accepts, principal
from mcp_celery_bridge.bridge.sessions import Session
from mcp_celery_bridge.bridge.shared.errors import (
    HeaderMismatch,
    HttpError,
    InvalidMeta,
    LimitExceeded,
    MethodNotFound,
    MissingCapability,
    UnsupportedVersion,
)
from mcp_celery_bridge.bridge.streams import sse, streamed_answer

if TYPE_CHECKING:
    from mcp_celery_bridge.bridge.eras import Parts

META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
#: Methods whose ``Mcp-Name`` header mirrors a body field.
NAME_FIELDS = {
    "tools/call": "name",
    "tasks/get": "taskId",
    "tasks/update": "taskId",
    "tasks/cancel": "taskId",
}
#: Methods that look tasks up by id (and may see the named session's).
TASK_LOOKUPS = frozenset({"tasks/get", "tasks/update", "tasks/cancel", "subscriptions/listen"})
#: The HTTP status of an answer carrying each error (the most specific class counts); the
#: 2026-07-28 schema says "MUST be 400" for -32020, -32021 and -32022.
STATUS: dict[type[BaseException], int] = {
    MethodNotFound: 404,
    InvalidMeta: 400,
    LimitExceeded: 429,
    HeaderMismatch: 400,
    MissingCapability: 400,
    UnsupportedVersion: 400,
}


def http_status(exc: BaseException) -> int:
    """This era's status for ``exc`` answered as a JSON-RPC error."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 200


def is_modern(params: Any, version_header: str | None) -> bool:
    """Whether a POSTed message speaks the stateless era (or claims to)."""
    meta = params.get("_meta") if isinstance(params, dict) else None
    return (isinstance(meta, dict) and META_VERSION in meta) or version_header in MODERN_VERSIONS


def _decode_header(value: str) -> str:
    if value.startswith("=?base64?") and value.endswith("?=") and len(value) >= 11:
        try:
            return base64.b64decode(value[9:-2], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise HeaderMismatch("Header mismatch: malformed base64 header value") from None
    return value


def check_request(
    headers: Mapping[str, str], method: str, params: dict[str, Any], supported: tuple[str, ...]
) -> dict[str, Any]:
    """Validate a stateless request's ``_meta`` and mirrored headers, in the order the
    spec gives its errors; returns the client capabilities."""
    meta = params.get("_meta")
    if not isinstance(meta, dict):
        raise InvalidMeta("params._meta is required")
    version = meta.get(META_VERSION)
    capabilities = meta.get(META_CAPABILITIES)
    if not isinstance(version, str) or not isinstance(capabilities, dict):
        raise InvalidMeta(f"params._meta needs {META_VERSION} and {META_CAPABILITIES}")
    header_version = headers.get("mcp-protocol-version")
    if header_version is None:
        raise HeaderMismatch("Header mismatch: missing MCP-Protocol-Version header")
    if header_version != version:
        raise HeaderMismatch(
            f"Header mismatch: MCP-Protocol-Version {header_version!r} differs from "
            f"_meta version {version!r}"
        )
    if version not in MODERN_VERSIONS:
        raise UnsupportedVersion(
            "Unsupported protocol version",
            {"supported": list(supported), "requested": version},
        )
    header_method = headers.get("mcp-method")
    if header_method != method:
        raise HeaderMismatch(
            "Header mismatch: missing Mcp-Method header"
            if header_method is None
            else f"Header mismatch: Mcp-Method {header_method!r} differs from {method!r}"
        )
    field = NAME_FIELDS.get(method)
    if field is not None and isinstance(params.get(field), str):
        header_name = headers.get("mcp-name")
        if header_name is None and method in TASK_METHODS:
            # The tasks extension asks clients for Mcp-Name on tasks/*, but fastmcp-tasks
            # 4.1.4 omits it. We route nothing by it, so a missing one is tolerated there;
            # a mismatched one (what could mislead an intermediary) is still refused.
            return capabilities
        if header_name is None:
            raise HeaderMismatch("Header mismatch: missing Mcp-Name header")
        if _decode_header(header_name) != params[field]:
            raise HeaderMismatch(f"Header mismatch: Mcp-Name differs from params.{field}")
    return capabilities


class ModernEra:
    name = ERA
    versions: ClassVar[tuple[str, ...]] = MODERN_VERSIONS

    def __init__(self, parts: Parts) -> None:
        self.settings = parts.settings
        self.sessions = parts.sessions
        self.supported = parts.versions
        self.methods = ModernMethods(parts.tasks, parts.catalogue, parts.states, parts.versions)

    def recognises(self, message: dict[str, Any], headers: Headers) -> bool:
        return is_modern(message.get("params"), headers.get(VERSION_HEADER))

    async def _named_session(self, request: Request) -> Session | None:
        """The live session a stateless request names in ``Mcp-Session-Id``, if any. The era
        has no sessions and ignores the header otherwise; it only lets a client that still
        holds its session reach that session's tasks (the tasks extension asks dual-era
        servers to allow ``tasks/get`` and ``tasks/cancel`` on legacy tasks)."""
        sid = request.headers.get(SESSION_HEADER)
        if not sid:
            return None
        return await find_session(self.sessions, sid, await principal(request))

    async def post(self, request: Request, message: Message) -> Response:
        answering(request).status = http_status
        if message.method is None:
            raise HttpError(400, "Invalid Request: clients send no responses in 2026-07-28")
        if message.id is None:
            # This revision defines no client notifications over HTTP (closing a response
            # stream is the cancellation): accept and ignore.
            return Response(status_code=202)
        method, params = message.method, message.params
        if not isinstance(params, dict):
            raise InvalidMeta("params with _meta are required")
        found = await principal(request)
        owner = found.owner if found else ""
        capabilities = check_request(request.headers, method, params, self.supported)
        call = self.methods.call(request.headers, method, params, message.id, owner, capabilities)
        if method in TASK_LOOKUPS:
            call = replace(call, session=await self._named_session(request))
        ping = self.settings.sse_ping_s
        if method == "subscriptions/listen":
            task_ids = await self.methods.listen_filter(call, params)
            return sse(self.methods.listen(call, task_ids), ping)
        handler = self.methods.handlers[method]
        _, sse_ok = accepts(request.headers)
        if sse_ok and self.methods.is_slow(call, method, params):
            # Closing this stream cancels the call (the 2026-07-28 rule).
            return sse(streamed_answer(handler, call, params), ping)
        result = await handler(call, params)
        return JsonResponse({"jsonrpc": "2.0", "id": message.id, "result": result})

    async def get(self, request: Request) -> Response | None:
        return None

    async def delete(self, request: Request) -> Response | None:
        return None
