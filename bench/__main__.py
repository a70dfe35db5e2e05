"""``python -m bench all|<scenario> [--quick] [--runs N] [--out PATH]``: start the services,
run the scenarios (each at least twice, bridge and raw Celery in the same run), and write
the results as markdown (bench/RESULTS.md for ``all``). ``python -m bench peers-setup``
only makes the peers' venvs (``bench/peer.py``), which ``all`` and ``peers`` make when
missing.

Unless ``BENCH_REDIS_URL`` names a Redis database to use, the run gets a private
redis-server of its own (database 9), started here and stopped at the end: the benchmark
flushes its database, and no one else's may be touched."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import memory, peer, profile, scaling, scenarios, sidebyside
from bench.report import write
from bench.scenarios import QUICK, Context, Sizes
from bench.services import (
    BRIDGE_LOG_LEVEL,
    REDIS_URL,
    Services,
    worker_line,
)
from bench.stats import Result, Row

HERE = Path(__file__).resolve().parent

SCENARIOS: dict[str, tuple[str, Callable[[Context, int], Result]]] = {
    "create": ("1. Create latency", scenarios.create_latency),
    "e2e": ("2. End-to-end latency", scenarios.e2e_latency),
    "throughput": ("3. Throughput", scenarios.throughput),
    "cancel": ("4. Cancel latency", scenarios.cancel_latency),
    "list": ("5. Listing at scale", scenarios.listing),
    "streams": ("6. Streams at scale", scenarios.streams),
    "registry": ("7. Registry cost", scenarios.registry_cost),
    "peers": ("8. The peers, side by side", sidebyside.peers),
    "scaling": ("9. Cost as work grows", scaling.scaling),
    "memory": ("10. Redis memory per finished task", memory.memory),
}

METHODS: dict[str, list[str]] = {
    "create": [
        "Bridge: one session, one keep-alive HTTP connection, task-augmented `tools/call` of "
        "`echo` one after another; time from writing the request to reading the whole "
        "`CreateTaskResult`. Raw: `noop.apply_async()` call time (publish, including the "
        "result backend's SUBSCRIBE that Celery issues when a result will be waited on). "
        "20 warm-up calls are not counted; the workers drain the queue between sides.",
    ],
    "e2e": [
        "Bridge: the session's GET SSE stream is open on its own connection; time from "
        "writing the `tools/call` to the chunk holding the task's `completed` notification. "
        "Raw: `apply_async().get()` (Redis result backend, pub/sub).",
    ],
    "throughput": [
        "Bridge: 16 sessions, each with its GET stream and its own POST connection, create "
        "their share of the tasks one after another (all 16 concurrently); the clock stops "
        "at the last `completed` notification. Raw: one thread publishes every task, then "
        "`ResultSet.join_native()` collects every result. Bridge CPU per task = the bridge "
        "process's utime + stime (/proc/<pid>/stat, 10 ms ticks) over the bridge run "
        "(sessions, streams, creates, notifications; its idle background, the reaper's pass "
        "each second, included) / N; issue 17's target <= 0.5 ms.",
    ],
    "cancel": [
        "A CPU-bound task (`spin`, 20 s) runs; its pool child's pid comes from the task's "
        '`statusMessage` ("running on <host> (pid N)") for the bridge and from '
        "`update_state(meta={'pid'})` for raw. Once the child has burnt 2 clock ticks, a "
        "watcher thread polls /proc/<pid>/stat every 1 ms and the cancel is sent "
        "(`tasks/cancel` over HTTP; raw: `control.revoke(id, terminate=True, "
        "signal='SIGTERM')`). Stopped = the pid is gone or a zombie ('exited'), or "
        "utime+stime stopped moving for 200 ms ('idle', time of the last move; 10 ms "
        "tick resolution). 2 warm-up trials are not counted.",
    ],
    "list": [
        "Three sessions' registries are seeded directly with the bridge's `Registry.create` "
        "(`bench/seed.py`; tasks stay `working`, nothing runs). Time of `tasks/list` over "
        "HTTP: the first page, and a page from the middle (cursor at half the owner's "
        "sequence range); one connection, the owners and page kinds taken in turn "
        "request by request so that drift of the shared machine hits them alike. No raw "
        "Celery equivalent: the ratio is against the smallest owner, as the target is.",
    ],
    "streams": [
        "For each N a fresh `mcp-celery-bridge serve` process (so RSS starts clean): N "
        "sessions are initialized over 32 connections, then N GET streams are opened (one "
        "socket each, raw asyncio client, 50 opened at a time). RSS (/proc/<pid>/status "
        "VmRSS) is read before the streams, with the N streams idle for 2 s, and after the "
        "notifications; RSS per idle stream = the difference / N (1 KB = 1,000 bytes; issue "
        "17's target <= 16 KB at the largest N, issue 6's was < 50 KB). Then each session creates "
        "one task of the benchmark's `gated` tool (`bench/tools.py`, 16 POST connections); "
        "the tasks wait for a Redis key, set once all N exist, so every notification is "
        "fanned out while the bridge does nothing else. Lag = time the chunk with a "
        "stream's `completed` notification arrived minus the notification's "
        "`lastUpdatedAt` (Redis TIME when the worker's transition ran; ms resolution). "
        "Redis connections held by the bridge = CLIENT LIST entries whose client port is "
        "a socket of the bridge pid (/proc/<pid>/fd -> /proc/net/tcp), counted with the N "
        "streams idle; the target counts as met when the largest N holds at most 10% more "
        "than the smallest (the registry pool's high-water mark follows request "
        "concurrency, not streams) and only one of them is a pub/sub listener. Raw "
        "analogue: one client process (`python -m bench.rawcelery waitmany N`) publishes N "
        "gated no-op tasks and waits on all N AsyncResults at once (Celery's Redis result "
        "consumer: one pub/sub connection, a SUBSCRIBE per task); lag = result message "
        "received minus the result's `date_done`; RSS per pending AsyncResult; its Redis "
        "connections.",
    ],
    "registry": [
        "Method: Redis MONITOR on a raw socket, keeping DB 9 lines only (other engineers' "
        "tests use other databases; their lines are counted and reported, never mixed in). "
        "Each MONITOR line names the client's address; its port is traced to the process "
        "owning that socket (/proc/<pid>/fd -> /proc/net/tcp) among: the bridge, the "
        "bridge worker's main process and pool children, the raw worker's, and the bench "
        "client. A round trip = one command, a MULTI..EXEC block, or commands of one "
        "connection that Redis ran < 30 us apart (one pipelined write); a Lua script call "
        "is one round trip and the commands it runs are listed under 'lua'. First a 3 s "
        "quiet window is recorded (BRPOP timeouts, heartbeats, health checks) and its rate "
        "subtracted from the measured window. Bytes: MEMORY USAGE (SAMPLES 0) of the keys "
        "a finished task leaves behind until its TTL ends (task hash + its share of the "
        "owner index and the event stream; raw: the result key), and the broker message "
        "size (LPUSH payload). Client side of the bridge = the bridge process; raw's = "
        "the client calling `apply_async().get()`. 'Registry round trips' are those that "
        "touch the bridge's own keys (the run's key prefix: sessions, task hashes, "
        "indexes, leases; the issue's target, 'pipelines and Lua count as one'); 'all "
        "round trips' add Celery's own traffic (queue LPUSH/BRPOP, unacked bookkeeping, "
        "task events, result-backend subscriptions), which raw Celery pays too. A figure "
        "within 0.05 of the target counts as met (the idle subtraction is approximate). "
        "INFO commandstats deltas are reported as a cross-check only: they are "
        "server-wide.",
    ],
    "peers": [
        "The servers a user would pick instead of the bridge, each serving the same `echo` "
        "tool as a task, each from its own venv (`.venv-peers/<peer>`, pinned in "
        "`bench/peers/<peer>.txt`, server in `bench/peers/<peer>_server.py`), started once "
        "for all runs: FastMCP 3 with Docket tasks (2025-11-25), FastMCP 4 with "
        "fastmcp-tasks (2026-07-28, io.modelcontextprotocol/tasks), the official Python "
        "SDK's experimental tasks (in memory). Each is one uvicorn process, log level "
        "warning; FastMCP's Docket worker runs inside it (its default) and keeps its state "
        "in the run's Redis database; the bridge keeps its Celery worker (prefork, 2 "
        "children). Driven by the same lean client (`bench/client.py`; 2026-07-28 requests "
        "by `bench/modern.py`) in the same run. End-to-end, sequentially: "
        "create -> `completed` notification on the GET stream; create -> blocking "
        "`tasks/result` sent as soon as the create answered; create -> first `tasks/get` "
        "saying completed, polled back to back (the way left to a 2026-07-28 client of "
        "FastMCP 4, which sends no task notifications; the bridge is measured that way "
        "too, in both eras). Raw Celery: `apply_async().get()`. Throughput: N tasks, the "
        "suite's 16 clients each creating its share one after another; the clock stops at "
        "the last completion (notification; by tasks/get polling for FastMCP 4); raw "
        "Celery publishes from one thread and joins. Ratios are bridge / other, per way.",
    ],
    "scaling": [
        "At each concurrency C (1, 16, 64, 256), C clients each keep one `echo` task "
        "outstanding: create, wait for its end, create the next. Bridge: each client its "
        "own session, POST connection and GET stream (opened before the clock starts); "
        "latency = create sent -> `completed` notification read on its stream. Raw: C "
        "threads of the bench process, each `noop.apply_async().get()` one after another "
        "(shared producer pool and result consumer, as in any threaded Celery program). "
        "Each level runs max(tasks / C, a minimum per client) tasks per client; throughput "
        "= tasks ended in the steady window (from every client having ended its first "
        "task to the first client ending its last) / its length; p50 and p99 over every "
        "task. CPU per process kind "
        "from /proc over each level (the sessions' and streams' set-up excluded). Shape: "
        "p50 and p99 at the largest C over the smallest, with the log-log slope named "
        "(flat < 0.15, linear 0.85-1.15), and throughput at the largest C over 16 (flat "
        "within 0.8-1.25x); the mean latency of those tasks is compared with "
        "Little's law (C / throughput), which a closed loop on saturated workers must "
        "follow. 20 warm-up tasks per side first, not counted. The bench process's CPU "
        "per task is in the details for both sides: raw Celery's threads poll its result "
        "consumer (every 5 ms, as in the other scenarios) and on 2 CPUs that competes "
        "with the workers. No targets: the issue asks for the table and the shape.",
    ],
    "memory": [
        "N `echo` tasks created by 16 fresh sessions (back to back), waited on until every "
        "record says `completed`, the queues empty and 1 s more; raw: N `noop` published "
        "and joined (result_expires 3,600 s). Before and after each side, with the system "
        "idle: `INFO memory` (used_memory: server-wide, hence the private redis-server) "
        "and `MEMORY USAGE key SAMPLES 0` of every key of the database, grouped by kind "
        "(ids and numbers in the names replaced). Per task = growth / N: used_memory "
        "less mem_clients_normal (what the allocator holds, keyspace tables included, "
        "connections' buffers not: they follow traffic, not what is kept) and the "
        "keys' own sizes by kind, with the PTTL of one key of each kind (how long it is "
        "kept). 20 warm-up tasks per side first, on a session of their own.",
    ],
}


def code_state() -> str:
    """Which bridge code ran: the commit, and whether the tree had changes (the bridge is
    being worked on while the benchmark runs)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=HERE.parent, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.rstrip("\n")

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = [
        line[3:]
        for line in git("status", "--porcelain").splitlines()
        if not line[3:].startswith("bench/")
    ]
    if not changed:
        return f"- bridge code: commit {commit}, clean tree"
    return (
        f"- bridge code: commit {commit} plus uncommitted changes in {len(changed)} paths "
        f"outside bench/ (other engineers' work in progress), e.g. "
        + ", ".join(f"`{c}`" for c in changed[:8])
    )


