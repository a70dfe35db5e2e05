"""Tool calls run inline (the fast tier): threads of the test process take the Celery
messages the bridge pushed onto its queue (BRPOP, as kombu's Redis transport consumes) and
run each as a worker would, through Celery's own ``Request.execute``: the registered task,
with the message's headers as its request (so ``mcp_task_id`` and ``mcp_owner`` reach
``task.request`` as in a pool process), ``workers.tools`` taking the lease and recording the
outcome, and Celery's signals firing in the same process.

What needs a process stays with the real workers (``tests.services.celery_worker``): a revoke
that terminates (a thread cannot be killed), a lost pool process, a restart, time limits
(enforced by signals from the worker's main process)."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import redis
from celery.signals import task_unknown
from celery.worker.request import Request
from kombu.message import Message

import mcp_celery_bridge.workers.signals  # noqa: F401  (connects the handlers a worker imports at start)
from mcp_celery_bridge.bridge.shared.settings import Settings
from mcp_celery_bridge.workers import runtime
from mcp_celery_bridge.workers.app import app, celery_config

log = logging.getLogger(__name__)

#: How long a consumer blocks on the queue before it looks at its stop flag again.
POLL_S = 0.5


def configure(settings: Settings) -> None:
    """Point this process's worker code at ``settings``: its registry (``workers.runtime``)
    and its Celery app (the broker a retry or a progress event goes to)."""
    app.conf.update(celery_config(settings))
    runtime.configure(settings)


class InlineWorker:
    """``concurrency`` consumer threads on ``settings.queue``, each running one call at a
    time (prefetch 1, as the real workers are configured). No more than the owner's share
    (``max_running_per_owner``, 4 by default): a worker defers an owner's call beyond it,
    a Celery retry each time, which one owner's burst of calls would turn into a loop."""

    def __init__(self, settings: Settings, concurrency: int = 4) -> None:
        self.settings = settings
        self.concurrency = concurrency
        self.hostname = f"inline@{socket.gethostname()}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._redis = redis.Redis.from_url(settings.redis_url)

    def start(self) -> None:
        configure(self.settings)
        for number in range(self.concurrency):
            thread = threading.Thread(
                target=self._consume, name=f"inline-worker-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop taking messages. A call still running goes on in its daemon thread (a tool
        that never checks for a cancel cannot be stopped in-process)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=POLL_S * 5)
        self._redis.close()

    def _consume(self) -> None:
        client = redis.Redis.from_url(self.settings.redis_url)
        with contextlib.closing(client):
            while not self._stop.is_set():
                popped = client.brpop([self.settings.queue], timeout=POLL_S)
                if popped is None:
                    continue
                try:
                    self.run(popped[1])
                except Exception:  # a worker logs a broken message and goes on
                    log.exception("the inline worker could not run a message")

    def run(self, raw: bytes | str) -> None:
        payload = json.loads(raw)
        headers = payload["headers"]
        properties = payload["properties"]
        delay = _seconds_until(headers.get("eta"))
        if delay > 0:
            # A retry's countdown (``workers.tools._defer``): back on the queue when due, as
            # a worker holds an eta message in its timer without taking a pool slot.
            timer = threading.Timer(delay, self._redis.lpush, (self.settings.queue, raw))
            timer.daemon = True
            timer.start()
            return
        body: Any = payload["body"]
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        message = Message(
            body=body,
            delivery_tag=properties.get("delivery_tag"),
            content_type=payload.get("content-type"),
            content_encoding=payload.get("content-encoding"),
            delivery_info=properties.get("delivery_info"),
            properties=properties,
            headers=headers,
        )
        name = headers["task"]
        if name not in app.tasks:
            task_unknown.send(
                sender=None, message=message, exc=KeyError(name), name=name, id=headers["id"]
            )
            return
        Request(message, app=app, hostname=self.hostname).execute()


def _seconds_until(eta: str | None) -> float:
    if not eta:
        return 0.0
    due = datetime.fromisoformat(eta)
    now = datetime.now(due.tzinfo)
    return (due - now).total_seconds()


@contextlib.contextmanager
def inline_worker(settings: Settings, concurrency: int = 4) -> Iterator[InlineWorker]:
    worker = InlineWorker(settings, concurrency)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
