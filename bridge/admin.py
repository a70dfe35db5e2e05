"""Operator commands: ``tasks list|show|cancel`` and ``sessions list``.

They read the registry in Redis directly (``bridge.shared.keys``), so they need no MCP session and
see every owner's tasks. Settings come from the environment, as for ``serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from rich.text import Text

from mcp_celery_bridge.bridge.audit import audit_operator
from mcp_celery_bridge.bridge.audit import log as audit_log
from mcp_celery_bridge.bridge.console import (
    ago,
    console,
    iso,
    print_fields,
    print_json,
    print_table,
    span,
)
from mcp_celery_bridge.bridge.events import EventHub
from mcp_celery_bridge.bridge.publisher import Publisher
from mcp_celery_bridge.bridge.scan import collect
from mcp_celery_bridge.bridge.service import TaskService
from mcp_celery_bridge.bridge.shared import logs
from mcp_celery_bridge.bridge.shared.clients import (
    REDIS_ERRORS,
    async_client,
    shown,
    sync_client,
)
from mcp_celery_bridge.bridge.shared.errors import BridgeError
from mcp_celery_bridge.bridge.shared.keys import Keys
from mcp_celery_bridge.bridge.shared.logs import printable
from mcp_celery_bridge.bridge.shared.records import TaskRecord, TaskStatus
from mcp_celery_bridge.bridge.shared.registry import Registry
from mcp_celery_bridge.bridge.shared.settings import Settings

#: How long ``tasks show`` waits for workers to answer ``inspect().active()``.
INSPECT_TIMEOUT_S = 1.0
MESSAGE_WIDTH = 40
#: Terminal columns from which `tasks list` shows whole owners and the worker column.
WIDE_TABLE = 160


def _short_owner(owner: str) -> str:
    """``session:5e98d6f9…`` for a table: the kind and enough of the id to tell owners apart
    (``--json`` and `tasks show` have it whole)."""
    kind, sep, name = owner.partition(":")
    return owner if not sep or len(name) <= 12 else f"{kind}:{name[:8]}…"


OPERATOR_CANCEL = "cancelled by an operator"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
T = TypeVar("T")


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``30s``, ``5m``, ``2h``, ``1d``, ``250ms`` (a bare number is seconds), as seconds."""
    if value is None:
        return None
    match = _DURATION.match(value)
    if match is None:
        raise click.BadParameter(f"{value!r} is not a duration like 30s, 5m, 2h or 1d")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


_DURATION_OPT: dict[str, Any] = {"callback": _duration, "metavar": "DURATION"}
_LIMIT = click.option(
    "--limit", type=click.IntRange(min=0), default=50, show_default=True, help="0: no limit."
)
_JSON = click.option("--json", "as_json", is_flag=True, help="JSON for scripts, not a table.")


# -- plumbing --------------------------------------------------------------------------------
def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid MCP_BRIDGE_* settings: {exc}") from exc


@contextlib.contextmanager
def _redis_errors(settings: Settings) -> Iterator[None]:
    """An unreachable Redis is an operator-facing message, not a traceback."""
    try:
        yield
    except (*REDIS_ERRORS, BridgeError) as exc:
        raise click.ClickException(f"Redis at {shown(settings.redis_url)}: {exc}") from exc


def _collect(
    settings: Settings,
    kind: str,
    limit: int,
    parse: Callable[[str, dict[str, str], int], T | None],
) -> tuple[list[T], bool]:
    """``bridge.scan.collect`` on a client of its own, Redis faults made operator errors."""
    with _redis_errors(settings):
        client = sync_client(settings.redis_url, ca_file=settings.redis_ca_file)
        with contextlib.closing(client):
            return collect(client, Keys.of(settings), kind, limit, parse)


# -- tasks -----------------------------------------------------------------------------------
@click.group()
def tasks() -> None:
    """Inspect and cancel MCP tasks in the registry (all owners)."""


