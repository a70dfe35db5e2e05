"""``python -m bench.fanout [--tasks N] [--rounds R] [--base CHECKOUT]``: what the bridges that
serve nothing pay for the events of the others' tasks (issue 13: "with 3 bridges and the load
on one, the idle bridges' CPU per 1,000 tasks is below 5% of today's"), on a private
redis-server of its own.

Each set is a worker and three ``serve`` processes started from one source tree (``--base``,
the code before the change, and this tree), with a key prefix and a queue of their own: N
``echo`` tasks go through the first bridge (16 sessions, each with its GET stream, as the
throughput scenario drives them), and the other two bridges' utime + stime is read from
/proc before and after. The same idle bridges are also read over a window as long with no
load at all (their background: the reaper's pass each second, health checks), reported
apart. Sets of the two trees alternate, ``--rounds`` times each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.procs import CLK_TCK, cpu_ticks
from bench.scenarios import _bridge_throughput
from tests.services import Bridge, RedisServer, celery_worker, test_env

ROOT = Path(__file__).resolve().parent.parent
BRIDGES = 3


def _ticks(pids: list[int]) -> list[int]:
    ticks = [cpu_ticks(pid) for pid in pids]
    assert all(t is not None for t in ticks), "a bridge died"
    return [t for t in ticks if t is not None]


def one_set(tree: Path, redis: RedisServer, log_dir: Path, tasks: int) -> dict[str, float]:
    """CPU seconds per 1,000 tasks of each idle bridge (mean), under load and idle."""
    env = test_env(redis.url)
    # A checkout from before the package rename (issue 12) names its modules bridge and
    # workers, and its tools module so.
    old = not (tree / "mcp_celery_bridge").exists()
    app = "workers" if old else "mcp_celery_bridge.workers"
    program = (sys.executable, "-m", "bridge.cli" if old else "mcp_celery_bridge.bridge.cli")
    if old:
        env["MCP_BRIDGE_TOOL_MODULES"] = "workers.examples,tests.tools"
    with contextlib.ExitStack() as stack:
        stack.enter_context(celery_worker(env, log_dir, 2, cwd=tree, app=app))
        bridges = [
            Bridge(
                env,
                log_dir,
                f"{tree.name}-b{i}-{env['MCP_BRIDGE_QUEUE']}",
                "warning",
                cwd=tree,
                program=program,
            )
            for i in range(BRIDGES)
        ]
        for bridge in bridges:
            bridge.start()
            stack.callback(bridge.stop)
        time.sleep(1.0)  # the listeners subscribed, start-up work done
        busy, idle = bridges[0], [b.pid for b in bridges[1:]]
        # Warm-up: the first tasks pay imports and connection set-up on the busy side.
        asyncio.run(_bridge_throughput(busy.port, 50, 16))
        time.sleep(0.5)
        before, busy_before, t0 = _ticks(idle), _ticks([busy.pid]), time.monotonic()
        asyncio.run(_bridge_throughput(busy.port, tasks, 16))
        after, busy_after, seconds = _ticks(idle), _ticks([busy.pid]), time.monotonic() - t0
        time.sleep(0.5)
        quiet_before = _ticks(idle)
        time.sleep(seconds)
        quiet_after = _ticks(idle)
    per_k = 1000 / tasks
    used = [(a - b) / CLK_TCK for a, b in zip(after, before, strict=True)]
    quiet = [(a - b) / CLK_TCK for a, b in zip(quiet_after, quiet_before, strict=True)]
    return {
        "idle_cpu_per_1000": statistics.mean(used) * per_k,
        "idle_background_per_1000": statistics.mean(quiet) * per_k,
        "busy_cpu_per_1000": (busy_after[0] - busy_before[0]) / CLK_TCK * per_k,
        "seconds": seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--base",
        type=Path,
        help="a checkout of the code to compare against (e.g. `git worktree add --detach "
        "../base <rev>`), with this tree's package layout; without it only this tree is "
        "measured",
    )
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    redis = RedisServer(log_dir)
    redis.start()
    results: dict[str, list[dict[str, float]]] = {"after": []}
    if args.base is not None:
        results["before"] = []
    try:
        for r in range(args.rounds):
            order = [("before", args.base), ("after", ROOT)] if args.base else [("after", ROOT)]
            for label, tree in order if r % 2 == 0 else order[::-1]:
                figures = one_set(tree, redis, log_dir, args.tasks)
                results[label].append(figures)
                print(
                    f"round {r + 1} {label}: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()),
                    flush=True,
                )
    finally:
        redis.stop()
    mean = {
        label: {k: statistics.mean(f[k] for f in runs) for k in runs[0]}
        for label, runs in results.items()
    }
    for label, figures in mean.items():
        print(
            f"{label}: idle bridge CPU per 1,000 tasks {figures['idle_cpu_per_1000']:.3f} s, "
            f"its background (no load, same window) "
            f"{figures['idle_background_per_1000']:.3f} s, busy bridge "
            f"{figures['busy_cpu_per_1000']:.3f} s",
            flush=True,
        )
    if "before" in mean:
        ratio = mean["after"]["idle_cpu_per_1000"] / mean["before"]["idle_cpu_per_1000"]
        print(f"idle bridge, after/before: {ratio:.1%}; logs in {log_dir}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
