"""The Celery app. Its configuration is computed lazily from the process's settings
(``workers.runtime``) the first time Celery reads it, so importing this module reads no
environment and opens no connection."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import celeryd_after_setup, celeryd_init, setup_logging
from kombu.utils.url import maybe_sanitize_url

from mcp_celery_bridge.bridge.shared import logs
from mcp_celery_bridge.bridge.shared.settings import Settings
from mcp_celery_bridge.workers import runtime

log = logging.getLogger(__name__)

app = Celery("mcp_celery_bridge")


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.celery_broker_url,
        "result_backend": settings.celery_result_backend,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": settings.queue,
        # The registry holds results; the backend copy would be a second write per task.
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        # Long tasks: one at a time per process, so a queued task is not stuck behind a
        # busy sibling, and a cancel of a queued task finds it still queued.
        "worker_prefetch_multiplier": 1,
        # Early ack (the default) runs a call at most once: a message whose worker dies is
        # gone, and the lease reaper fails its task. Late ack runs it at least once: a lost
        # pool process requeues it at once, a dead worker's message comes back after the
        # visibility timeout, and a task the reaper failed meanwhile is dropped by the
        # worker's registry check (``workers.tools``).
        "task_acks_late": settings.acks_late,
        "task_reject_on_worker_lost": settings.acks_late,
        "broker_transport_options": settings.celery_broker_options,
        "result_backend_transport_options": settings.celery_backend_options,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "imports": ["mcp_celery_bridge.workers.integration", *settings.tool_modules],
        **settings.celery_tls,
    }


@setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    # Connected, this replaces Celery's own set-up: the worker logs in the bridge's format
    # (JSON off a terminal), so one log pipeline reads both.
    logs.configure(loglevel or "INFO", runtime.settings().log_format)


@celeryd_init.connect
def _early_logging(options: Any = None, **_: Any) -> None:
    # The worker warns (running as root, say) before Celery sets up logging: set it up
    # first, so the warning is a line in the worker's format too.
    level = (options or {}).get("loglevel") or "INFO"
    logs.configure(level, runtime.settings().log_format)


@celeryd_after_setup.connect
def _banner(sender: Any = None, instance: Any = None, **_: Any) -> None:
    # Celery prints its banner to stdout as plain text; in JSON mode it becomes one line with
    # the same facts (the broker without its password, as Celery shows it).
    if instance is None or not logs.is_json(runtime.settings().log_format):
        return
    instance.quiet = True
    queues = sorted(instance.app.amqp.queues.keys())
    log.info(
        "worker %s starting",
        sender,
        extra=logs.fields(
            worker=str(sender),
            pool=getattr(instance.pool_cls, "__module__", str(instance.pool_cls)),
            concurrency=instance.concurrency,
            queues=queues,
            broker=maybe_sanitize_url(instance.app.conf.broker_url or ""),
            tasks=sorted(name for name in instance.app.tasks if not name.startswith("celery.")),
        ),
    )


app.add_defaults(lambda: celery_config(runtime.settings()))
