"""The thin adapter to Celery: publish a tool call, revoke it. Broker errors become
``DispatchError`` here. Celery's producer is blocking, so calls run in a worker thread."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from celery import Celery
from kombu.exceptions import KombuError, OperationalError

from bridge.errors import DispatchError
from bridge.settings import Settings
from workers.app import celery_config


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        # A client-only app: the bridge publishes by task name and never imports tool code
        # for execution, only for declarations.
        self.celery = Celery("mcp_celery_bridge_client", set_as_current=False)
        self.celery.conf.update(celery_config(settings))
        # A task-sent event per publish goes through one mutex-guarded event dispatcher and
        # serialised concurrent publishes (bench/RESULTS.md); workers' own events are enough
        # for Flower, which then shows a task from "received" on.
        self.celery.conf.task_send_sent_event = False

    async def publish(
        self, celery_name: str, celery_id: str, arguments: dict[str, Any], headers: dict[str, str]
    ) -> None:
        def send() -> None:
            self.celery.send_task(
                celery_name,
                # The MCP ids ride in the kwargs too, so Flower's task view shows them.
                kwargs={
                    "arguments": arguments,
                    "mcp": {
                        "task_id": headers["mcp_task_id"],
                        "tool": headers["mcp_tool"],
                        "owner": headers["mcp_owner"],
                    },
                },
                task_id=celery_id,
                headers=headers,
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

    async def revoke(self, celery_id: str, *, terminate: bool) -> None:
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

    def close(self) -> None:
        self.celery.close()
