"""The methods of the 2026-07-28 protocol era, and how it renders a task:
``server/discover``, ``tools/list``, ``tools/call`` (plain, in rounds when the tool asks:
``bridge.rounds``), and tasks as the ``io.modelcontextprotocol/tasks`` extension
(server-decided tasks, ``tasks/get|update|cancel``, ``notifications/tasks`` on a
``subscriptions/listen`` stream). The HTTP side of the era is ``bridge.eras.modern``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from mcp_celery_bridge.bridge import param_headers
from mcp_celery_bridge.bridge.audit import audit
from mcp_celery_bridge.bridge.calls import Call, Handler
from mcp_celery_bridge.bridge.catalogue import Catalogue
from mcp_celery_bridge.bridge.params import obj, string
from mcp_celery_bridge.bridge.progress import progress_reporter
from mcp_celery_bridge.bridge.request_state import RequestStates
from mcp_celery_bridge.bridge.rounds import Rounds
from mcp_celery_bridge.bridge.server_info import INSTRUCTIONS, SERVER_INFO
from mcp_celery_bridge.bridge.service import TaskService
from mcp_celery_bridge.bridge.shared.errors import (
    InvalidParams,
    JsonRpcError,
    MethodNotFound,
    MissingCapability,
)
from mcp_celery_bridge.bridge.shared.records import TaskRecord, TaskStatus
from mcp_celery_bridge.bridge.shared.results import outcome
from mcp_celery_bridge.bridge.timestamps import iso

#: Versions spoken statelessly, with per-request ``_meta``.
MODERN_VERSIONS = ("2026-07-28",)
#: The era's name in logs and metrics.
ERA = "modern"
EXT_TASKS = "io.modelcontextprotocol/tasks"
META_SERVER = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION = "io.modelcontextprotocol/subscriptionId"
#: How long clients may cache ``server/discover`` and ``tools/list``: tools change only when
#: the bridge is redeployed with other tool modules.
CACHE_TTL_MS = 300_000
TASK_METHODS = frozenset({"tasks/get", "tasks/update", "tasks/cancel"})


def _with_meta(result: dict[str, Any], result_type: str = "complete") -> dict[str, Any]:
    return {**result, "resultType": result_type, "_meta": {META_SERVER: SERVER_INFO}}


def render_task(record: TaskRecord) -> dict[str, Any]:
    """The extension's ``DetailedTask``. The registry keeps the legacy facts: a tool that
    raised (or returned ``isError``) is ``failed`` there, but ``completed`` in this era,
    where ``failed`` is only for JSON-RPC errors (a lost worker, a call never queued: those
    records carry ``error``, see ``bridge.shared.errors.execution_error``)."""
    status = record.status
    if status is TaskStatus.FAILED and record.error is None:
        status = TaskStatus.COMPLETED
    task: dict[str, Any] = {
        "taskId": record.id,
        "status": status.value,
        "createdAt": iso(record.created),
        "lastUpdatedAt": iso(record.updated),
        "ttlMs": record.ttl,
        "pollIntervalMs": record.poll,
    }
    if record.message:
        task["statusMessage"] = record.message
    if status is TaskStatus.COMPLETED:
        task["result"] = outcome(record.result, record.message, "the task failed")
    elif status is TaskStatus.FAILED:
        task["error"] = record.error
    elif status is TaskStatus.INPUT_REQUIRED:
        task["inputRequests"] = record.inputs
    return task


class ModernMethods:
    def __init__(
        self,
        tasks: TaskService,
        catalogue: Catalogue,
        states: RequestStates,
        versions: tuple[str, ...],
    ) -> None:
        self.tasks = tasks
        self.catalogue = catalogue
        #: Every version the server speaks, in any era (``server/discover`` lists them).
        self.versions = versions
        self.settings = tasks.settings
        self.rounds = Rounds(tasks, states)
        self.handlers: dict[str, Handler] = {
            "server/discover": self.discover,
            "tools/list": self.tools_list,
            "tools/call": self.tools_call,
            "tasks/get": self.tasks_get,
            "tasks/update": self.tasks_update,
            "tasks/cancel": self.tasks_cancel,
        }

    def call(
        self,
        headers: Mapping[str, str],
        method: str,
        params: dict[str, Any],
        request_id: Any,
        owner: str,
        capabilities: dict[str, Any],
    ) -> Call:
        """Check a request whose headers and ``_meta`` passed (``bridge.eras.modern``)
        before anything runs; raises the error to answer."""
        if method not in self.handlers and method != "subscriptions/listen":
            raise MethodNotFound(f"Method not found: {method}")
        if method == "tools/call":
            mirrored = self.catalogue.mirrored(str(params.get("name")))
            param_headers.check(headers, mirrored, params.get("arguments"))
        call = Call(owner=owner, request_id=request_id, client_capabilities=capabilities)
        if method in TASK_METHODS and not self.declares_tasks(call):
            raise _missing_tasks()
        if method == "tools/call" and not self.declares_tasks(call):
            declared = self.catalogue.get(str(params.get("name")))
            # Known before anything runs, so it is answered as a plain 400, not in a stream.
            if declared is not None and declared.task_support == "required":
                raise _missing_tasks()
        return call

    @staticmethod
    def declares_tasks(call: Call) -> bool:
        extensions = call.client_capabilities.get("extensions")
        return isinstance(extensions, dict) and isinstance(extensions.get(EXT_TASKS), dict)

    def is_slow(self, call: Call, method: str, params: dict[str, Any]) -> bool:
        """A ``tools/call`` that runs within the request, to its end or to its next
        questions (streamed as SSE, whose closing cancels the call)."""
        if method != "tools/call":
            return False
        declared = self.catalogue.get(str(params.get("name")))
        return (
            declared is None
            or declared.task_support == "forbidden"
            or not (self.declares_tasks(call))
            or "requestState" in params
        )

    async def discover(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        return _with_meta(
            {
                "supportedVersions": list(self.versions),
                "capabilities": {"tools": {"listChanged": False}, "extensions": {EXT_TASKS: {}}},
                "instructions": INSTRUCTIONS,
                "ttlMs": CACHE_TTL_MS,
                "cacheScope": "public",
            }
        )

    async def tools_list(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        # The 2026 core has no execution.taskSupport: the server decides.
        page = self.catalogue.page(params.get("cursor"), with_execution=False)
        return _with_meta({**page, "ttlMs": CACHE_TTL_MS, "cacheScope": "public"})

    async def tools_call(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        declared = self.catalogue.tool(string(params, "name"))
        arguments = obj(params.get("arguments"), "arguments")
        # A requestState continues a plain call that asked (bridge.rounds), whatever the
        # follow-up declares now.
        plain = declared.task_support == "forbidden" or "requestState" in params
        as_task = not plain and self.declares_tasks(call)
        if declared.task_support == "required" and not as_task:
            raise _missing_tasks()
        invalid = self.catalogue.invalid_arguments(declared, arguments)
        if invalid is not None:
            return _with_meta(invalid)
        if as_task:
            elicitation = call.client_capabilities.get("elicitation")
            record = await self.tasks.start(
                call.owner,
                declared,
                arguments,
                era=ERA,
                ttl=self.tasks.ttl(None),
                listed=False,
                can_ask=isinstance(elicitation, dict),
            )
            audit("task.create", call, task=record.id, tool=declared.name, status=record.status)
            created = {k: v for k, v in render_task(record).items() if k != "result"}
            return _with_meta(created, "task")
        round_ = await self.rounds.run(
            call, declared, arguments, params, on_change=progress_reporter(call, params)
        )
        if round_.questions:
            asked = {"inputRequests": round_.questions, "requestState": round_.state}
            return _with_meta(asked, "input_required")
        final = round_.record
        if final.error is not None:
            raise JsonRpcError(
                str(final.error.get("message", "the call failed")),
                final.error.get("data"),
                code=int(final.error.get("code", -32603)),
            )
        if final.status is TaskStatus.CANCELLED:
            raise JsonRpcError(f"The call was cancelled: {final.message}")
        return _with_meta(outcome(final.result, final.message, "the call failed"))

    async def _visible(self, call: Call, params: dict[str, Any]) -> TaskRecord:
        return await self.tasks.find(call, string(params, "taskId"))

    async def tasks_get(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        record = await self._visible(call, params)
        if record.status.terminal:
            audit("task.result", call, task=record.id, status=record.status)
        return _with_meta(render_task(record))

    async def tasks_update(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        record = await self._visible(call, params)
        responses = obj(params.get("inputResponses"), "inputResponses", required=True)
        for key, response in list(responses.items())[:100]:
            if isinstance(response, dict):
                # Exactly once, whichever bridge receives it: keys not pending (unknown,
                # answered, withdrawn) are ignored, as the extension says.
                await self.tasks.deliver(record.id, key, response)
        return _with_meta({})

    async def tasks_cancel(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        record = await self._visible(call, params)
        audit("task.cancel", call, task=record.id, status=record.status)
        if not record.status.terminal:
            await self.tasks.cancel(record, "cancelled by the client")
        return _with_meta({})

    # -- subscriptions/listen --------------------------------------------------------------
    async def listen_filter(self, call: Call, params: dict[str, Any]) -> dict[str, str]:
        """The task ids a ``subscriptions/listen`` request may follow (the acknowledged
        subset, in the request's order), each with its owner; raises before the stream
        opens."""
        notifications = obj(params.get("notifications"), "notifications", required=True)
        task_ids = notifications.get("taskIds")
        if task_ids is None:
            return {}
        if not isinstance(task_ids, list) or not all(isinstance(t, str) for t in task_ids):
            raise InvalidParams("notifications.taskIds must be an array of strings")
        if not self.declares_tasks(call):
            raise _missing_tasks()
        unique = list(dict.fromkeys(task_ids))
        most = self.settings.max_listen_task_ids
        if len(unique) > most:
            # Refused whole rather than cut: a client told nothing would miss notifications.
            raise InvalidParams(
                f"Too many taskIds: at most {most} per subscriptions/listen request",
                {"limit": "listen-task-ids", "max": most},
            )
        found = await self.tasks.find_many(call, unique)
        return {task_id: r.owner for task_id, r in zip(unique, found, strict=True) if r}

    async def listen(self, call: Call, tasks: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        """The messages of a listen stream: the acknowledgement, each task's current state,
        then every change, until the client closes the stream or the bridge stops."""
        meta = {META_SUBSCRIPTION: call.request_id}
        task_ids = list(tasks)
        yield {
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": {"_meta": meta, "notifications": {"taskIds": task_ids} if task_ids else {}},
        }
        async with self.tasks.subscribe(frozenset(task_ids), frozenset(tasks.values())) as sub:
            for task_id in task_ids:
                record = await self.tasks.current(task_id)
                if record is not None:
                    yield _task_notification(record, meta)
            while True:
                event = await sub.get()
                if event is None:
                    break
                record = await self.tasks.current(event.task.id)
                if record is not None:
                    yield _task_notification(record, meta)
        # The server ends the subscription (shutdown, or Redis lost): say so, gracefully.
        yield {"jsonrpc": "2.0", "id": call.request_id, "result": _listen_result(meta)}


def _listen_result(meta: dict[str, Any]) -> dict[str, Any]:
    return {"resultType": "complete", "_meta": {**meta, META_SERVER: SERVER_INFO}}


def _task_notification(record: TaskRecord, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "method": "notifications/tasks",
        "params": {**render_task(record), "_meta": meta},
    }


def _missing_tasks() -> MissingCapability:
    return MissingCapability(
        "Missing required client capability",
        {"requiredCapabilities": {"extensions": {EXT_TASKS: {}}}},
    )
