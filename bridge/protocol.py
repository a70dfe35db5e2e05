"""JSON-RPC methods of the 2025-11-25 protocol era (and the older versions it negotiates
down to). Handlers never see HTTP; they raise ``McpError`` subclasses, which the transport
turns into JSON-RPC errors in one place."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from bridge import __version__
from bridge.dispatch import Dispatcher
from bridge.errors import BridgeError, InvalidParams, McpError, MethodNotFound
from bridge.events import EventHub
from bridge.registry import Registry, TaskRecord, TaskStatus
from bridge.sessions import Session, Sessions
from bridge.settings import Settings
from workers.tools import Tool

log = logging.getLogger(__name__)

LATEST = "2025-11-25"
SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
RELATED_TASK = "io.modelcontextprotocol/related-task"
#: A waiter re-reads the registry at least this often, in case a pub/sub message was lost.
WAIT_RECHECK_S = 5.0
#: The JSON-RPC error ``tasks/result`` answers for a cancelled task (the spec leaves it open).
TASK_CANCELLED_CODE = -32603


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def render_task(record: TaskRecord) -> dict[str, Any]:
    task: dict[str, Any] = {
        "taskId": record.id,
        "status": record.status.value,
        "createdAt": iso(record.created),
        "lastUpdatedAt": iso(record.updated),
        "ttl": record.ttl,
        "pollInterval": record.poll,
    }
    if record.message:
        task["statusMessage"] = record.message
    return task


def status_notification(record: TaskRecord) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/tasks/status", "params": render_task(record)}


def _encode_cursor(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def _decode_cursor(kind: str, cursor: Any) -> int:
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


def _object(params: Any, name: str, *, required: bool = False) -> dict[str, Any]:
    if params is None and not required:
        return {}
    if not isinstance(params, dict):
        raise InvalidParams(f"{name} must be an object")
    return params


def _string(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidParams(f"{name} must be a non-empty string")
    return value


def _tool_error(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True}


@dataclass(frozen=True)
class Call:
    """Who is asking, in which request."""

    session: Session
    request_id: str | int

    @property
    def owner(self) -> str:
        return self.session.owner


Handler = Callable[[Call, dict[str, Any]], Awaitable[dict[str, Any]]]


class LegacyProtocol:
    """Methods of a session-bound (2025-11-25 and older) client."""

    def __init__(
        self,
        settings: Settings,
        sessions: Sessions,
        registry: Registry,
        dispatcher: Dispatcher,
        hub: EventHub,
        tools: dict[str, Tool],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.registry = registry
        self.dispatcher = dispatcher
        self.hub = hub
        self.tools = tools
        self._tool_names = sorted(tools)
        self.handlers: dict[str, Handler] = {
            "ping": self.ping,
            "tools/list": self.tools_list,
            "tools/call": self.tools_call,
            "tasks/get": self.tasks_get,
            "tasks/list": self.tasks_list,
            "tasks/cancel": self.tasks_cancel,
            "tasks/result": self.tasks_result,
        }

    # -- lifecycle -------------------------------------------------------------------------
    async def initialize(self, params: Any) -> tuple[Session, dict[str, Any]]:
        params = _object(params, "params", required=True)
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise InvalidParams("protocolVersion must be a string")
        capabilities = _object(params.get("capabilities"), "capabilities", required=True)
        client_info = _object(params.get("clientInfo"), "clientInfo", required=True)
        if not isinstance(client_info.get("name"), str) or not isinstance(
            client_info.get("version"), str
        ):
            raise InvalidParams("clientInfo needs a name and a version")
        version = requested if requested in SUPPORTED_VERSIONS else LATEST
        session = await self.sessions.create(version, capabilities, client_info)
        server_caps: dict[str, Any] = {"tools": {"listChanged": False}}
        if self.tasks_enabled(session):
            server_caps["tasks"] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
        result = {
            "protocolVersion": version,
            "capabilities": server_caps,
            "serverInfo": {"name": "mcp-celery-bridge", "version": __version__},
            "instructions": "Long-running tools run as tasks on Celery workers; "
            "call them task-augmented and poll tasks/get.",
        }
        return session, result

    def is_slow(self, session: Session, method: str, params: dict[str, Any]) -> bool:
        """Whether the answer may take long (the transport then streams it as SSE)."""
        if method == "tasks/result":
            return True
        return method == "tools/call" and not (
            params.get("task") is not None and self.tasks_enabled(session)
        )

    @staticmethod
    def tasks_enabled(session: Session) -> bool:
        # Tasks exist from 2025-11-25 on; older sessions call every tool plainly.
        return session.protocol_version >= "2025-11-25"

    async def ping(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    # -- tools -----------------------------------------------------------------------------
    async def tools_list(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        cursor = params.get("cursor")
        start = _decode_cursor("o", cursor) if cursor is not None else 0
        size = self.settings.page_size
        names = self._tool_names[start : start + size]
        tools = []
        for name in names:
            declared = self.tools[name]
            entry: dict[str, Any] = {"name": name, "inputSchema": declared.input_schema}
            if declared.description:
                entry["description"] = declared.description
            if self.tasks_enabled(call.session):
                entry["execution"] = {"taskSupport": declared.task_support}
            tools.append(entry)
        result: dict[str, Any] = {"tools": tools}
        if start + size < len(self._tool_names):
            result["nextCursor"] = _encode_cursor("o", start + size)
        return result

    async def tools_call(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        name = _string(params, "name")
        declared = self.tools.get(name)
        if declared is None:
            raise InvalidParams(f"Unknown tool: {name}")
        arguments = _object(params.get("arguments"), "arguments")
        task_param = params.get("task")
        as_task = task_param is not None and self.tasks_enabled(call.session)
        task_options = _object(task_param, "task") if as_task else {}
        if as_task:
            if declared.task_support == "forbidden":
                raise MethodNotFound(f"Tool {name} does not support task-augmented execution")
        elif declared.task_support == "required" and self.tasks_enabled(call.session):
            raise MethodNotFound(f"Tool {name} requires task-augmented execution")
        try:
            declared.validate(arguments)
        except ValidationError as exc:
            invalid = _tool_error(f"Invalid arguments for tool {name}: {_explain(exc)}")
            if as_task:
                # A task-augmented caller expects a CreateTaskResult: the task exists, has
                # already failed, and its result says why. Nothing is queued.
                return await self._failed_task(call, declared, invalid, task_options)
            return invalid
        if as_task:
            return await self._start_task(call, declared, arguments, task_options)
        return await self._call_plain(call, declared, arguments)

    def _ttl(self, task_param: dict[str, Any]) -> int:
        ttl = task_param.get("ttl")
        if ttl is None:
            return self.settings.task_ttl_default_ms
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0:
            raise InvalidParams("task.ttl must be a non-negative number of milliseconds")
        return int(min(max(ttl, 1_000), self.settings.task_ttl_max_ms))

    async def _publish(
        self,
        call: Call,
        declared: Tool,
        arguments: dict[str, Any],
        *,
        ttl: int,
        hidden: bool,
    ) -> TaskRecord:
        task_id = secrets.token_urlsafe(24)  # 192 random bits: the id cannot be guessed
        celery_id = str(uuid.uuid4())
        record = await self.registry.create(
            task_id=task_id,
            owner=call.owner,
            tool=declared.name,
            celery_id=celery_id,
            ttl_ms=ttl,
            hidden=hidden,
            message="queued",
        )
        headers = {"mcp_task_id": task_id, "mcp_owner": call.owner, "mcp_tool": declared.name}
        try:
            await self.dispatcher.publish(declared.celery_name, celery_id, arguments, headers)
        except BridgeError as exc:
            await self.registry.transition(
                record, TaskStatus.FAILED, str(exc), result=_tool_error(str(exc))
            )
            raise
        return record

    async def _start_task(
        self,
        call: Call,
        declared: Tool,
        arguments: dict[str, Any],
        task_param: dict[str, Any],
    ) -> dict[str, Any]:
        record = await self._publish(
            call, declared, arguments, ttl=self._ttl(task_param), hidden=False
        )
        return {"task": render_task(record)}

    async def _failed_task(
        self,
        call: Call,
        declared: Tool,
        result: dict[str, Any],
        task_param: dict[str, Any],
    ) -> dict[str, Any]:
        record = await self.registry.create(
            task_id=secrets.token_urlsafe(24),
            owner=call.owner,
            tool=declared.name,
            celery_id="",
            ttl_ms=self._ttl(task_param),
        )
        message = result["content"][0]["text"]
        await self.registry.transition(record, TaskStatus.FAILED, message, result=result)
        return {"task": render_task(await self.registry.get(record.id) or record)}

    async def _call_plain(
        self, call: Call, declared: Tool, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        record = await self._publish(
            call, declared, arguments, ttl=self.settings.plain_call_ttl_ms, hidden=True
        )
        await self.registry.remember_call(call.owner, call.request_id, record.id)
        try:
            final = await self._wait_terminal(record.id)
        except asyncio.CancelledError:
            # The client went away: nobody can fetch this result, so stop the work.
            await asyncio.shield(self._cancel(record, "the client disconnected"))
            raise
        finally:
            await asyncio.shield(self.registry.forget_call(call.owner, call.request_id))
        return self._payload(final)

    async def notification(self, session: Session, method: str, params: dict[str, Any]) -> None:
        """A client notification. Only ``notifications/cancelled`` does something: it stops
        a running plain call (tasks are cancelled with ``tasks/cancel``, never this way)."""
        if method != "notifications/cancelled":
            return
        request_id = params.get("requestId")
        if isinstance(request_id, bool) or not isinstance(request_id, str | int):
            return
        task_id = await self.registry.find_call(session.owner, request_id)
        record = await self.registry.get(task_id) if task_id else None
        if record is not None and record.owner == session.owner and not record.status.terminal:
            reason = params.get("reason")
            why = f": {reason[:200]}" if isinstance(reason, str) and reason else ""
            await self._cancel(record, f"cancelled by the client{why}")

    # -- tasks -----------------------------------------------------------------------------
    async def _owned(self, call: Call, params: dict[str, Any]) -> TaskRecord:
        task_id = _string(params, "taskId")
        record = await self.registry.get(task_id) if len(task_id) <= 128 else None
        # Another owner's task is "not found" too, so existence does not leak.
        if record is None or record.owner != call.owner or record.hidden:
            raise InvalidParams(f"Task not found: {task_id[:128]}")
        return record

    async def tasks_get(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        return render_task(await self._owned(call, params))

    async def tasks_list(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        cursor = params.get("cursor")
        after = _decode_cursor("t", cursor) if cursor is not None else 0
        page = await self.registry.list_page(call.owner, after, self.settings.page_size)
        result: dict[str, Any] = {"tasks": [render_task(t) for t in page.tasks]}
        if page.next_after is not None:
            result["nextCursor"] = _encode_cursor("t", page.next_after)
        return result

    async def tasks_cancel(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        record = await self._owned(call, params)
        if record.status.terminal:
            raise _already_terminal(record.status)
        final = await self._cancel(record, "cancelled by the client")
        if final.status is not TaskStatus.CANCELLED:
            raise _already_terminal(final.status)
        return render_task(final)

    async def _cancel(self, record: TaskRecord, message: str) -> TaskRecord:
        # Cancel before revoke: the registry says `cancelled` before anything else happens,
        # so a worker that receives the message later drops it by its own check.
        await self.registry.transition(record, TaskStatus.CANCELLED, message)
        final = await self.registry.get(record.id) or record
        if final.status is TaskStatus.CANCELLED:
            try:
                await self.dispatcher.revoke(record.celery_id)
            except BridgeError:
                log.warning(
                    "revoke of %s not broadcast; the worker check still drops it", record.id
                )
        return final

    async def tasks_result(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        record = await self._owned(call, params)
        return self._payload(await self._wait_terminal(record.id), related=True)

    async def _wait_terminal(self, task_id: str) -> TaskRecord:
        while True:
            async with self.hub.watch(task_id) as changed:
                record = await self.registry.get(task_id)
                if record is None:
                    raise InvalidParams(f"Task not found: {task_id}")
                if record.status.terminal:
                    return record
                try:
                    await asyncio.wait_for(changed.wait(), WAIT_RECHECK_S)
                except TimeoutError:
                    pass

    @staticmethod
    def _payload(record: TaskRecord, *, related: bool = False) -> dict[str, Any]:
        if record.status is TaskStatus.CANCELLED:
            raise McpError(
                f"Task was cancelled and has no result: {record.message}",
                {"taskId": record.id, "status": "cancelled"},
                code=TASK_CANCELLED_CODE,
            )
        if record.error is not None:
            raise McpError(
                str(record.error.get("message", "task failed")),
                record.error.get("data"),
                code=int(record.error.get("code", -32603)),
            )
        result = dict(record.result or _tool_error(record.message or "the task failed"))
        if related:
            result["_meta"] = {**result.get("_meta", {}), RELATED_TASK: {"taskId": record.id}}
        return result


def _already_terminal(status: TaskStatus | None) -> InvalidParams:
    name = status.value if status else "unknown"
    return InvalidParams(f"Cannot cancel task: already in terminal status '{name}'")


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
