"""``Mcp-Param-{Name}`` headers (2026-07-28, SEP-2243): tool arguments a client mirrors
into HTTP headers, so that an intermediary can route on them without reading the body.

A tool declares one by putting ``"x-mcp-header": "Region"`` on a top-level property of its
input schema (with the public tool API: ``Annotated[str, Field(json_schema_extra={"x-mcp-
header": "Region"})]``). A client calling it statelessly then sends ``Mcp-Param-Region``
with the argument's value, and the bridge checks that the two agree before anything runs:
an intermediary may have acted on the header while the bridge is about to act on the body.
A disagreement is a ``HeaderMismatch`` (-32020, HTTP 400). The rules are the transport
specification's: a null or absent argument needs no header; a header whose value is wrapped
as ``=?base64?...?=`` is decoded first (invalid Base64 is refused), any other is literal;
integers compare as numbers, booleans as ``true``/``false``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from mcp_celery_bridge.bridge.shared.errors import HeaderMismatch

ANNOTATION = "x-mcp-header"
#: An HTTP field name's characters (RFC 9110 ``token``).
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BASE64 = re.compile(r"^=\?base64\?(.*)\?=\Z", re.DOTALL)
_TYPES = {"string", "integer", "boolean"}


def declared(schema: Mapping[str, Any], tool: str) -> dict[str, str]:
    """The mirrored arguments of a tool's input schema: argument name -> header suffix.
    Raises ValueError for a declaration the specification forbids (a client must refuse
    such a tool, so the bridge refuses to serve it)."""
    found: dict[str, str] = {}
    properties = schema.get("properties")
    for name, prop in (properties if isinstance(properties, dict) else {}).items():
        if not isinstance(prop, dict) or ANNOTATION not in prop:
            continue
        suffix = prop[ANNOTATION]
        if not isinstance(suffix, str) or not _TOKEN.match(suffix):
            raise ValueError(f"tool {tool!r}: {ANNOTATION} of {name!r} is not a header name")
        if prop.get("type") not in _TYPES:
            raise ValueError(
                f"tool {tool!r}: {ANNOTATION} needs a string, integer or boolean, not {name!r}"
            )
        if suffix.lower() in (s.lower() for s in found.values()):
            raise ValueError(f"tool {tool!r}: {ANNOTATION} {suffix!r} is declared twice")
        found[name] = suffix
    return found


def check(headers: Mapping[str, str], mirrored: dict[str, str], arguments: Any) -> None:
    """Raise ``HeaderMismatch`` unless every mirrored argument's header agrees with it."""
    if not mirrored or not isinstance(arguments, dict):
        return
    for name, suffix in mirrored.items():
        value = arguments.get(name)
        header = headers.get(f"mcp-param-{suffix.lower()}")
        if value is None:
            continue  # nothing to mirror: a header, if any, says nothing the body does not
        if header is None:
            raise HeaderMismatch(f"Header mismatch: missing Mcp-Param-{suffix} header")
        if not _agrees(_decoded(header, suffix), value):
            raise HeaderMismatch(f"Header mismatch: Mcp-Param-{suffix} differs from {name}")


def _decoded(header: str, suffix: str) -> str:
    wrapped = _BASE64.match(header)
    if wrapped is None:
        return header
    try:
        return base64.b64decode(wrapped.group(1), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise HeaderMismatch(f"Header mismatch: Mcp-Param-{suffix} is not valid Base64") from None


def _agrees(text: str, value: Any) -> bool:
    if isinstance(value, bool):
        return text == ("true" if value else "false")
    if isinstance(value, int | float):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return isinstance(value, str) and text == value
