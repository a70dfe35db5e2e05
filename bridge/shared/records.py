"""What the registry hands back: a task's status and record, a page of ``tasks/list``, and
the outcome of a transition.

A :class:`TaskRecord` is read from the task hash or from the compact JSON the Lua scripts put in
events and list pages (both declared in ``bridge.shared.schema``, with ``TaskStatus``); an
:class:`Outcome` from a transition script's reply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mcp_celery_bridge.bridge.shared.schema import TaskStatus

__all__ = ["Outcome", "Page", "TaskRecord", "TaskStatus"]


@dataclass(frozen=True)
class TaskRecord:
    id: str
    status: TaskStatus
    message: str
    created: int
    updated: int
    ttl: int | None
    poll: int
    owner: str = ""
    tool: str = ""
    celery_id: str = ""
    hidden: bool = False
    listed: bool = False
    #: The protocol era that made the task: "legacy" (2025-11-25) or "modern".
    era: str = ""
    worker: str = ""
    #: ``<worker> (pid <n>)`` of the latest run; on an event, of the run it announces.
    holder: str = ""
    #: The latest progress report, on records and on the events that announce one.
    progress: float | None = None
    total: float | None = None
    #: The ``progressToken`` of the ``tools/call`` that made the task, if it had one.
    progress_token: str | int | None = None
    #: Whether the caller can answer the tool's questions (it declared elicitation).
    can_ask: bool = False
    #: Questions asked and not answered yet (key -> request), from ``Keys.inputs``; on an
    #: event, the one question it announces.
    inputs: dict[str, Any] = field(default_factory=dict)
    #: On an event: keys of the questions it withdraws (unanswered, no longer wanted).
    withdrawn: tuple[str, ...] = ()
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> TaskRecord:
        return cls(
            id=h["id"],
            status=TaskStatus(h["status"]),
            message=h.get("message", ""),
            created=int(h["created"]),
            updated=int(h["updated"]),
            ttl=int(h["ttl"]) if h.get("ttl") else None,
            poll=int(h["poll"]),
            owner=h.get("owner", ""),
            tool=h.get("tool", ""),
            celery_id=h.get("celery_id", ""),
            hidden=h.get("hidden") == "1",
            listed=h.get("listed") == "1",
            era=h.get("era", ""),
            worker=h.get("worker", ""),
            holder=h.get("holder", ""),
            result=json.loads(h["result"]) if h.get("result") else None,
            error=json.loads(h["error"]) if h.get("error") else None,
            progress=float(h["progress"]) if h.get("progress") else None,
            total=float(h["total"]) if h.get("total") else None,
            progress_token=json.loads(h["ptoken"]) if h.get("ptoken") else None,
            can_ask=h.get("can_ask") == "1",
        )

    @classmethod
    def from_event(cls, d: dict[str, Any]) -> TaskRecord:
        """The compact form the Lua scripts put in events and list pages."""
        return cls(
            id=d["id"],
            status=TaskStatus(d["status"]),
            message=d.get("message") or "",
            created=int(d["created"]),
            updated=int(d["updated"]),
            ttl=int(d["ttl"]) if d.get("ttl") is not None else None,
            poll=int(d["poll"]),
            progress=float(d["progress"]) if d.get("progress") is not None else None,
            total=float(d["total"]) if d.get("total") is not None else None,
            progress_token=json.loads(d["ptoken"]) if d.get("ptoken") else None,
            inputs={d["input"]["key"]: d["input"]["request"]} if d.get("input") else {},
            withdrawn=tuple(str(k) for k in d.get("withdrawn") or ()),
            holder=str(d.get("holder") or ""),
        )


@dataclass(frozen=True)
class Page:
    tasks: list[TaskRecord]
    next_after: int | None


@dataclass(frozen=True)
class Outcome:
    applied: bool
    status: TaskStatus | None
    event_id: str
    #: The task's, when the transition applied (for its log line).
    tool: str = ""
    celery_id: str = ""
    owner: str = ""

    @classmethod
    def from_reply(cls, raw: list[Any]) -> Outcome:
        """A transition script's reply: ``[applied (0/1), status or "", event id or ""]``,
        then, when applied, ``tool, celery id, owner``."""
        applied = bool(int(raw[0]))
        status = TaskStatus(raw[1]) if raw[1] else None
        if not applied:
            return cls(False, status, str(raw[2]))
        return cls(True, status, str(raw[2]), str(raw[3]), str(raw[4]), str(raw[5]))