def _read_task(settings: Settings, task_id: str) -> tuple[TaskRecord, dict[str, str], int]:
    """The record with its pending questions, its raw hash and its key's PTTL, in one round
    trip; an unknown id is an operator error (exit code 1)."""
    keys = Keys.of(settings)
    # A ':' would name a sub-key (`<id>:inputs`), not a task.
    if task_id and ":" not in task_id:
        with _redis_errors(settings):
            client = sync_client(settings.redis_url, ca_file=settings.redis_ca_file)
        # One MULTI: the record, its questions and its expiry as of one instant.
        with _redis_errors(settings), contextlib.closing(client), client.pipeline() as pipe:
            # (On a Cluster the three keys share a slot, so MULTI holds there too.)
            pipe.hgetall(keys.task(task_id))
            pipe.hgetall(keys.inputs(task_id))
            pipe.pttl(keys.task(task_id))
            raw, inputs, pttl = pipe.execute()
        if raw:
            record = TaskRecord.from_hash(raw)
            record.inputs.update({key: json.loads(value) for key, value in inputs.items()})
            return record, raw, int(pttl)
    raise click.ClickException(f"no task {task_id} in the registry ({settings.key_prefix})")


def _task_summary(record: TaskRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "status": record.status.value,
        "tool": record.tool,
        "owner": record.owner,
        "created": iso(record.created),
        "updated": iso(record.updated),
        "worker": record.worker or None,
        "statusMessage": record.message,
        "plainCall": record.hidden,
    }


@tasks.command("list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in TaskStatus]),
    help="Only tasks in this status (repeatable).",
)
@click.option("--tool", "tools", multiple=True, help="Only tasks of this tool (repeatable).")
@click.option("--owner", help="Only this owner: session:<id>, principal:<name>, or the bare part.")
@click.option("--older-than", **_DURATION_OPT, help="Created more than this long ago (5m, 2h).")
@click.option("--newer-than", **_DURATION_OPT, help="Created less than this long ago (30s, 1d).")
@_LIMIT
@_JSON
def list_tasks(
    statuses: tuple[str, ...],
    tools: tuple[str, ...],
    owner: str | None,
    older_than: float | None,
    newer_than: float | None,
    limit: int,
    as_json: bool,
) -> None:
    """List tasks, newest first.

    There is no global index of tasks: this SCANs the registry's task keys and stops once
    LIMIT matching tasks are found, so with a limit the tasks shown are the first found, not
    necessarily the newest (the output says when the limit was reached). Use filters or
    --limit 0 to see everything; a full scan costs one pass over the Redis keyspace.
    """
    settings = _settings()
    now_ms = int(time.time() * 1000)
    filters: list[Callable[[TaskRecord], bool]] = []
    if statuses:
        filters.append(lambda r: r.status.value in statuses)
    if tools:
        filters.append(lambda r: r.tool in tools)
    if owner:
        # `alice` finds `principal:alice`, a bare session id finds `session:<id>`.
        filters.append(lambda r: owner in (r.owner, r.owner.partition(":")[2]))
    if older_than is not None:
        filters.append(lambda r: r.created <= now_ms - older_than * 1000)
    if newer_than is not None:
        filters.append(lambda r: r.created >= now_ms - newer_than * 1000)

    def keep(_: str, h: dict[str, str], __: int) -> TaskRecord | None:
        try:
            record = TaskRecord.from_hash(h)
        except (KeyError, ValueError):
            return None  # not a task record
        return record if all(check(record) for check in filters) else None

    found, limit_reached = _collect(settings, "task", limit, keep)
    found.sort(key=lambda r: r.created, reverse=True)
    if as_json:
        summaries = [_task_summary(r) for r in found]
        print_json({"tasks": summaries, "limit": limit, "limitReached": limit_reached})
        return
    now_ms = int(time.time() * 1000)
    colour = {"working": "yellow", "input_required": "magenta", "completed": "green"}
    # On a narrow terminal the owner is shortened and the worker left to `tasks show`, so
    # the statusMessage keeps its room (task ids stay whole: they are what one copies).
    wide = console().width >= WIDE_TABLE
    rows: list[list[str | Text]] = []
    for r in found:
        message = r.message
        if len(message) > MESSAGE_WIDTH:
            message = message[: MESSAGE_WIDTH - 1] + "…"
        when = [ago(r.created, now_ms), ago(r.updated, now_ms)] if wide else []
        rows.append(
            [
                r.id,
                Text(r.status.value, style=colour.get(r.status.value, "red")),
                r.tool + (" (plain call)" if r.hidden else ""),
                r.owner if wide else _short_owner(r.owner),
                *when,
                *([r.worker] if wide else [ago(r.updated, now_ms)]),
                message,
            ]
        )
    more = f"; limit {limit} reached, more may match" if limit_reached else ""
    # Narrow: the time since the last change only ("idle"), and the owner never folded.
    times = ["age", "changed", "worker"] if wide else ["idle"]
    columns = ["task id", "status", "tool", "owner", *times, "statusMessage" if wide else "message"]
    title = f"MCP tasks ({settings.key_prefix})"
    caption = f"{len(found)} task(s){more}"
    fold = {"owner", "statusMessage"} if wide else {"message"}
    print_table(title, columns, rows, caption, fold)


