"""The book of a workflow: the Celery tasks (parts) of one MCP task whose tool started a
canvas, kept in one Redis hash per MCP task (``Keys.flow``) by flow.lua, one atomic step per
change. Workers write it (``workers.workflows``); the bridge reads it to revoke every part
on cancel (``parts``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from mcp_celery_bridge.bridge.shared.clients import SyncRedis, translated
from mcp_celery_bridge.bridge.shared.keys import Keys
from mcp_celery_bridge.bridge.shared.records import TaskStatus
from mcp_celery_bridge.bridge.shared.scripts import source
from mcp_celery_bridge.bridge.shared.settings import Settings


@dataclass(frozen=True)
class Tally:
    """Finished parts of ``total``, and the final parts' results once (the one time they
    are all in: the workflow is complete), else None."""

    done: int
    total: int
    results: list[Any] | None = None


@dataclass(frozen=True)
class Parts:
    """A workflow's parts not finished yet: started ones (a pool process runs them) and
    waiting ones (queued, or not even published: a chain's later links, a chord's body)."""

    started: list[str]
    waiting: list[str]


def parts(book: dict[str, str]) -> Parts:
    """The unfinished parts in the workflow hash ``book`` (as HGETALL returns it)."""
    started, waiting = [], []
    for field, state in book.items():
        if field.startswith("p:"):
            if state.startswith("s"):
                started.append(field[2:])
            elif state == "q":
                waiting.append(field[2:])
    return Parts(started, waiting)


class Flows:
    """A worker's (blocking) side of workflow books."""

    def __init__(self, settings: Settings, client: SyncRedis) -> None:
        self.keys = Keys.of(settings)
        self.ttl_ms = 2 * settings.task_ttl_max_ms
        self._client = client
        self._flow = client.register_script(source("flow"))

    def _run(self, task_id: str, *args: Any) -> Any:
        keys = [self.keys.flow(task_id), self.keys.task(task_id)]
        with translated():
            return self._flow(keys=keys, args=[args[0], self.ttl_ms, *args[1:]])

    def add(self, task_id: str, found: Iterable[tuple[str, bool]]) -> None:
        """Record parts met (celery id, whether it counts towards the total)."""
        pairs = [value for part, counted in found for value in (part, "1" if counted else "0")]
        if pairs:
            self._run(task_id, "add", *pairs)

    def start(self, task_id: str, part: str, holder: str) -> TaskStatus | None:
        """Mark ``part`` started by ``holder``; the MCP task's status (None: gone)."""
        status = str(self._run(task_id, "start", part, holder))
        return TaskStatus(status) if status else None

    def finish(self, task_id: str, part: str, result: Any) -> Tally | None:
        """Mark ``part`` done with ``result``; None when it was done already."""
        reply = cast(list[Any], self._run(task_id, "finish", part, _dumps(result)))
        return _tally(reply) if reply else None

    def known(self, task_id: str, parts: list[str]) -> bool:
        """Whether every one of ``parts`` was recorded as a part of the workflow."""
        if not parts:
            return False
        with translated():
            found = self._client.hmget(self.keys.flow(task_id), [f"p:{p}" for p in parts])
        return all(value is not None for value in found)

    def shape(self, task_id: str, finals: list[str]) -> Tally:
        """Name the parts whose results are the workflow's result."""
        return _tally(cast(list[Any], self._run(task_id, "shape", json.dumps(finals))))


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _tally(reply: list[Any]) -> Tally:
    done, total, *results = reply
    return Tally(int(done), int(total), [json.loads(r) for r in results] if results else None)