def settings_lines(services: Services, sizes: Sizes, runs: int) -> list[str]:
    from mcp_celery_bridge.bridge.shared.settings import Settings

    s = Settings()
    worker = worker_line("mcp_celery_bridge.workers")
    raw = worker_line("bench.rawcelery")
    return [
        code_state(),
        f"- Redis {REDIS_URL} (broker, registry, raw result backend; flushed at start and "
        f"end), key prefix `{services.prefix}`, queues `{services.queue}` (bridge) and "
        f"`{services.raw_queue}` (raw)",
        f"- bridge worker: `{worker}`; raw worker: `{raw}`. Both: prefetch multiplier 1, "
        "task events and sent events on, JSON, early ack (the bridge's `workers.app` "
        "settings; raw Celery keeps its result backend, the bridge's tools ignore it)",
        f"- bridge: `mcp-celery-bridge serve --log-level {BRIDGE_LOG_LEVEL}` (one uvicorn "
        "process, h11; warning level so no access log line per request), "
        f"page size {s.page_size}, stream maxlen {s.stream_maxlen}, subscriber queue "
        f"{s.subscriber_queue_size}, task ttl default {s.task_ttl_default_ms} ms",
        "- client: the bench process (raw asyncio HTTP/1.1 + SSE, `bench/client.py`), on "
        "the same machine",
        f"- sizes: {sizes}; runs per scenario: {runs}",
        "- noise: the machine has 2 CPUs shared by Redis, the bridge, both workers, the "
        "client and other engineers' test runs; figures move by tens of percent between "
        "runs. Compare ratios within a run, not absolute figures across runs.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("scenario", choices=["all", "peers-setup", *SCENARIOS])
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.scenario == "peers-setup":
        for p in peer.PEERS:
            peer.ensure_venv(p)
        return 0
    if "BENCH_REDIS_URL" not in os.environ:
        return _with_private_redis(argv if argv is not None else sys.argv[1:])
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    out: Path = args.out or (
        HERE / "RESULTS.md" if args.scenario == "all" else HERE / f"RESULTS-{args.scenario}.md"
    )
    sizes = QUICK if args.quick else Sizes()
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    started = time.monotonic()
    rows: list[Row] = []
    details: dict[str, list[str]] = {}
    profile_lines: list[str] = []
    failed = False
    with Services() as services:
        print(f"services up (logs in {services.log_dir})", flush=True)
        ctx = Context(services, sizes)
        for name in names:
            title, fn = SCENARIOS[name]
            lines = list(METHODS[name])
            for run in range(1, args.runs + 1):
                t0 = time.monotonic()
                print(f"{title}: run {run} ...", flush=True)
                try:
                    result = fn(ctx, run)
                except Exception:
                    failed = True
                    text = traceback.format_exc()
                    print(text, file=sys.stderr, flush=True)
                    lines.append(f"run {run} FAILED: `{text.strip().splitlines()[-1]}`")
                    continue
                rows += result.rows
                lines += result.details
                for r in result.rows:
                    print(f"  {r.metric}: bridge {r.bridge} raw {r.raw} ratio {r.ratio}")
                print(f"  ({time.monotonic() - t0:.0f} s)", flush=True)
            details[title] = lines
            if name == "throughput" and not args.no_profile:
                print("profiling the bridge under the throughput load ...", flush=True)
                raw_out = services.log_dir / "profile-bridge.txt"
                try:
                    info = scenarios.profile_throughput(ctx, raw_out)
                    summary = profile.summarize(raw_out)
                    profile_lines = profile.markdown(summary, info["seconds"], info["tasks"])
                    print(f"  collapsed stacks in {raw_out}", flush=True)
                except Exception:
                    failed = True
                    text = traceback.format_exc()
                    print(text, file=sys.stderr, flush=True)
                    profile_lines = [f"profile FAILED: `{text.strip().splitlines()[-1]}`"]
        client = services.redis()
        try:
            write(
                out,
                command=command,
                seconds=time.monotonic() - started,
                client=client,
                settings=settings_lines(services, sizes, args.runs),
                rows=rows,
                details=details,
                profile=profile_lines,
            )
        finally:
            client.close()
    print(f"wrote {out} in {(time.monotonic() - started) / 60:.1f} min", flush=True)
    return 1 if failed else 0


def _with_private_redis(argv: list[str]) -> int:
    """Run this command again in a child process, on a private redis-server's database 9."""
    from tests.services import RedisServer

    server = RedisServer(Path(tempfile.mkdtemp(prefix="bench-redis-")))
    server.start()
    print(f"private redis-server on port {server.port}", flush=True)
    try:
        env = {**os.environ, "BENCH_REDIS_URL": server.database(9)}
        return subprocess.run(
            [sys.executable, "-m", "bench", *argv], cwd=HERE.parent, env=env
        ).returncode
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
