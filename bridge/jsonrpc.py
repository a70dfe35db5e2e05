"""The JSON-RPC 2.0 wire: a request body read strictly, error objects, and JSON responses.

Every exception that reaches a client becomes a JSON-RPC error object in ``error_response``
and nowhere else: a ``McpError`` carries its code; anything else is logged and answered
``-32603 Internal error``, never a traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.responses import JSONResponse

from bridge import logs
from bridge.errors import INTERNAL_ERROR, PARSE_ERROR, HttpError, McpError

log = logging.getLogger("bridge.transport")

#: Deeper JSON is refused before anything reads it: no MCP message needs it, and Python's
#: own (de)serialisers give up near 1,000 levels.
MAX_DEPTH = 100


class JsonResponse(JSONResponse):
    # ASCII-only output: a string the bridge echoes can never fail to encode.
    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(body: bytes) -> Any:
    """The JSON-RPC message in ``body``: strict UTF-8 (no surrogates), no NaN/Infinity, at
    most ``MAX_DEPTH`` deep, no unpaired ``\\uD800``-style escapes."""
    try:
        message = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise HttpError(400, "Parse error", PARSE_ERROR) from None
    stack: list[tuple[Any, int]] = [(message, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise HttpError(400, f"Parse error: nested deeper than {MAX_DEPTH}", PARSE_ERROR)
        if isinstance(value, str):
            _utf8(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                _utf8(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return message


def _utf8(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise HttpError(400, "Parse error: unpaired surrogate", PARSE_ERROR) from None


def error_body(code: int, message: str, data: Any = None, id: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    body: dict[str, Any] = {"jsonrpc": "2.0", "error": error}
    if id is not None:
        # The schema types the id as string | integer, optional: leave it out when unknown.
        body["id"] = id
    return body


def error_response(exc: BaseException, id: Any) -> dict[str, Any]:
    if isinstance(exc, McpError):
        logs.annotate(error=exc.code)
        return error_body(exc.code, exc.message, exc.data, id)
    logs.annotate(error=INTERNAL_ERROR)
    log.exception("internal error answering request %r", id, exc_info=exc)
    return error_body(INTERNAL_ERROR, "Internal error", None, id)
