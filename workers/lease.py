"""The lease a running tool body holds, so the bridges can tell a dead worker from a slow one.

A worker killed whole fires no Celery signal. While a tool body runs, a thread of its pool
process renews the task's lease every ``lease_s / 3`` (one Redis round trip); a bridge's
reaper (``bridge.reaper``) fails a task whose lease expired. A body that holds the GIL in one
C call for longer than ``lease_s`` starves the thread and is reaped as lost: raise
``MCP_BRIDGE_LEASE_S`` above the longest such call.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from mcp_celery_bridge.bridge.shared.errors import BridgeError
from mcp_celery_bridge.bridge.shared.store import WorkerStore

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews the lease of ``task_id`` from a daemon thread while the ``with`` block runs.
    The lease is taken before (``take_lease``), so a task is never running without one, and
    dropped by the task's terminal transition (transition.lua), which the end of the body
    always brings: its result or error, or the cancel that stopped it. If that transition
    is lost, the lease expires and the reaper fails the task rather than leave it working."""

    def __init__(self, registry: WorkerStore, task_id: str, lease_s: float) -> None:
        self.registry = registry
        self.task_id = task_id
        self.lease_ms = int(lease_s * 1000)
        self.every_s = lease_s / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"mcp-lease-{task_id[:8]}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        # A renewal stuck on an unreachable Redis must not hold the task's end; a renewal
        # after the terminal transition finds the task terminal and drops the lease.
        self._thread.join(timeout=self.every_s)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                status = self.registry.renew_lease(self.task_id, self.lease_ms)
            except BridgeError as exc:
                # Keep trying: a short Redis outage must not cost a running task its lease.
                log.warning("could not renew the lease of %s: %s", self.task_id, exc)
                continue
            if status is None or status.terminal:
                return  # cancelled or gone: the lease was dropped with it