def _celery_view(settings: Settings, celery_id: str) -> dict[str, Any]:
    """What Celery knows of the call: the result backend's state (tools ignore results, so
    usually PENDING, Celery's word for "no record") and the worker running it, if any."""
    view: dict[str, Any] = {"celery_id": celery_id or None}
    if not celery_id:
        return view  # a task that failed validation was never queued
    publisher = Publisher(settings)
    try:
        view["backend_state"] = publisher.celery.AsyncResult(celery_id).state
        replies = publisher.celery.control.inspect(timeout=INSPECT_TIMEOUT_S).active()
    except Exception as exc:  # any broker or backend fault: the MCP view still stands
        view["error"] = f"{type(exc).__name__}: {exc}"
        return view
    finally:
        publisher.close()
    view["workers_answered"] = sorted(replies or {})
    view["active_on"] = None
    for worker_name, active in (replies or {}).items():
        for request in active:
            if request.get("id") == celery_id:
                view["active_on"] = {"worker": worker_name, "pid": request.get("worker_pid")}
    return view


def _mcp_view(record: TaskRecord, raw: dict[str, str], pttl: int, now_ms: int) -> dict[str, Any]:
    end = record.updated if record.status.terminal else now_ms
    return {
        **_task_summary(record),
        "elapsed_s": round((end - record.created) / 1000, 3),
        "ttl_ms": record.ttl,
        # The key's own expiry: none while the task runs, its ttl once it is final.
        "expires_in_s": round(pttl / 1000, 3) if pttl >= 0 else None,
        "holder": raw.get("holder") or None,
        "runs": int(raw["runs"]) if raw.get("runs") else 0,
        "progress": record.progress,
        "total": record.total,
        "result": record.result,
        "error": record.error,
        "pendingInputs": record.inputs,
    }


@tasks.command("show")
@click.argument("task_id")
@_JSON
def show_task(task_id: str, as_json: bool) -> None:
    """Show one task: its MCP record beside what Celery knows of it."""
    settings = _settings()
    record, raw, pttl = _read_task(settings, task_id)
    view = {
        "mcp": _mcp_view(record, raw, int(pttl), int(time.time() * 1000)),
        "celery": _celery_view(settings, record.celery_id),
    }
    if as_json:
        print_json(view)
        return
    print_fields(
        {
            title: {name: _show_value(name, value) for name, value in part.items()}
            for title, part in (("MCP", view["mcp"]), ("Celery", view["celery"]))
        }
    )


def _show_value(name: str, value: Any) -> str:
    if name == "backend_state" and value == "PENDING":
        return "PENDING (nothing stored: tools ignore Celery results)"
    if name == "active_on":
        return (
            f"{value['worker']} (pid {value['pid']})" if value else "not on a worker that answered"
        )
    if name == "workers_answered":
        return ", ".join(value) or "none within 1 s"
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2) if value else "-"
    return "-" if value is None or value == "" else str(value)


