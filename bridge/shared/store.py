"""The store interfaces: what the bridge's task service (``TaskStore``) and a worker running a
tool (``WorkerStore``) need of the task registry, whatever holds it.

The Redis implementations are ``bridge.shared.registry.Registry`` and
``bridge.shared.sync_registry.SyncRegistry``; each change they make is one Lua step, so an
implementation must keep the same promises: a terminal status is final (a later transition
changes nothing and answers ``applied=False``), a transition and its event are one atomic
change, a question is answered at most once, and a lease is judged by one clock.
Every method may raise ``StoreUnavailable`` (the store cannot be reached) and, where it says
so, ``LimitExceeded``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from mcp_celery_bridge.bridge.shared.flows import Parts
from mcp_celery_bridge.bridge.shared.records import Outcome, Page, TaskRecord, TaskStatus


class TaskStore(Protocol):
    """The bridge's (asyncio) side."""

    async def create(
        self,
        *,
        task_id: str,
        owner: str,
        tool: str,
        celery_id: str,
        ttl_ms: int,
        hidden: bool = False,
        listed: bool = True,
        message: str = "",
        progress_token: str | int | None = None,
        can_ask: bool = False,
        queue: str = "",
        celery_message: bytes = b"",
        era: str = "",
    ) -> TaskRecord:
        """Record a ``working`` task (and queue ``celery_message`` with it, when given).
        Raises ``LimitExceeded`` when its owner is at one of its limits."""
        ...

    async def get(self, task_id: str) -> TaskRecord | None:
        """The record with its pending questions; None when unknown or expired."""
        ...

    async def visible(self, task_ids: list[str], owners: frozenset[str]) -> list[TaskRecord | None]:
        """Each record that one of ``owners`` owns and that is not hidden; else None."""
        ...

    async def pending(self, owner: str) -> tuple[str, list[tuple[str, str, dict[str, Any]]]]:
        """The questions pending on ``owner``'s listed tasks, as (task id, key, request),
        and the id of the owner's latest event then."""
        ...

    async def answer(
        self,
        task_id: str,
        key: str,
        answer: dict[str, Any],
        owners: frozenset[str] | None = None,
    ) -> bool:
        """Hand ``answer`` to the worker waiting on question ``key``, at most once; with
        ``owners``, only when one of them owns the task (checked before anything is read)."""
        ...

    async def transition(
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
        """Move a task that is not terminal to ``status``, and announce it."""
        ...

    async def remember_call(self, owner: str, request_id: str | int, task_id: str) -> None:
        """Map a plain call's JSON-RPC id to its hidden task."""
        ...

    async def find_call(self, owner: str, request_id: str | int) -> str | None: ...

    async def forget_call(self, owner: str, request_id: str | int) -> None: ...

    async def list_page(self, owner: str, after: int, size: int) -> Page:
        """Up to ``size`` of ``owner``'s listed tasks made after position ``after``."""
        ...

    async def running_by_worker(self) -> dict[str, int]:
        """How many tasks each worker runs now (by their leases)."""
        ...

    async def workflow_parts(self, task_id: str) -> Parts:
        """The unfinished Celery tasks of the workflow ``task_id`` started, if it did."""
        ...

    async def expired_leases(self, limit: int) -> list[str]:
        """Ids of tasks whose lease expired, oldest first."""
        ...

    async def fail_lost(self, task_id: str) -> Outcome:
        """Fail ``task_id`` for a lost worker, if its lease is still expired."""
        ...


class WorkerStore(Protocol):
    """A worker's (blocking) side, for one run of a tool."""

    def get(self, task_id: str) -> TaskRecord | None: ...

    def status(self, task_id: str) -> TaskStatus | None: ...

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
        """As ``TaskStore.transition``."""
        ...

    def ask(
        self, task_id: str, owner: str, key: str, request: dict[str, Any], message: str
    ) -> Outcome:
        """Put the task in ``input_required`` with one more pending question."""
        ...

    def wait_answer(self, task_id: str, key: str, timeout_s: float) -> dict[str, Any] | None: ...

    def withdraw(self, task_id: str, owner: str, key: str, message: str) -> dict[str, Any] | None:
        """Take question ``key`` back; the answer that came first, if one did."""
        ...

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
        """Count and lease a run, and announce it: (status, runs so far, refused as busy)."""
        ...

    def renew_lease(self, task_id: str, lease_ms: int) -> TaskStatus | None: ...

    def release_lease(self, task_id: str, owner: str, run: int) -> bool:
        """Drop the lease of run ``run``, which ended without ending its task (a Celery
        retry), unless a later run holds it: whether it was dropped."""
        ...

    def holder(self, task_id: str) -> str | None: ...
