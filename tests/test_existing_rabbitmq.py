"""The existing project of examples/existing-project with RabbitMQ as its broker: a vhost of
the test's own on the machine's RabbitMQ (127.0.0.1:5672, guest/guest), the result backend
and the MCP registry on a private redis-server, the project's own ``celery -A proj worker``
processes, driven through the official MCP SDK client. The bridge publishes through the
project's app, so over amqp; its revoke and ping are amqp broadcasts, its queue depth a
passive declare.

RabbitMQ is not optional here: CI runs where it runs, so a RabbitMQ that does not answer
fails these tests with the reason, rather than skipping them."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import anyio
import httpx
import pytest
from celery import Celery

from mcp_celery_bridge.bridge.publisher import Publisher
from mcp_celery_bridge.bridge.shared.settings import Settings
from tests.existing import (
    Project,
    finished,
    project_services,
    report_with_progress,
    running_pid,
    sdk_session,
)
from tests.services import eventually, pid_running

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:The experimental tasks API:DeprecationWarning"),
]

RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    """The amqp URL of a vhost made for this module, deleted at the end whatever happened."""
    try:
        socket.create_connection((RABBIT_HOST, RABBIT_PORT), timeout=2).close()
    except OSError as exc:
        pytest.fail(
            f"RabbitMQ is not reachable on {RABBIT_HOST}:{RABBIT_PORT} ({exc}): these tests "
            "need it (start rabbitmq-server; CI runs on a machine that has it)"
        )
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is not on PATH: these tests make a RabbitMQ vhost with it")
    name = f"mcpt-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/{name}"
    finally:
        _rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="module")
def project(vhost: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    data, logs = tmp_path_factory.mktemp("rabbit-redis"), tmp_path_factory.mktemp("rabbit-logs")
    with project_services(data, logs, broker_url=vhost) as running:
        yield running


async def test_progress_notifications_and_the_result_over_amqp(project: Project) -> None:
    await report_with_progress(project.url, 4)


async def test_task_routes_send_render_pdf_to_the_pdf_worker_over_amqp(project: Project) -> None:
    async with sdk_session(project.url) as (session, _):
        result = await session.call_tool("render_pdf", {"pages": 2})
    assert result.isError is not True, result
    assert result.structuredContent is not None
    assert str(result.structuredContent["worker"]).startswith("pdf@")


async def test_cancel_terminates_the_pool_process_over_amqp(project: Project) -> None:
    async with sdk_session(project.url) as (session, seen):
        created = await session.experimental.call_tool_as_task(
            "build_report", {"rows": 2000, "delay": 0.05}, meta={"progressToken": "long"}
        )
        task_id = created.task.taskId
        await eventually(lambda: seen.progress, 20, "the report's first progress")
        pid = await running_pid(seen)
        assert pid_running(pid)
        await session.experimental.cancel_task(task_id)
        task = await finished(session, task_id)
        assert task.status == "cancelled"
        # The revoke is an amqp broadcast: only a terminate that arrived ends the process.
        await eventually(lambda: not pid_running(pid), 20, f"pool process {pid} ends")
        progress_after = len(seen.progress)
        with anyio.move_on_after(0.5):
            await eventually(lambda: len(seen.progress) > progress_after, 0.5, "more")
    assert len(seen.progress) == progress_after


async def test_readiness_pings_and_metrics_read_the_queue_over_amqp(project: Project) -> None:
    base = project.url.removesuffix("/mcp")
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        ready = await client.get("/readyz")
        metrics = (await client.get("/metrics")).text
    assert ready.status_code == 200, ready.text
    workers = ready.json()["workers"]
    assert any(w.startswith("proj@") for w in workers), workers
    assert any(w.startswith("pdf@") for w in workers), workers
    assert "mcp_bridge_queue_depth 0.0" in metrics, metrics
    assert "mcp_bridge_fleet_sample_errors_total 0.0" in metrics, metrics


def test_queue_depth_counts_waiting_messages_on_rabbitmq(vhost: str) -> None:
    # No worker consumes this queue, so what is published stays there to be counted.
    queue = f"depth-{uuid.uuid4().hex[:8]}"
    app = Celery("depth", set_as_current=False)
    app.conf.update(broker_url=vhost, task_default_queue=queue)
    publisher = Publisher(Settings(), app)
    try:
        assert publisher.queue_depth() == 0  # not declared yet: none, and nothing created
        for _ in range(3):
            app.send_task("proj.tasks.add", kwargs={"x": 1, "y": 2}, ignore_result=True)
        assert publisher.queue_depth() == 3
    finally:
        publisher.close()
        app.close()
