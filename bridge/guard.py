"""Host and Origin allow-lists (DNS-rebinding protection), as pure ASGI middleware."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_celery_bridge.bridge.faults import Answering, fault_response
from mcp_celery_bridge.bridge.shared.errors import HttpError

#: Paths served whatever the Host: liveness probes come from orchestrators by pod address,
#: and ``/healthz`` answers nothing but "ok". ``/readyz`` (worker names) and ``/metrics``
#: (tools, counts) are checked like the MCP endpoint: a DNS-rebinding page must not read
#: them; a scraper or readiness probe sends an allowed Host (see docs/operations.md).
PROBES = frozenset({"/healthz"})


def _split(hostport: str) -> tuple[str, str] | None:
    """(host, port) of ``host[:port]``, or None when it is not of that form."""
    if hostport.startswith("["):
        host, bracket, rest = hostport.partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        host, port = host + "]", rest[1:]
    else:
        host, _, port = hostport.partition(":")
    if not host or ":" in port or (port and not port.isdigit() and port != "*"):
        return None
    return host, port


def matches(value: str, patterns: list[str]) -> bool:
    value = value.lower()
    for pattern in patterns:
        pattern = pattern.lower()
        if pattern == "*" or pattern == value:
            return True
        scheme = ""
        rest_p, rest_v = pattern, value
        if "://" in pattern:
            scheme, _, rest_p = pattern.partition("://")
            v_scheme, _, rest_v = value.partition("://")
            if v_scheme != scheme:
                continue
        pattern_parts, value_parts = _split(rest_p), _split(rest_v)
        if pattern_parts is None or value_parts is None or value_parts[1] == "*":
            continue
        (p_host, p_port), (v_host, v_port) = pattern_parts, value_parts
        if p_host == v_host and (p_port == "*" or p_port == v_port):
            return True
    return False


class HostOriginGuard:
    def __init__(self, app: ASGIApp, allowed_hosts: list[str], allowed_origins: list[str]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in PROBES:
            headers = Headers(scope=scope)
            host = headers.get("host", "")
            origin = headers.get("origin")
            refusal = None
            if not matches(host, self.allowed_hosts):
                refusal = HttpError(403, "Forbidden: Host not allowed")
            elif origin is not None and not matches(origin, self.allowed_origins):
                refusal = HttpError(403, "Forbidden: Origin not allowed")
            if refusal is not None:
                await fault_response(refusal, Answering())(scope, receive, send)
                return
        await self.app(scope, receive, send)
