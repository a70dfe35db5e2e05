"""A queue outage: the only worker of a queue stops; tasks created meanwhile stay queued and
run when a worker comes back, except one cancelled meanwhile, which never runs although no
worker heard its revoke broadcast. (``tests/test_tasks.py`` covers a cancel while queued on a
queue that never had a worker; this covers a worker going away and a new one taking over.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import redis

from tests.client import RUNNING, TERMINAL, connect
from tests.reliability.harness import Recorder, figure_time
from tests.services import celery_worker, eventually, keys_of, running_bridge

pytestmark = pytest.mark.anyio


@pytest.mark.timeout(90)
async def test_tasks_wait_out_a_queue_outage_and_a_cancel_meanwhile_holds(
    own_env: dict[str, str],
    log_dir: Path,
    tmp_path: Path,
    redis_client: redis.Redis,
    figure: Callable[[str], None],
) -> None:
    mark = tmp_path / "doomed"
    pid_file = tmp_path / "doomed.pid"
    keys = keys_of(own_env)
    with running_bridge(own_env, log_dir, "bridge-outage") as bridge:
        async with connect(bridge.url) as client:
            recorder = Recorder(client)
            async with anyio.create_task_group() as tg:
                await tg.start(recorder.run)
                # The queue works; then its only worker stops (a deploy, a crash loop).
                with celery_worker(own_env, log_dir, concurrency=1, name="outage1"):
                    first = await client.create_task("echo", {"text": "before"})
                    done = await client.wait_status(first["taskId"], TERMINAL)
                    assert done["status"] == "completed"

                waiting = await client.create_task("sleep", {"seconds": 0.2, "steps": 2})
                doomed = await client.create_task("mark_after", {"seconds": 0.1, "path": str(mark)})
                # Nothing consumes the queue: both stay queued for as long as we look.
                with anyio.move_on_after(1.0):
                    while True:
                        for task in (waiting, doomed):
                            now = await client.get_task(task["taskId"])
                            assert now["status"] == "working", now
                            assert now["statusMessage"] == "queued", now
                        await anyio.sleep(0.1)
                cancelled = await client.call("tasks/cancel", {"taskId": doomed["taskId"]})
                assert cancelled["status"] == "cancelled"

                # A new worker never heard that revoke broadcast; the registry check holds.
                celery_id = str(redis_client.hget(keys.task(doomed["taskId"]), "celery_id"))
                back = time.monotonic()
                with celery_worker(own_env, log_dir, concurrency=1, name="outage2") as second:
                    done = await client.wait_status(waiting["taskId"], TERMINAL, timeout=20)
                    took = figure_time(back)
                    assert done["status"] == "completed", done
                    await eventually(
                        lambda: f"mcp.mark_after[{celery_id}] ignored" in second.output(),
                        20,
                        "the worker to drop the cancelled message",
                    )
                tg.cancel_scope.cancel()

            assert not pid_file.exists() and not mark.exists(), "the cancelled task ran"
            final = await client.get_task(doomed["taskId"])
            assert final["status"] == "cancelled", final
            assert final["statusMessage"] == "cancelled by the client", final
            assert redis_client.hget(keys.task(doomed["taskId"]), "runs") is None
            about_doomed = [n for n in recorder.notices if n.task_id == doomed["taskId"]]
            assert [n.status for n in about_doomed] == ["cancelled"], about_doomed
            assert not any(RUNNING.match(n.message) for n in about_doomed)
    figure(
        f"queued through a worker outage: completed {took} s after a worker was started; "
        "the task cancelled meanwhile never ran"
    )
