"""Prometheus metrics of one bridge process, at ``/metrics``.

Each replica exports its own figures; sum them across replicas. Counters of finished tasks
and the duration histograms count the tasks *this process created*, as it learns their end
from their owner's event channel (which this process listens to while it has tasks of that
owner in flight), so a task is counted once in the sum however many replicas there are.
Labels: ``tool``, ``era`` (legacy | modern), ``status`` (completed | failed | cancelled).
The notification lag is of the events this process hears.

The fleet's figures (queue depth, tasks running per worker) are read when scraped and are
the same on every replica: take one replica's (max), do not sum them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response

from mcp_celery_bridge.bridge.events import Event, EventHub
from mcp_celery_bridge.bridge.shared.errors import BridgeError

log = logging.getLogger(__name__)

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
#: Tasks this process created and has not seen end are forgotten after this long (an end
#: missed while the event channel was down), so the table cannot grow without bound.
FORGET_AFTER_S = 86_400.0
#: How long a scrape waits for the fleet's figures before answering without them.
SAMPLE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class FleetSources:
    """Where the fleet's figures come from, read at each scrape."""

    queue_depth: Callable[[], int]  # blocking (the broker): run in a thread
    running_by_worker: Callable[[], Awaitable[dict[str, int]]]


class Metrics:
    def __init__(self, hub: EventHub, fleet: FleetSources | None = None) -> None:
        self.fleet = fleet
        self.registry = CollectorRegistry()
        r = self.registry
        self.created = Counter(
            "mcp_bridge_tasks_created",
            "Tasks created by this process.",
            ["tool", "era"],
            registry=r,
        )
        self.finished = Counter(
            "mcp_bridge_tasks_finished",
            "Tasks created here that ended, by final status.",
            ["tool", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "mcp_bridge_task_duration_seconds",
            "From creation to the terminal status.",
            ["tool"],
            buckets=_SECONDS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "mcp_bridge_task_queue_wait_seconds",
            "From creation until a worker started it.",
            ["tool"],
            buckets=_SECONDS,
            registry=r,
        )
        self.in_flight = Gauge(
            "mcp_bridge_tasks_in_flight", "Tasks created here and not ended yet.", registry=r
        )
        self.streams = Gauge(
            "mcp_bridge_open_streams", "Open GET and subscriptions/listen streams.", registry=r
        )
        self.streams.set_function(hub.subscriber_count)
        self.lag = Histogram(
            "mcp_bridge_notification_lag_seconds",
            "From a task's transition in Redis to its fan-out in this process.",
            buckets=_SECONDS,
            registry=r,
        )
        self.redis_errors = Counter(
            "mcp_bridge_redis_errors",
            "Requests answered an error because Redis failed.",
            registry=r,
        )
        self.reaper_errors = Counter(
            "mcp_bridge_reaper_errors",
            "Passes of this process's lease reaper that failed (Redis unreachable, say).",
            registry=r,
        )
        self.queue_depth = Gauge(
            "mcp_bridge_queue_depth",
            "Tool calls waiting in the Celery queue (the fleet's: read when scraped).",
            registry=r,
        )
        self.running = Gauge(
            "mcp_bridge_tasks_running",
            "Tool calls a worker runs now, by worker (the fleet's, by their leases).",
            ["worker"],
            registry=r,
        )
        self.sample_errors = Counter(
            "mcp_bridge_fleet_sample_errors",
            "Scrapes that could not read the queue depth or the running tasks.",
            registry=r,
        )
        self.channels = Gauge(
            "mcp_bridge_event_channels",
            "Owners whose task events this process listens to (streams, waiters, its tasks "
            "in flight).",
            registry=r,
        )
        self.channels.set_function(hub.channel_count)
        self.hub = hub
        # task id -> (tool, created at (monotonic), started yet, owner)
        self._mine: dict[str, tuple[str, float, bool, str]] = {}
        self._swept = time.monotonic()

    def follow(self, task_id: str, tool: str, owner: str) -> None:
        """Follow a task this process is about to create, before it exists (so not even a
        fast task's end can come first); the caller holds ``owner``'s events for it
        (``EventHub.hold``), released here when the task ends or is forgotten."""
        self._mine[task_id] = (tool, time.monotonic(), False, owner)
        self.in_flight.set(len(self._mine))
        if time.monotonic() - self._swept > FORGET_AFTER_S / 24:
            self._forget_stale()

    def task_created(self, tool: str, era: str) -> None:
        self.created.labels(tool, era).inc()

    def unfollow(self, task_id: str) -> None:
        """The task followed was not created after all."""
        if task_id in self._mine:
            self._forget(task_id)
            self.in_flight.set(len(self._mine))

    def _forget_stale(self) -> None:
        """Drop the tasks whose end was missed (``FORGET_AFTER_S``), and their owners."""
        now = self._swept = time.monotonic()
        for task_id, (_, created, _, _) in list(self._mine.items()):
            if now - created > FORGET_AFTER_S:
                self._forget(task_id)

    def _forget(self, task_id: str) -> None:
        _, _, _, owner = self._mine.pop(task_id)
        self.hub.release(owner)

    def observe(self, event: Event) -> None:
        """Called by the event hub for every task event it hears."""
        self.lag.observe(max(0.0, time.time() - event.task.updated / 1000))
        mine = self._mine.get(event.task.id)
        if mine is None:
            return
        tool, created, started, owner = mine
        now = time.monotonic()
        if not started and event.task.holder:  # the event of a run's start names its holder
            self.queue_wait.labels(tool).observe(now - created)
            self._mine[event.task.id] = (tool, created, True, owner)
        if event.task.status.terminal:
            self._forget(event.task.id)
            self.finished.labels(tool, event.task.status.value).inc()
            self.duration.labels(tool).observe(now - created)
        elif now - created > FORGET_AFTER_S:
            self._forget(event.task.id)
        self.in_flight.set(len(self._mine))

    async def sample_fleet(self) -> None:
        """Read the queue depth and the running tasks; on failure (or after
        ``SAMPLE_TIMEOUT_S``) keep the last figures and count the error."""
        if self.fleet is None:
            return
        fleet = self.fleet
        try:
            with anyio.fail_after(SAMPLE_TIMEOUT_S):
                depth = await anyio.to_thread.run_sync(fleet.queue_depth, abandon_on_cancel=True)
                running = await fleet.running_by_worker()
        except (BridgeError, TimeoutError) as exc:
            self.sample_errors.inc()
            log.warning("could not read the fleet's figures: %s", exc)
            return
        self.queue_depth.set(depth)
        self.running.clear()  # a worker that runs nothing any more drops out
        for worker, count in running.items():
            self.running.labels(worker).set(count)

    async def endpoint(self, request: Request) -> Response:
        await self.sample_fleet()
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
