"""What the fault tests share beyond the processes (``tests.services``: a private
redis-server, a bridge that can be killed and brought back on its port): a recorder of a
session's GET stream that resumes with Last-Event-ID whenever the stream ends or breaks,
and the checks that nothing it recorded was lost or doubled."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import anyio
import anyio.abc
import httpx
import redis

from mcp_celery_bridge.bridge.shared.keys import Keys
from tests.client import TERMINAL, RawClient
from tests.services import eventually


@dataclass(frozen=True)
class Notice:
    event_id: str
    task_id: str
    status: str
    message: str


class Recorder:
    """Keeps a session's GET stream open, recording every task notification; when the stream
    ends or breaks (a bridge or Redis went away, or ``switch`` was called) it reconnects, to
    the next of ``clients`` (the same session through different bridges), with
    Last-Event-ID. Run it with ``task_group.start(recorder.run)``: it has started once the
    first stream is open."""

    def __init__(self, *clients: RawClient) -> None:
        self.clients = clients
        self.notices: list[Notice] = []
        self.by_task: dict[str, list[Notice]] = {}
        self.connects = 0
        self.ends = 0
        self.last_id = "0-0"
        self._scope = anyio.CancelScope()

    def switch(self) -> None:
        """End the current stream; the next one is opened through the next client."""
        self._scope.cancel()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        while True:
            client = self.clients[self.ends % len(self.clients)]
            with anyio.CancelScope() as self._scope:
                try:
                    async with client.stream(self.last_id) as events:
                        self.connects += 1
                        if not started:
                            started = True
                            task_status.started()
                        async for event_id, message in events:
                            params = message["params"]
                            notice = Notice(
                                event_id,
                                params["taskId"],
                                params["status"],
                                params.get("statusMessage", ""),
                            )
                            self.notices.append(notice)
                            self.by_task.setdefault(notice.task_id, []).append(notice)
                            self.last_id = event_id
                except (httpx.TransportError, AssertionError):
                    pass  # the bridge is away (refused, reset, or 503 while Redis is away)
            self.ends += 1
            # Paces reconnection attempts while the far side is down; nothing waits on it.
            await anyio.sleep(0.05)

    def terminal(self) -> dict[str, list[Notice]]:
        """The terminal notifications, by task id."""
        found: dict[str, list[Notice]] = {}
        for notice in self.notices:
            if notice.status in TERMINAL:
                found.setdefault(notice.task_id, []).append(notice)
        return found

    async def wait_terminal(self, task_ids: set[str], timeout: float) -> None:
        def ended(task_id: str) -> bool:
            return any(n.status in TERMINAL for n in self.by_task.get(task_id, ()))

        await eventually(
            lambda: all(ended(task_id) for task_id in task_ids),
            timeout,
            f"terminal notifications of {len(task_ids)} tasks",
            every=0.02,
        )


def stream_ids(client: redis.Redis, keys: Keys, session_id: str) -> list[str]:
    """Every event id in the session's notification stream: what a client must receive."""
    entries = cast(list[tuple[str, Any]], client.xrange(keys.events(f"session:{session_id}")))
    return [str(entry_id) for entry_id, _ in entries]


def assert_exactly_once(recorder: Recorder, expected_ids: list[str], task_ids: set[str]) -> None:
    """The recorder got every event of the stream, in order, none twice, and each task's
    terminal notification exactly once, with nothing after it."""
    got = [n.event_id for n in recorder.notices]
    assert len(got) == len(set(got)), "a notification arrived twice"
    assert got == expected_ids, (
        f"{len(set(expected_ids) - set(got))} notifications missed, "
        f"{len(set(got) - set(expected_ids))} unexpected"
    )
    terminal = recorder.terminal()
    assert set(terminal) == task_ids
    twice = {tid: [n.status for n in ns] for tid, ns in terminal.items() if len(ns) != 1}
    assert not twice, f"tasks with more than one terminal notification: {twice}"
    last_index = {n.task_id: i for i, n in enumerate(recorder.notices)}
    for task_id, [final] in terminal.items():
        assert recorder.notices[last_index[task_id]] == final, f"{task_id} changed after {final}"


def figure_time(start: float) -> float:
    return round(time.monotonic() - start, 2)
