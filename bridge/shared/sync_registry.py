"""The workers' (blocking) view of the task registry: the transitions of a run, its lease,
its questions to the client and the cooperative cancel check; the Redis implementation of
``bridge.shared.store.WorkerStore``. The bridge's side is ``bridge.shared.registry``.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any, cast

import redis

from mcp_celery_bridge.bridge.shared import logs
from mcp_celery_bridge.bridge.shared.clients import SyncRedis, translated
from mcp_celery_bridge.bridge.shared.keys import Keys
from mcp_celery_bridge.bridge.shared.records import Outcome, TaskRecord, TaskStatus
from mcp_celery_bridge.bridge.shared.scripts import logged, source, transition_args
from mcp_celery_bridge.bridge.shared.settings import Settings

#: The per-owner cap of a run taken without one (``take_lease(capped=False)``).
UNCAPPED = 2**31


class SyncRegistry:
    """The workers' (blocking) view: transitions and the cooperative cancel check."""

    def __init__(self, settings: Settings, client: SyncRedis) -> None:
        self.settings = settings
        self.keys = Keys.of(settings)
        self.redis = client
        self._transition = client.register_script(source("transition"))

    def get(self, task_id: str) -> TaskRecord | None:
        with translated():
            h = cast(dict[str, str], self.redis.hgetall(self.keys.task(task_id)))
        return TaskRecord.from_hash(h) if h else None

    def status(self, task_id: str) -> TaskStatus | None:
        with translated():
            raw = self.redis.hget(self.keys.task(task_id), "status")
        return TaskStatus(str(raw)) if raw else None

    def transition(
        self,
        task_id: str,
        owner: str,
        status: TaskStatus,
        message: str = "",
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        worker: str = "",
        only_if_changed: bool = False,
        progress: tuple[float, float | None] | None = None,
        log_level: int = logging.INFO,
    ) -> Outcome:
        keys, args = transition_args(
            self.settings,
            self.keys,
            task_id,
            owner,
            status,
            message,
            result=result,
            error=error,
            worker=worker,
            only_if_changed=only_if_changed,
            progress=progress,
        )
        with translated():
            outcome = Outcome.from_reply(cast(list[Any], self._transition(keys=keys, args=args)))
        if progress is not None:
            return outcome  # a progress report, not a change of status: no log line
        return logged(task_id, outcome, message, log_level)

    # -- questions to the client (input_required) ------------------------------------------
    def ask(
        self, task_id: str, owner: str, key: str, request: dict[str, Any], message: str
    ) -> Outcome:
        """Put the task in ``input_required`` with one more pending question, announced."""
        keys, args = transition_args(
            self.settings,
            self.keys,
            task_id,
            owner,
            TaskStatus.INPUT_REQUIRED,
            message,
            input_request=(key, request),
        )
        with translated():
            outcome = Outcome.from_reply(cast(list[Any], self._transition(keys=keys, args=args)))
        return logged(task_id, outcome, message)

    def wait_answer(self, task_id: str, key: str, timeout_s: float) -> dict[str, Any] | None:
        """The answer to question ``key``, waiting at most ``timeout_s`` (None: no answer)."""
        with translated():
            popped = self.redis.brpop([self.keys.answer(task_id, key)], timeout=timeout_s)
        if not popped:
            return None
        answer: dict[str, Any] = json.loads(cast(list[str], popped)[1])
        return answer

    def withdraw(self, task_id: str, owner: str, key: str, message: str) -> dict[str, Any] | None:
        """Take question ``key`` back, announced (the task is ``working`` with ``message``
        unless other questions are pending); returns instead the answer that came first, if
        one did."""
        keys, args = transition_args(
            self.settings, self.keys, task_id, owner, TaskStatus.WORKING, message, withdraw=key
        )
        with translated():
            outcome = Outcome.from_reply(cast(list[Any], self._transition(keys=keys, args=args)))
            if outcome.applied:
                logged(task_id, outcome, message)
                return None
            # Not pending any more: answered (the answer waits in its list), or the task ended.
            raw = self.redis.rpop(self.keys.answer(task_id, key))
        return json.loads(cast(str, raw)) if raw else None

    # -- leases (a running tool body) ------------------------------------------------------
    @functools.cached_property
    def _lease(self) -> redis.commands.core.Script:
        return self.redis.register_script(source("lease"))

    def take_lease(
        self,
        task_id: str,
        owner: str,
        worker: str,
        holder: str,
        lease_ms: int,
        max_runs: int,
        *,
        capped: bool = True,
    ) -> tuple[TaskStatus | None, int, bool]:
        """Count a run of ``task_id`` by ``holder`` (``<worker> (pid <n>)``), lease it for
        ``lease_ms``, and announce the task ``working`` "running on <holder>": the task's
        status (None when it is gone), its runs so far, and whether the run was refused
        because ``owner`` already runs ``max_running_per_owner`` other tasks (never when
        not ``capped``: a run that cannot be put back). No lease is taken for a terminal or
        missing task, nor for a run beyond ``max_runs``, nor for a refused one. One round
        trip."""
        with translated():
            reply = cast(
                list[Any],
                self._lease(
                    keys=[
                        self.keys.task(task_id),
                        self.keys.leases_of(task_id),
                        self.keys.events(owner),
                        self.keys.running(owner),
                        self.keys.inputs(task_id),
                    ],
                    args=[
                        task_id,
                        lease_ms,
                        holder,
                        max_runs,
                        worker,
                        self.settings.stream_maxlen,
                        self.settings.session_ttl_s * 1000,
                        self.keys.owner_channel(owner),
                        f"running on {holder}",
                        self.settings.max_running_per_owner if capped else UNCAPPED,
                        2 * self.settings.task_ttl_max_ms,
                        owner,
                        self.keys.publish,
                    ],
                ),
            )
        status, runs = (TaskStatus(reply[0]) if reply[0] else None), int(reply[1])
        if len(reply) > 4:  # the owner is at its cap: no run, nothing announced
            return status, runs, True
        if len(reply) > 2:  # the run was announced
            logs.transition(
                task_id,
                TaskStatus.WORKING,
                f"running on {holder}",
                owner=owner,
                celery_id=str(reply[3]),
                tool=str(reply[2]),
                run=runs,
            )
        return status, runs, False

    def renew_lease(self, task_id: str, lease_ms: int) -> TaskStatus | None:
        """Push the lease of ``task_id`` ``lease_ms`` ahead (one round trip); the task's
        status, None when it is gone. A terminal or missing task loses its lease instead."""
        with translated():
            status, _ = cast(
                list[Any],
                self._lease(
                    keys=[self.keys.task(task_id), self.keys.leases_of(task_id)],
                    args=[task_id, lease_ms, "", 0],
                ),
            )
        return TaskStatus(status) if status else None

    def release_lease(self, task_id: str, owner: str, run: int) -> bool:
        """Drop the lease of ``task_id`` and its place among ``owner``'s running tasks,
        leaving its status as it is (run number ``run`` ended, the task did not), unless a
        later run took the lease meanwhile: whether it was dropped. One round trip."""
        with translated():
            released = self.redis.register_script(source("release"))(
                keys=[
                    self.keys.task(task_id),
                    self.keys.leases_of(task_id),
                    self.keys.running(owner),
                ],
                args=[task_id, run],
            )
        return bool(released)

    def holder(self, task_id: str) -> str | None:
        """``<worker> (pid <n>)`` of the latest run of ``task_id``, once one took its lease."""
        with translated():
            raw = self.redis.hget(self.keys.task(task_id), "holder")
        return str(raw) if raw else None
