"""The methods of the 2025-11-25 protocol era (and the older versions it negotiates down
to), and how it renders a task: sessions from ``initialize``, task-augmented ``tools/call``,
``tasks/get|list|result|cancel``, ``notifications/tasks/status``, client notifications and
responses. The HTTP side of the era is ``bridge.eras.legacy``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from mcp_celery_bridge.bridge.audit import audit
from mcp_celery_bridge.bridge.calls import Call, Handler
from mcp_celery_bridge.bridge.catalogue import Catalogue
from mcp_celery_bridge.bridge.cursors import decode_cursor, encode_cursor
from mcp_celery_bridge.bridge.jsonrpc import error_response
from mcp_celery_bridge.bridge.params import obj, string
from mcp_celery_bridge.bridge.progress import (
    progress_notification,
    progress_reporter,
    progress_token,
)
from mcp_celery_bridge.bridge.questions import RELATED_TASK, Delivery, task_questions
from mcp_celery_bridge.bridge.server_info import INSTRUCTIONS, SERVER_INFO
from mcp_celery_bridge.bridge.service import TaskService
from mcp_celery_bridge.bridge.sessions import Session, Sessions
from mcp_celery_bridge.bridge.shared.errors import InvalidParams, JsonRpcError, MethodNotFound
from mcp_celery_bridge.bridge.shared.records import TaskRecord, TaskStatus
from mcp_celery_bridge.bridge.shared.results import outcome
from mcp_celery_bridge.bridge.shared.schema import parse_input_request_id
from mcp_celery_bridge.bridge.timestamps import iso

#: Versions negotiated with ``initialize`` (sessions), newest first.
LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
#: The era's name in logs and metrics.
ERA = "legacy"
#: The JSON-RPC error ``tasks/result`` answers for a cancelled task (the spec leaves it open).
TASK_CANCELLED_CODE = -32603


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


def can_elicit(session: Session) -> bool:
    return isinstance(session.client_capabilities.get("elicitation"), dict)


def tasks_enabled(session: Session) -> bool:
    # Tasks exist from 2025-11-25 on; older sessions call every tool plainly.
    return session.protocol_version >= "2025-11-25"


def _session(call: Call) -> Session:
    assert call.session is not None, "legacy handlers run in a session"
    return call.session


class LegacyMethods:
    """Methods of a session-bound (2025-11-25 and older) client."""

    def __init__(self, sessions: Sessions, tasks: TaskService, catalogue: Catalogue) -> None:
        self.sessions = sessions
        self.tasks = tasks
        self.catalogue = catalogue
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
    async def initialize(self, params: Any, principal: str = "") -> tuple[Session, dict[str, Any]]:
        params = obj(params, "params", required=True)
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise InvalidParams("protocolVersion must be a string")
        capabilities = obj(params.get("capabilities"), "capabilities", required=True)
        client_info = obj(params.get("clientInfo"), "clientInfo", required=True)
        if not isinstance(client_info.get("name"), str) or not isinstance(
            client_info.get("version"), str
        ):
            raise InvalidParams("clientInfo needs a name and a version")
        version = requested if requested in LEGACY_VERSIONS else LEGACY_VERSIONS[0]
        session = await self.sessions.create(version, capabilities, client_info, principal)
        server_caps: dict[str, Any] = {"tools": {"listChanged": False}}
        if tasks_enabled(session):
            server_caps["tasks"] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
        result = {
            "protocolVersion": version,
            "capabilities": server_caps,
            "serverInfo": SERVER_INFO,
            "instructions": INSTRUCTIONS,
        }
        return session, result

    def is_slow(self, session: Session, method: str, params: dict[str, Any]) -> bool:
        """Whether the answer may take long (the transport then streams it as SSE)."""
        if method == "tasks/result":
            return True
        return method == "tools/call" and not (
            params.get("task") is not None and tasks_enabled(session)
        )

    async def ping(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def notification(self, session: Session, method: str, params: dict[str, Any]) -> None:
        """A client notification. Only ``notifications/cancelled`` does something: it stops
        a running plain call (tasks are cancelled with ``tasks/cancel``, never this way)."""
        if method != "notifications/cancelled":
            return
        request_id = params.get("requestId")
        if isinstance(request_id, bool) or not isinstance(request_id, str | int):
            return
        reason = params.get("reason")
        why = f": {reason[:200]}" if isinstance(reason, str) and reason else ""
        await self.tasks.cancel_plain_call(
            session.owner, request_id, f"cancelled by the client{why}"
        )

    async def response(self, session: Session, message: dict[str, Any]) -> None:
        """A client's response to one of our requests: an answer to a tool's question."""
        request_id = message.get("id")
        question = parse_input_request_id(request_id)
        if question is None:
            return
        task_id, key = question
        result = message.get("result")
        if isinstance(result, dict):
            answer = result
        else:  # the client could not ask (a JSON-RPC error): the tool sees a cancel
            answer = {"action": "cancel", "error": message.get("error")}
        call = Call(owner=session.owner, request_id=str(request_id), session=session)
        await self.tasks.answer(call, task_id, key, answer)

    # -- tools -----------------------------------------------------------------------------
    async def tools_list(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        # execution.taskSupport exists from 2025-11-25 on.
        execution = tasks_enabled(_session(call))
        return self.catalogue.page(params.get("cursor"), with_execution=execution)

    async def tools_call(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        declared = self.catalogue.tool(string(params, "name"))
        arguments = obj(params.get("arguments"), "arguments")
        task_param = params.get("task")
        as_task = task_param is not None and tasks_enabled(_session(call))
        task_options = obj(task_param, "task") if as_task else {}
        if as_task and declared.task_support == "forbidden":
            raise MethodNotFound(f"Tool {declared.name} does not support task-augmented execution")
        if not as_task and declared.task_support == "required" and tasks_enabled(_session(call)):
            raise MethodNotFound(f"Tool {declared.name} requires task-augmented execution")
        invalid = self.catalogue.invalid_arguments(declared, arguments)
        if as_task:
            ttl = self.tasks.ttl(task_options.get("ttl"))
            if invalid is not None:
                # A task-augmented caller expects a CreateTaskResult: the task exists, has
                # already failed, and its result says why. Nothing is queued.
                record = await self.tasks.failed(
                    call.owner, declared, invalid, era=ERA, ttl=ttl, listed=True
                )
            else:
                token = progress_token(params)
                self.catalogue.check_progress_token(token)
                record = await self.tasks.start(
                    call.owner,
                    declared,
                    arguments,
                    era=ERA,
                    ttl=ttl,
                    listed=True,
                    progress_token=token,
                    can_ask=can_elicit(_session(call)),
                )
            audit("task.create", call, task=record.id, tool=declared.name, status=record.status)
            return {"task": render_task(record)}
        if invalid is not None:
            return invalid
        # Streamed, a plain call can also carry its tool's questions (and their withdrawal):
        # the elicitation/create requests go out on the call's own response stream.
        asks = call.notify is not None and can_elicit(_session(call))
        final = await self.tasks.run_plain(
            call.owner,
            declared,
            arguments,
            call.request_id,
            _plain_listener(call, params, asks),
            era=ERA,
            can_ask=asks,
        )
        return _payload(final)

    async def result_stream(
        self, call: Call, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """The messages of a ``tasks/result`` SSE stream: the task's questions (and their
        withdrawals) while it runs, then the response."""
        try:
            if call.session is not None and can_elicit(call.session):
                record = await self.tasks.find(call, string(params, "taskId"))
                async for message in task_questions(self.tasks, record):
                    yield message
            reply = {
                "jsonrpc": "2.0",
                "id": call.request_id,
                "result": await self.tasks_result(call, params),
            }
        except Exception as exc:
            reply = error_response(exc, call.request_id)
        yield reply

    # -- tasks -----------------------------------------------------------------------------
    async def _owned(self, call: Call, params: dict[str, Any]) -> TaskRecord:
        return await self.tasks.find(call, string(params, "taskId"))

    async def tasks_get(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        return render_task(await self._owned(call, params))

    async def tasks_list(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        cursor = params.get("cursor")
        after = decode_cursor("t", cursor) if cursor is not None else 0
        page = await self.tasks.list_page(call.owner, after)
        result: dict[str, Any] = {"tasks": [render_task(t) for t in page.tasks]}
        if page.next_after is not None:
            result["nextCursor"] = encode_cursor("t", page.next_after)
        return result

    async def tasks_cancel(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        record = await self._owned(call, params)
        audit("task.cancel", call, task=record.id, status=record.status)
        if not record.status.terminal:
            record = await self.tasks.cancel(record, "cancelled by the client")
            if record.status is TaskStatus.CANCELLED:
                return render_task(record)
        # Also when the work finished between our read and the cancel.
        raise InvalidParams(
            f"Cannot cancel task: already in terminal status '{record.status.value}'"
        )

    async def tasks_result(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        record = await self._owned(call, params)
        final = await self.tasks.wait_terminal(record)
        audit("task.result", call, task=record.id, status=final.status)
        return _payload(final, related=True)


def _plain_listener(
    call: Call, params: dict[str, Any], asks: bool
) -> Callable[[TaskRecord], None] | None:
    """What a streamed plain call sends of its hidden task's changes: progress reports (when
    the request has a progressToken) and questions with their withdrawals (when it may ask)."""
    progress = progress_reporter(call, params)
    notify = call.notify
    if not asks or notify is None:
        return progress
    delivery = Delivery(related=False)  # the hidden task is no task of the client's

    def listen(record: TaskRecord) -> None:
        if progress is not None:
            progress(record)
        for message in delivery.questions(record.id, record.inputs) + delivery.withdrawals(record):
            notify(message)

    return listen


def task_progress(record: TaskRecord) -> dict[str, Any] | None:
    """The ``notifications/progress`` an event carries, if it reports progress on a task
    whose request asked for it (its token is valid for the task's whole life)."""
    if record.progress is None or record.progress_token is None or record.status.terminal:
        return None
    return progress_notification(record.progress_token, record)


def _payload(record: TaskRecord, *, related: bool = False) -> dict[str, Any]:
    """What the original ``tools/call`` would have answered: its result or its error."""
    if record.status is TaskStatus.CANCELLED:
        raise JsonRpcError(
            f"Task was cancelled and has no result: {record.message}",
            {"taskId": record.id, "status": "cancelled"},
            code=TASK_CANCELLED_CODE,
        )
    if record.error is not None:
        raise JsonRpcError(
            str(record.error.get("message", "task failed")),
            record.error.get("data"),
            code=int(record.error.get("code", -32603)),
        )
    result = dict(outcome(record.result, record.message, "the task failed"))
    if related:
        result["_meta"] = {**result.get("_meta", {}), RELATED_TASK: {"taskId": record.id}}
    return result