async def _cancel(settings: Settings, record: TaskRecord, message: str) -> TaskRecord:
    client = async_client(settings.redis_url, ca_file=settings.redis_ca_file)
    publisher = Publisher(settings)
    try:
        registry = Registry(settings, client)
        # TaskService.cancel uses only the registry and the publisher; the hub (never
        # started, so no pub/sub connection) is there to build it.
        ops = TaskService(settings, registry, publisher, EventHub(settings, client))
        return await ops.cancel(record, message)
    finally:
        publisher.close()
        await client.aclose()


@tasks.command("cancel")
@click.argument("task_id")
@click.option("--message", default=OPERATOR_CANCEL, show_default=True, help="The statusMessage.")
def cancel_task(task_id: str, message: str) -> None:
    """Cancel a task as its client's tasks/cancel would: mark it cancelled, then revoke its
    Celery call (terminating the pool process only when the call has started).

    Exits 1 when the task is unknown or already terminal.
    """
    settings = _settings()
    # The audit and transition lines go to stderr (JSON off a terminal), like the bridge's.
    logs.configure("WARNING", settings.log_format)
    for name in (audit_log.name, logs.transitions.name):
        logging.getLogger(name).setLevel(logging.INFO)
    record, _, _ = _read_task(settings, task_id)
    if record.status.terminal:
        raise click.ClickException(
            f"task {task_id} is already {record.status.value}: nothing to cancel"
        )
    with _redis_errors(settings):
        final = asyncio.run(_cancel(settings, record, message))
    audit_operator("task.cancel", task=task_id, status=final.status, owner=record.owner)
    if final.status is not TaskStatus.CANCELLED:
        # The work finished between our read and the cancel: its status stands.
        raise click.ClickException(
            f"task {task_id} finished first: {final.status.value} ({printable(final.message)})"
        )
    click.echo(f"{task_id}: {final.status.value} ({printable(final.message)})")


# -- sessions --------------------------------------------------------------------------------
@click.group()
def sessions() -> None:
    """Inspect legacy-era (2025-11-25) sessions."""


@sessions.command("list")
@_LIMIT
@_JSON
def list_sessions(limit: int, as_json: bool) -> None:
    """List sessions, newest first (a SCAN that stops after LIMIT sessions, as tasks list)."""
    settings = _settings()

    def keep(sid: str, h: dict[str, str], pttl: int) -> dict[str, Any]:
        info = json.loads(h.get("client_info") or "{}")
        return {
            "id": sid,
            "protocolVersion": h.get("protocol_version"),
            "principal": h.get("principal") or None,
            "clientName": info.get("name"),
            "clientVersion": info.get("version"),
            "created": iso(int(h["created"])) if h.get("created") else None,
            "idleTtlLeft_s": pttl // 1000 if pttl >= 0 else None,
        }

    found, limit_reached = _collect(settings, "session", limit, keep)
    found.sort(key=lambda s: s["created"] or "", reverse=True)
    if as_json:
        print_json({"sessions": found, "limit": limit, "limitReached": limit_reached})
        return
    rows: list[list[str | Text]] = [
        [
            s["id"],
            s["protocolVersion"] or "-",
            s["principal"] or "-",
            " ".join(str(v) for v in (s["clientName"], s["clientVersion"]) if v) or "-",
            (s["created"] or "-").replace("+00:00", "Z"),
            span(s["idleTtlLeft_s"]) if s["idleTtlLeft_s"] is not None else "-",
        ]
        for s in found
    ]
    more = f"; limit {limit} reached, more may exist" if limit_reached else ""
    columns = ["session id", "protocol", "principal", "client", "created", "idle TTL left"]
    title = f"MCP sessions ({settings.key_prefix})"
    print_table(title, columns, rows, f"{len(found)} session(s){more}", {"client"})
