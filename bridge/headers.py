"""Request header values without their optional whitespace, as pure ASGI middleware.

RFC 9110 §5.5: the optional whitespace (spaces and tabs) around a field value is not part of
it. Servers differ in what they strip (httptools keeps trailing spaces, h11 strips both), so
the bridge trims every value once, before anything reads it: ``Mcp-Name: echo  `` names
``echo`` for the header checks, the session lookup, ``Last-Event-ID`` and authentication
alike.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

_OWS = b" \t"


class TrimmedHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["headers"] = [(name, value.strip(_OWS)) for name, value in scope["headers"]]
        await self.app(scope, receive, send)
