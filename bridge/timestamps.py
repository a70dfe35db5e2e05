"""Timestamps on the wire: the registry's milliseconds as the ISO 8601 UTC strings both
eras render (``createdAt``, ``lastUpdatedAt``)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
