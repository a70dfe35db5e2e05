"""``python -m bench.bridged [--calls N] [--tasks N] [--rounds N]``: what bridging an existing
Celery project (issue 12) costs, on a private redis-server of its own.

1. Publish: the bridge's create step per tool call (``TaskService.create``'s two steps:
   record the task, publish its message), in this process, with the demo app's inline path
   (the message pushed by the registry's create script) and with a project's app
   (examples/existing-project, ``MCP_BRIDGE_CELERY_APP``: Celery's ``send_task`` in a worker
   thread after the record). Blocks of calls alternate between the two; wall and CPU time
   per call.
2. Worker: ``celery -A proj worker`` of the example project running plain tasks
   (``proj.tasks.add``, no MCP headers) published straight to it, with and without
   ``workers.integration`` among its imports (a wrapper app module in a temporary directory
   sets ``imports``: the example and its task bodies stay as they are). Runs alternate;
   throughput from the first publish to the last result, and the worker's CPU per task.
3. Tracer: the same task through Celery's tracer in this process, before and after
   ``workers.integration`` is imported: the integration's own cost per task.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio.to_thread
from celery import Celery
from celery.app.trace import build_tracer

from bench.procs import cpu_ticks
from mcp_celery_bridge.bridge.publisher import Publisher, project_app
from mcp_celery_bridge.bridge.shared.clients import async_client
from mcp_celery_bridge.bridge.shared.registry import Registry
from mcp_celery_bridge.bridge.shared.settings import Settings
from mcp_celery_bridge.workers.bridged import declare
from mcp_celery_bridge.workers.tools import Tool
from tests.services import Process, RedisServer, celery_worker, children

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "examples" / "existing-project"

WRAPPER = """\
import os

from proj.celery import app

# The benchmark's switch, in place of the example's own ``imports``.
app.conf.imports = ["proj.tasks"] + (
    ["mcp_celery_bridge.workers.integration"] if os.environ["BENCH_INTEGRATION"] == "on" else []
)
"""


async def _create_block(
    registry: Registry, publisher: Publisher, declared: Tool, calls: int
) -> tuple[float, float]:
    """Wall and CPU seconds per call of ``calls`` creates, as ``TaskService.create`` makes
    them (each by an owner of its own: the per-owner limits are not what is measured)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        task_id, celery_id, owner = uuid.uuid4().hex, str(uuid.uuid4()), uuid.uuid4().hex
        arguments = {"x": 1, "y": 2}
        headers = {"mcp_task_id": task_id, "mcp_owner": owner, "mcp_tool": declared.name}
        message = b""
        if publisher.inline:
            message = publisher.inline_message(declared, celery_id, arguments, headers)
        await registry.create(
            task_id=task_id,
            owner=owner,
            tool=declared.name,
            celery_id=celery_id,
            ttl_ms=600_000,
            message="queued",
            queue=publisher.queue if publisher.inline else "",
            celery_message=message,
            era="legacy",
        )
        if not publisher.inline:
            await publisher.publish(declared, celery_id, arguments, headers)
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


async def publish_cost(server: RedisServer, calls: int, rounds: int) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    inline_settings = Settings(redis_url=server.url, key_prefix=prefix, queue=prefix)
    project_settings = Settings(redis_url=server.url, key_prefix=prefix, celery_app="proj")
    os.environ["PROJ_BROKER_URL"] = server.database(1)
    os.environ["PROJ_RESULT_BACKEND"] = server.database(2)
    sys.path.insert(0, str(PROJECT))
    app = project_app(project_settings)
    assert app is not None
    declared = declare("proj.tasks.add", name="add_numbers", input_schema={"type": "object"})
    client = async_client(server.url)
    registry = Registry(inline_settings, client)
    inline, project = Publisher(inline_settings), Publisher(project_settings, app)
    assert inline.inline and not project.inline
    figures: dict[str, list[tuple[float, float]]] = {"inline": [], "send_task": []}
    await _create_block(registry, inline, declared, 200)  # warm-up, not counted
    await _create_block(registry, project, declared, 200)
    for _ in range(rounds):
        figures["inline"].append(await _create_block(registry, inline, declared, calls))
        figures["send_task"].append(await _create_block(registry, project, declared, calls))
    await client.aclose()
    inline.close()
    await anyio.to_thread.run_sync(app.close)
    print(f"\n1. create step per call, {rounds} alternating blocks of {calls} calls")
    print("| block | inline wall | send_task wall | ratio | inline CPU | send_task CPU | ratio |")
    print("|---|---|---|---|---|---|---|")
    for n, (a, b) in enumerate(zip(figures["inline"], figures["send_task"], strict=True), 1):
        print(
            f"| {n} | {a[0] * 1e6:.0f} µs | {b[0] * 1e6:.0f} µs | {b[0] / a[0]:.2f}x "
            f"| {a[1] * 1e6:.0f} µs | {b[1] * 1e6:.0f} µs | {b[1] / a[1]:.2f}x |"
        )


TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _worker_cpu_s(proc: Process) -> float:
    """CPU seconds of the worker's main process and its pool children so far."""
    pids = [proc.pid, *children(proc.pid)]
    return sum(cpu_ticks(pid) or 0 for pid in pids) * TICK_S


def _throughput(
    server: RedisServer, integration: bool, tasks: int, logs: Path
) -> tuple[float, float]:
    """Tasks per second, and the worker's CPU seconds per task."""
    env = {
        "BENCH_INTEGRATION": "on" if integration else "off",
        "PROJ_BROKER_URL": server.database(1),
        "PROJ_RESULT_BACKEND": server.database(2),
        "MCP_BRIDGE_REDIS_URL": server.url,
        "PYTHONPATH": os.pathsep.join([str(logs), str(PROJECT), str(ROOT)]),
    }
    client = Celery("bench-client", set_as_current=False)
    client.conf.update(broker_url=env["PROJ_BROKER_URL"], result_backend=env["PROJ_RESULT_BACKEND"])
    name = f"{'on' if integration else 'off'}{uuid.uuid4().hex[:4]}"
    with celery_worker(
        env, logs, 2, name, app="benchproj", log_level="warning", ready=lambda p: True, cwd=logs
    ) as proc:
        # Ready when it answers a ping (the warning level prints no ready line).
        deadline = time.monotonic() + 60
        while not any(name + "@" in r for r in _ping(client)):
            assert proc.alive() and time.monotonic() < deadline, proc.output()[-2000:]
        client.send_task("proj.tasks.add", args=(0, 0)).get(timeout=30)  # warm
        cpu, start = _worker_cpu_s(proc), time.perf_counter()
        results = [client.send_task("proj.tasks.add", args=(i, 1)) for i in range(tasks)]
        client.ResultSet(results).join_native(timeout=300)
        elapsed, cpu = time.perf_counter() - start, _worker_cpu_s(proc) - cpu
    client.close()
    return tasks / elapsed, cpu / tasks


def _ping(client: Celery) -> list[str]:
    return [name for reply in client.control.ping(timeout=0.5) or [] for name in reply]


def worker_overhead(server: RedisServer, tasks: int, rounds: int, logs: Path) -> None:
    (logs / "benchproj.py").write_text(WRAPPER)
    rates: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for n in range(rounds):
        # Alternate which goes first, so drift of the shared machine hits both alike.
        for integration in (n % 2 == 0, n % 2 != 0):
            rates[integration].append(_throughput(server, integration, tasks, logs))
    print(f"\n2. worker, {tasks} plain proj.tasks.add per run, {rounds} rounds")
    print("| round | rate without | rate with | ratio | CPU/task without | CPU/task with | ratio |")
    print("|---|---|---|---|---|---|---|")
    pairs = list(zip(rates[False], rates[True], strict=True))
    for n, (off, on) in enumerate(pairs, 1):
        print(
            f"| {n} | {off[0]:.0f} tasks/s | {on[0]:.0f} tasks/s | {on[0] / off[0]:.3f}x "
            f"| {off[1] * 1e3:.2f} ms | {on[1] * 1e3:.2f} ms | {on[1] / off[1]:.3f}x |"
        )
    rate = statistics.median(on[0] / off[0] for off, on in pairs)
    cpu = statistics.median(on[1] / off[1] for off, on in pairs)
    print(f"median ratios: throughput {rate:.3f}x, worker CPU per task {cpu:.3f}x")


def _traced_us(tracer: Any, calls: int) -> float:
    request = {"id": "x", "delivery_info": {}, "hostname": "bench", "ignore_result": True}
    for _ in range(calls // 10):  # warm-up
        tracer("x", (1, 2), {}, request)
    cpu = time.process_time()
    for _ in range(calls):
        tracer("x", (1, 2), {}, request)
    return (time.process_time() - cpu) / calls * 1e6


def tracer_cost(calls: int = 50_000) -> None:
    """CPU per task in Celery's tracer (what a pool process runs per message), for
    ``proj.tasks.add`` before and after ``workers.integration`` is imported. Last: the
    import patches Celery's base Task for the rest of the process."""
    importlib.import_module("proj.tasks")  # registers the tasks on the project's app
    app: Celery = importlib.import_module("proj.celery").app
    task = app.tasks["proj.tasks.add"]
    task.ignore_result = True

    def traced() -> float:
        return _traced_us(build_tracer(task.name, task, app=app, eager=False), calls)

    without = traced()
    importlib.import_module("mcp_celery_bridge.workers.integration")
    with_it = traced()
    print(f"\n3. Celery's tracer, {calls} proj.tasks.add in process")
    print(f"without integration {without:.1f} µs, with {with_it:.1f} µs per task")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bridged")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-bridged-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            asyncio.run(publish_cost(server, args.calls, args.rounds))
            worker_overhead(server, args.tasks, args.rounds, Path(tmp))
            tracer_cost()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
