"""The reaper: fails the tasks of workers that died without a word.

A worker killed whole (SIGKILL, the OOM killer, a lost host) fires no Celery signal, so its
running tasks would stay ``working`` forever. While a tool body runs, its pool process renews
a lease in Redis (``workers.lease``); every bridge process runs a reaper that, every
``reaper_interval_s``, fails the tasks whose lease expired. Each failure is one Lua step that
re-checks the lease and the status, so any number of bridges may reap at once and a renewal
that comes first wins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mcp_celery_bridge.bridge.shared.errors import BridgeError
from mcp_celery_bridge.bridge.shared.settings import Settings
from mcp_celery_bridge.bridge.shared.store import TaskStore

log = logging.getLogger(__name__)

#: Expired leases handled per Redis scan; a full batch is followed by another at once.
BATCH = 100


class Reaper:
    def __init__(self, settings: Settings, registry: TaskStore) -> None:
        self.settings = settings
        self.registry = registry
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Reaping is held back until this (monotonic) time; see ``_run``.
        self._quiet_until = 0.0
        #: Why the last pass failed (the error's type), or None when it did not: readiness
        #: (``bridge.health``) reports it.
        self.trouble: str | None = None
        #: Called for each failed pass (the metric of failed passes).
        self.on_error: Callable[[], None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mcp-reaper")

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping = True
            self._task.cancel()
            # ``wait``, not ``await``: the reaper's CancelledError must not pass for a
            # cancellation of the caller, nor the caller's for the reaper's.
            await asyncio.wait({self._task})

    async def reap(self) -> int:
        """One pass: fail every task whose lease expired; how many were failed."""
        failed = 0
        while True:
            expired = await self.registry.expired_leases(BATCH)
            if time.monotonic() < self._quiet_until:
                return failed
            for task_id in expired:
                if (await self.registry.fail_lost(task_id)).applied:
                    failed += 1
            if len(expired) < BATCH:
                return failed

    async def _run(self) -> None:
        while True:
            try:
                await self.reap()
                self.trouble = None
            except BridgeError as exc:
                self._failed(exc)
                # The workers could not renew their leases while Redis was away either: give
                # them one lease period after Redis is back before their leases count.
                self._quiet_until = time.monotonic() + self.settings.lease_s
                log.warning("reaper cannot reach Redis (%s); retrying", exc)
            except Exception as exc:
                self._failed(exc)
                log.exception("reaper pass failed; retrying")
            if self._stopping:
                # The cancellation can be lost: Python 3.11's ``asyncio.wait_for`` (in
                # redis-py's connect) returns a result that came with it (cpython#86296).
                return
            await asyncio.sleep(self.settings.reaper_interval_s)

    def _failed(self, exc: BaseException) -> None:
        cause = exc.__cause__ if isinstance(exc, BridgeError) and exc.__cause__ else exc
        self.trouble = type(cause).__name__
        if self.on_error is not None:
            self.on_error()
