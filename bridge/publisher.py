"""The thin adapter to Celery: publish a tool call, revoke it. Broker errors become
``DispatchError`` here. Celery's producer is blocking, so calls run in a worker thread.

When the broker is the registry's own Redis (the default), a tool call is not published
through Celery's producer at all: :meth:`Publisher.inline_message` builds the message
Celery's producer would write (task protocol 2, as kombu's Redis transport stores it) and
the registry's create script pushes it onto the queue in the same atomic step that records
the task. One round trip instead of three, no thread, and a task can never be recorded
without its message or queued without its record. (``send_task`` costs ~0.4 ms of CPU per
call, the largest share of the bridge's work per task: bench/RESULTS.md.)"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from typing import Any

import anyio.to_thread
from celery import Celery
from celery.app.utils import find_app
from kombu.exceptions import KombuError, OperationalError

from mcp_celery_bridge.bridge.shared.errors import ConfigError, DispatchError
from mcp_celery_bridge.bridge.shared.settings import Settings
from mcp_celery_bridge.workers.app import celery_config
from mcp_celery_bridge.workers.tools import Tool, kwargs_repr


def project_app(settings: Settings) -> Celery | None:
    """The project's own Celery app that ``MCP_BRIDGE_CELERY_APP`` names (as ``celery -A``
    takes it: ``proj``, ``proj.celery`` or ``proj.celery:app``, imported from the current
    directory), or None when it names none."""
    if not settings.celery_app:
        return None
    try:
        found = find_app(settings.celery_app)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"MCP_BRIDGE_CELERY_APP={settings.celery_app!r}: cannot import it ({exc})"
        ) from exc
    if not isinstance(found, Celery):
        raise ConfigError(
            f"MCP_BRIDGE_CELERY_APP={settings.celery_app!r} is a {type(found).__name__}, "
            "not a Celery app"
        )
    return found


class Publisher:
    def __init__(self, settings: Settings, project: Celery | None = None) -> None:
        if project is not None:
            # The project's app as its own workers know it: its broker, transport options,
            # routes, queues and serializer decide where and how a call goes. Nothing of
            # its configuration is changed; the bridge's needs go with each message.
            self.celery = project
            self.queue = str(project.conf.task_default_queue)
            self.inline = False
        else:
            # A client-only app: the bridge publishes by task name and never imports tool
            # code for execution, only for declarations.
            self.celery = Celery("mcp_celery_bridge_client", set_as_current=False)
            self.celery.conf.update(celery_config(settings))
            # A task-sent event per publish goes through one mutex-guarded event dispatcher
            # and serialised concurrent publishes (bench/RESULTS.md); workers' own events are
            # enough for Flower, which then shows a task from "received" on.
            self.celery.conf.task_send_sent_event = False
            self.queue = settings.queue
            #: Whether tool calls go onto the queue from the registry's create script.
            self.inline = self._routes_to_registry_redis(settings)
        self._owned = project is None
        self._origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self._reply_to = str(uuid.uuid4())

    def _routes_to_registry_redis(self, settings: Settings) -> bool:
        """Only when Celery itself would put every call on ``settings.queue`` in the
        registry's Redis: Celery's own environment and config module (``CELERY_BROKER_URL``,
        ``CELERY_CONFIG_MODULE``: a write URL, routes, queues) can say otherwise, and then
        the bridge publishes through Celery, which honours them."""
        conf = self.celery.conf
        broker = conf.broker_write_url or conf.broker_url
        return (
            (settings.broker_url or settings.redis_url) == settings.redis_url
            and broker == settings.celery_broker_url
            and settings.redis_url.startswith(("redis://", "rediss://", "sentinel://"))
            and not conf.task_routes
            and conf.task_queues is None
            and not (conf.broker_transport_options or {}).get("global_keyprefix")
        )

    def inline_message(
        self, declared: Tool, celery_id: str, arguments: dict[str, Any], headers: dict[str, str]
    ) -> bytes:
        """The message ``publish`` would send, as kombu's Redis transport stores it in the
        queue's list (priority 0, the default exchange, routed by queue name)."""
        celery_name = declared.celery_name
        kwargs = _kwargs(declared, arguments, headers)
        shown = kwargs_repr(_mcp(headers))
        body = json.dumps(
            [[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
        )
        message = {
            "body": base64.b64encode(body.encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": celery_name,
                "id": celery_id,
                "shadow": None,
                "eta": None,
                "expires": None,
                "group": None,
                "group_index": None,
                "retries": 0,
                "timelimit": [None, None],
                "root_id": celery_id,
                "parent_id": None,
                "argsrepr": "()",
                "kwargsrepr": shown,
                "origin": self._origin,
                "ignore_result": True,
                "replaced_task_nesting": 0,
                "stamped_headers": None,
                "stamps": {},
                **headers,
            },
            "properties": {
                "correlation_id": celery_id,
                # Celery's producer copies its publish options into the properties too.
                "kwargsrepr": shown,
                "reply_to": self._reply_to,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": self.queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        return json.dumps(message).encode()

    async def publish(
        self, declared: Tool, celery_id: str, arguments: dict[str, Any], headers: dict[str, str]
    ) -> None:
        def send() -> None:
            self.celery.send_task(
                declared.celery_name,
                kwargs=_kwargs(declared, arguments, headers),
                task_id=celery_id,
                headers=headers,
                kwargsrepr=kwargs_repr(_mcp(headers)),
                # Without this Celery subscribes to the result channel of every task it sends
                # (two round trips and a pub/sub connection per thread): the registry holds
                # the result, the backend never does.
                ignore_result=True,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.5},
            )

        try:
            await anyio.to_thread.run_sync(send)
        except (OperationalError, KombuError, OSError) as exc:
            raise DispatchError(f"could not reach the task queue: {exc}") from exc

    async def revoke(self, celery_id: str | list[str], *, terminate: bool) -> None:
        def send() -> None:
            # SIGTERM: the prefork child exits between bytecodes, running `finally` blocks.
            self.celery.control.revoke(celery_id, terminate=terminate, signal="SIGTERM")

        try:
            await anyio.to_thread.run_sync(send)
        except (OperationalError, KombuError, OSError) as exc:
            raise DispatchError(f"could not broadcast the revoke: {exc}") from exc

    def ping(self, timeout: float) -> list[str]:
        """Names of the workers that answered a broadcast ping within ``timeout`` (blocking)."""
        replies = self.celery.control.ping(timeout=timeout) or []
        return [name for reply in replies for name in reply]

    def queue_depth(self) -> int:
        """Messages waiting in the queue the bridge publishes to (blocking: a connection of
        its own, one round trip). Any broker: a passive declare reports the count, and
        creates nothing; a queue not there (Redis drops an empty list) holds none."""
        try:
            with self.celery.connection_for_read() as conn:
                channel: Any = conn.default_channel  # kombu's stubs lack queue_declare
                try:
                    declared = channel.queue_declare(queue=self.queue, passive=True)
                except conn.channel_errors:
                    return 0
        except (OperationalError, KombuError, OSError) as exc:
            raise DispatchError(f"could not read the queue's depth: {exc}") from exc
        return int(declared.message_count)

    def close(self) -> None:
        if self._owned:  # a project's app is the project's to close
            self.celery.close()


def _mcp(headers: dict[str, str]) -> dict[str, str]:
    # Not the owner: without authentication it is the session id, a bearer credential.
    return {"task_id": headers["mcp_task_id"], "tool": headers["mcp_tool"]}


def _kwargs(declared: Tool, arguments: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    if declared.bridged:
        # An existing task takes the arguments as its own keyword arguments; the MCP ids
        # travel in the headers only.
        return dict(arguments)
    # The MCP ids ride in the kwargs too, so Flower's task view shows them.
    return {"arguments": arguments, "mcp": _mcp(headers)}
