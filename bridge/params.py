"""Reading a request's ``params``: the checks every handler makes of the values it takes,
each failing as ``InvalidParams`` (-32602) with the parameter's name."""

from __future__ import annotations

from typing import Any

from mcp_celery_bridge.bridge.shared.errors import InvalidParams


def obj(value: Any, name: str, *, required: bool = False) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise InvalidParams(f"{name} must be an object")
    return value


def string(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidParams(f"{name} must be a non-empty string")
    return value
