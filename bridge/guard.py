"""Host and Origin allow-lists (DNS-rebinding protection), as pure ASGI middleware."""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send


def _split(hostport: str) -> tuple[str, str]:
    if hostport.startswith("["):
        host, _, rest = hostport.partition("]")
        return host + "]", rest.removeprefix(":")
    host, _, port = hostport.partition(":")
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
        p_host, p_port = _split(rest_p)
        v_host, v_port = _split(rest_v)
        if p_host == v_host and (p_port == "*" or p_port == v_port):
            return True
    return False


class HostOriginGuard:
    def __init__(self, app: ASGIApp, allowed_hosts: list[str], allowed_origins: list[str]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            host = headers.get("host", "")
            origin = headers.get("origin")
            if not matches(host, self.allowed_hosts):
                await _forbid(send, "Forbidden: Host not allowed")
                return
            if origin is not None and not matches(origin, self.allowed_origins):
                await _forbid(send, "Forbidden: Origin not allowed")
                return
        await self.app(scope, receive, send)


async def _forbid(send: Send, message: str) -> None:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
