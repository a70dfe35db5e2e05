"""Opaque pagination cursors: a kind (``o`` an offset into the tools, ``t`` a place in an
owner's task list) and a position, base64url-encoded so clients treat them as tokens."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from mcp_celery_bridge.bridge.shared.errors import InvalidParams


def encode_cursor(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: Any) -> int:
    """The position in an opaque cursor made by ``encode_cursor(kind, ...)``."""
    if not isinstance(cursor, str) or len(cursor) > 64:
        raise InvalidParams("Invalid cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        number = int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidParams("Invalid cursor") from None
    if prefix != kind or number < 0 or not value.isdigit():
        raise InvalidParams("Invalid cursor")
    return number
