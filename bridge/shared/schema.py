"""The one schema of a task, for Python and for the Lua scripts alike: the statuses (and which
are final), the fields of the task hash, the compact JSON of a task that events and list
pages carry, the event around it, a script's refusal at a limit, and the id of a question
sent to a client.

The Lua side is generated: ``lua_prelude()`` renders these as Lua constants and functions,
and ``bridge.shared.scripts`` prepends it to every script it loads, so no script spells a
status or builds an event itself (tests/test_task_schema.py holds them to it).
"""

from __future__ import annotations

import enum
from typing import Any


class TaskStatus(enum.StrEnum):
    #: From creation until the end: queued, running, reporting progress.
    WORKING = "working"
    #: The tool asked the client a question and waits for the answer.
    INPUT_REQUIRED = "input_required"
    #: Final: the tool's ``CallToolResult`` is stored.
    COMPLETED = "completed"
    #: Final: the tool failed, or its run did (a lost worker, a call not queued).
    FAILED = "failed"
    #: Final: cancelled by the client (or an operator) before it ended.
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


#: The final statuses: once a task has one, no transition changes it.
TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})

#: The task hash (``Keys.task``): every field a script or ``TaskRecord.from_hash`` reads.
TASK_FIELDS: dict[str, str] = {
    "id": "the task id",
    "owner": "what the task is bound to: ``session:<id>``, ``principal:<name>`` or ''",
    "tool": "the tool's name",
    "celery_id": "the Celery task id ('' for a task made only to report a failure)",
    "status": "a TaskStatus",
    "message": "the status message clients see",
    "created": "ms since the epoch, by the Redis clock",
    "updated": "ms since the epoch, by the Redis clock",
    "ttl": "ms the task is kept once final",
    "poll": "ms a client is told to wait between polls",
    "hidden": "'1' for the record behind a plain tool call, which no client can fetch",
    "listed": "'1' for a task in its owner's ``tasks/list`` index and event stream",
    "era": "the protocol era that made the task: 'legacy' or 'modern'",
    "seq": "its position in its owner's list",
    "ptoken": "the call's ``progressToken`` as JSON ('' for none)",
    "can_ask": "'1' when the caller declared elicitation",
    "worker": "the Celery worker that ran it (once one did)",
    "holder": "``<worker> (pid <n>)`` of the latest run (with its lease)",
    "runs": "how many times a worker started the tool body",
    "progress": "the latest progress reported",
    "total": "the total of that report ('' for none)",
    "result": "the CallToolResult as JSON",
    "error": "the JSON-RPC error as JSON",
}

#: The compact JSON of a task in events and list pages: these hash fields (True: a number).
VIEW_FIELDS: tuple[tuple[str, bool], ...] = (
    ("id", False),
    ("status", False),
    ("message", False),
    ("created", True),
    ("updated", True),
    ("ttl", True),
    ("poll", True),
)

#: What an event's task may carry beyond ``VIEW_FIELDS``, set by the change it announces.
EVENT_EXTRAS: dict[str, str] = {
    "input": "{key, request}: the question the tool asks",
    "withdrawn": "keys of the questions taken back (unanswered, no longer wanted)",
    "progress": "the progress reported (with ``total`` and ``ptoken``)",
    "total": "the total of that report",
    "ptoken": "the call's progressToken as JSON",
    "holder": "``<worker> (pid <n>)`` of the run this event announces as started",
}

#: An event, as published on ``Keys.owner_channel`` of its owner: ``{owner, id, task}`` where
#: ``id`` is its entry id in the owner's stream ("" when the task is not listed). The
#: stream entry holds the task's JSON under ``STREAM_FIELD``.
STREAM_FIELD = "task"

#: The first item of a script's reply that refuses a change at a limit: ``{"limit",
#: which, most}`` (``refusal`` reads it).
LIMIT_REPLY = "limit"


def refusal(reply: Any) -> tuple[str, int] | None:
    """``(which limit, its maximum)`` when ``reply`` is a script's refusal at a limit."""
    if isinstance(reply, list) and len(reply) == 3 and reply[0] == LIMIT_REPLY:
        return str(reply[1]), int(reply[2])
    return None


#: Questions are JSON-RPC requests to the client with ids ``mcp-input:<task id>:<key>``.
INPUT_ID_PREFIX = "mcp-input:"


def input_request_id(task_id: str, key: str) -> str:
    """The JSON-RPC id of question ``key`` of ``task_id``."""
    return f"{INPUT_ID_PREFIX}{task_id}:{key}"


def parse_input_request_id(request_id: Any) -> tuple[str, str] | None:
    """``(task id, key)`` of an id ``input_request_id`` made; None for any other id."""
    if not isinstance(request_id, str) or not request_id.startswith(INPUT_ID_PREFIX):
        return None
    task_id, sep, key = request_id.removeprefix(INPUT_ID_PREFIX).partition(":")
    return (task_id, key) if sep and task_id and key else None


def _lua_string(value: str) -> str:
    # Every byte not plainly printable as a decimal escape: a newline would end the string.
    return (
        "'"
        + "".join(
            c
            if c.isascii() and c.isprintable() and c not in "\\'"
            else "".join(f"\\{b:03d}" for b in c.encode())
            for c in value
        )
        + "'"
    )


def lua_prelude() -> str:
    """The Lua side of this schema; it is prepended to every script, so a script's line
    numbers in Redis errors are offset by ``lua_prelude().count("\\n")``."""
    statuses = ", ".join(f"{s.name} = {_lua_string(s.value)}" for s in TaskStatus)
    terminal = ", ".join(f"[{_lua_string(s.value)}] = true" for s in sorted(TERMINAL))
    names = ", ".join(_lua_string(name) for name, _ in VIEW_FIELDS)
    field = _lua_string(STREAM_FIELD)
    view = ", ".join(
        f"[{_lua_string(name)}] = tonumber(r[{i}])" if number else f"[{_lua_string(name)}] = r[{i}]"
        for i, (name, number) in enumerate(VIEW_FIELDS, 1)
    )
    return f"""\
-- Generated by bridge.shared.schema.lua_prelude (prepended to every script): edit it there.
local STATUS = {{{statuses}}}
local TERMINAL = {{{terminal}}}
-- Whether ``status`` (false or nil for a task that is gone) is final.
local function is_terminal(status)
  return status and TERMINAL[status] == true or false
end
-- Milliseconds since the epoch by the Redis server's clock, the one clock of the registry.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The task of hash ``key`` as events and list pages carry it; nil when the hash is gone.
local function task_view(key)
  local r = redis.call('HMGET', key, {names})
  if not r[1] then return nil end
  return {{{view}}}
end
-- Announce ``task`` (a task_view and what the change adds) of ``owner``: appended to
-- ``stream`` (about ``maxlen`` entries, kept ``ttl_ms``) when ``listed``, and published on
-- ``channel`` (the owner's: the bridges holding something of it) by command ``publish``
-- (PUBLISH, or SPUBLISH on a Redis Cluster). Returns the stream entry id ('' when none) and
-- the task JSON.
local function announce(task, owner, listed, stream, maxlen, ttl_ms, channel, publish)
  local body = cjson.encode(task)
  local event_id = ''
  if listed then
    event_id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', {field}, body)
    redis.call('PEXPIRE', stream, ttl_ms)
  end
  redis.call(publish, channel, cjson.encode({{owner = owner, id = event_id, task = task}}))
  return event_id, body
end
-- The reply refusing a change because limit ``which`` (at most ``most``) is reached.
local function refused(which, most)
  return {{{_lua_string(LIMIT_REPLY)}, which, tonumber(most)}}
end
"""
