"""Cancel racing completion: 500 short tasks, each cancelled with a random delay, so the cancel
lands before the body starts, while it runs, or after it finished. Whatever the order, each
task ends in exactly one terminal status that every view agrees on."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import redis

from tests.client import RUNNING, TERMINAL, RpcError, connect
from tests.reliability.harness import Recorder, assert_exactly_once, stream_ids
from tests.services import celery_worker, keys_of, running_bridge

pytestmark = pytest.mark.anyio

TRIALS = 500
POOL = 6
#: Trials in flight at once: fewer than the pool's processes, since every cancel that lands
#: while a body runs costs a process (SIGTERM) that the pool must fork again. So most tasks
#: start as soon as they are created, and the cancel races the body rather than a queue.
IN_FLIGHT = 4


@pytest.mark.timeout(120)
async def test_cancel_racing_completion_ends_in_one_terminal_status(
    own_env: dict[str, str],
    log_dir: Path,
    redis_client: redis.Redis,
    figure: Callable[[str], None],
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    keys = keys_of(own_env)
    answers: dict[str, str] = {}
    with (
        celery_worker(own_env, log_dir, concurrency=POOL, name="race"),
        running_bridge(own_env, log_dir, "bridge-race") as bridge,
    ):
        async with connect(bridge.url) as client:
            recorder = Recorder(client)
            limit = anyio.Semaphore(IN_FLIGHT)

            # Where the cancel lands depends on how fast the worker picks tasks up, which
            # varies (each cancel that lands on a running body costs the pool a process, and
            # the pool forks replacements lazily). So the delay before each cancel adapts:
            # longer while cancels keep beating the body's start, shorter while they keep
            # arriving after it finished; it settles where they race.
            delay = 0.05

            def outcome(task_id: str) -> str:
                notices = recorder.by_task[task_id]
                if notices[-1].status == "completed":
                    return "completed"
                if any(RUNNING.match(n.message) for n in notices):
                    return "cancelled while running"
                return "cancelled before it ran"

            async def trial() -> None:
                nonlocal delay
                async with limit:
                    seconds = round(rng.uniform(0.01, 0.05), 3)
                    task = await client.create_task("sleep", {"seconds": seconds, "steps": 1})
                    task_id = task["taskId"]
                    # The jitter is the experiment: it decides where the cancel lands.
                    await anyio.sleep(rng.uniform(0.5 * delay, 1.5 * delay))
                    try:
                        cancelled = await client.call("tasks/cancel", {"taskId": task_id})
                    except RpcError as err:
                        assert err.code == -32602, err
                        assert "terminal status 'completed'" in err.message, err
                        answers[task_id] = "completed"
                    else:
                        assert cancelled["status"] == "cancelled", cancelled
                        answers[task_id] = "cancelled"
                    await recorder.wait_terminal({task_id}, 30)
                    landed = outcome(task_id)
                    if landed == "cancelled before it ran":
                        delay = min(delay * 1.15, 2.0)
                    elif landed == "completed":
                        delay = max(delay / 1.15, 0.005)

            async with anyio.create_task_group() as tg:
                await tg.start(recorder.run)
                async with anyio.create_task_group() as trials:
                    for _ in range(TRIALS):
                        trials.start_soon(trial)
                await recorder.wait_terminal(set(answers), 60)
                tg.cancel_scope.cancel()

            # Every view agrees with what tasks/cancel answered.
            checks = anyio.Semaphore(10)

            async def check(task_id: str) -> None:
                async with checks:
                    expected = answers[task_id]
                    task = await client.get_task(task_id)
                    assert task["status"] == expected, (task, expected)
                    if expected == "cancelled":
                        assert task["statusMessage"] == "cancelled by the client", task
                        try:
                            await client.call("tasks/result", {"taskId": task_id})
                        except RpcError as err:
                            assert err.code == -32603, err
                            assert err.data == {"taskId": task_id, "status": "cancelled"}
                        else:
                            raise AssertionError(f"cancelled {task_id} has a result")
                    else:
                        result = await client.call("tasks/result", {"taskId": task_id})
                        assert not result.get("isError"), result
                        assert result["content"][0]["text"].startswith("slept "), result

            async with anyio.create_task_group() as tg:
                for task_id in answers:
                    tg.start_soon(check, task_id)

    assert len(answers) == TRIALS
    terminal = {n.task_id: n.status for n in recorder.notices if n.status in TERMINAL}
    assert terminal == answers
    expected = stream_ids(redis_client, keys, client.session_id or "")
    assert_exactly_once(recorder, expected, set(answers))

    outcomes = Counter(outcome(task_id) for task_id in answers)
    assert outcomes["completed"] and outcomes["cancelled while running"], outcomes
    figure(
        f"{TRIALS} trials (seed {seed}; cancels at last sent "
        f"{500 * delay:.0f}-{1500 * delay:.0f} ms after create): "
        f"{dict(outcomes)}; "
        "each exactly one terminal notification, tasks/get and tasks/result agree"
    )
