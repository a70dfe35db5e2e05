"""The seven scenarios of issue 6. Each function runs one run of one scenario (the bridge
side, then raw Celery's side, in the same run) and returns its table rows and details."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio

from bench import procs, rawcelery, redisstats
from bench.client import Connection, Session, Stream, parse_time
from bench.seed import seed_owner
from bench.services import REDIS_PORT, REDIS_URL, ROOT, Services
from bench.stats import Result, Row, ms, percentile
from mcp_celery_bridge.bridge.shared.keys import Keys

HOST = "127.0.0.1"
TERMINAL = {"completed", "failed", "cancelled"}
_RUNNING = re.compile(r"running on .* \(pid (\d+)\)")


@dataclass(frozen=True)
class Sizes:
    creates: int = 1000
    e2e: int = 500
    throughput: int = 5000
    clients: int = 16
    cancel_trials: int = 50
    list_owners: tuple[int, ...] = (100, 10_000, 100_000)
    list_reps: int = 200
    streams: tuple[int, ...] = (100, 1_000, 5_000)
    registry_tasks: int = 200
    peer_e2e: int = 200
    peer_throughput: int = 2000
    #: bench/scaling.py: concurrent clients, and tasks per level (at least so many per
    #: client).
    scaling_clients: tuple[int, ...] = (1, 16, 64, 256)
    scaling_tasks: int = 2000
    scaling_min_per_client: int = 8
    #: bench/memory.py: finished tasks whose memory is measured.
    memory_tasks: int = 2000


QUICK = Sizes(
    creates=200,
    e2e=100,
    throughput=1000,
    cancel_trials=10,
    list_owners=(100, 1_000, 10_000),
    list_reps=50,
    streams=(50, 200, 500),
    registry_tasks=40,
    peer_e2e=50,
    peer_throughput=400,
    scaling_tasks=200,
    scaling_min_per_client=4,
    memory_tasks=500,
)


@dataclass
class Context:
    services: Services
    sizes: Sizes
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def port(self) -> int:
        assert self.services.bridge is not None
        return self.services.bridge.port

    @property
    def keys(self) -> Keys:
        return Keys(self.services.prefix)


def _encode_cursor(kind: str, value: int) -> str:
    """The bridge's opaque list cursor (base64url of ``kind:value``, unpadded), built here so
    the benchmark does not depend on where the bridge keeps that helper."""
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def _ratio_row(
    scenario: str,
    metric: str,
    run: int,
    bridge: float,
    raw: float,
    unit: str,
    target: str = "",
    met: bool | None = None,
) -> Row:
    return Row(scenario, metric, run, bridge, raw, unit, target=target, met=met)


def _wait_terminal(ctx: Context, task_ids: list[str], timeout: float = 300) -> None:
    """Until every task's record is terminal (read straight from Redis, untimed)."""
    client = ctx.services.redis()
    deadline = time.monotonic() + timeout
    pending = list(task_ids)
    try:
        while pending:
            pipe = client.pipeline(transaction=False)
            for tid in pending:
                pipe.hget(ctx.keys.task(tid), "status")
            statuses = pipe.execute()
            pending = [t for t, s in zip(pending, statuses, strict=True) if s not in TERMINAL]
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} tasks never finished")
            if pending:
                time.sleep(0.05)
    finally:
        client.close()


def _idle_queues(ctx: Context) -> None:
    client = ctx.services.redis()
    try:
        for queue in (ctx.services.queue, ctx.services.raw_queue):
            while client.llen(queue):
                time.sleep(0.05)
    finally:
        client.close()


# -- 1. create latency --------------------------------------------------------------------
async def _bridge_creates(port: int, n: int, warmup: int = 20) -> tuple[list[float], list[str]]:
    session = Session(HOST, port)
    await session.initialize()
    times, ids = [], []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        task = await session.create_task("echo", {"text": "x"})
        t1 = time.perf_counter()
        ids.append(task["taskId"])
        if i >= warmup:
            times.append(t1 - t0)
    await session.conn.close()
    return times, ids


def _percentile_rows(
    scenario: str, run: int, bridge: list[float], raw: list[float], p50_ratio: float
) -> list[Row]:
    """p50, p95 and p99 of bridge and raw latencies (seconds), the p50 ratio held to a
    target."""
    rows = []
    for q in (50, 95, 99):
        b, r = ms(percentile(bridge, q)), ms(percentile(raw, q))
        target, met = (f"ratio <= {p50_ratio:g}", b / r <= p50_ratio) if q == 50 else ("", None)
        rows.append(_ratio_row(scenario, f"p{q}", run, b, r, "ms", target, met))
    return rows


def create_latency(ctx: Context, run: int) -> Result:
    n = ctx.sizes.creates
    bridge, ids = asyncio.run(_bridge_creates(ctx.port, n))
    _wait_terminal(ctx, ids)
    raw = rawcelery.publish_latency(n)
    _idle_queues(ctx)
    res = Result()
    res.rows.extend(_percentile_rows("1 create latency", run, bridge, raw, 3.0))
    res.details.append(
        f"run {run}: {n} sequential task-augmented `tools/call` (echo) on one keep-alive "
        f"connection vs {n} sequential `noop.apply_async()`; mean bridge "
        f"{ms(sum(bridge) / n):.2f} ms, raw {ms(sum(raw) / n):.2f} ms"
    )
    return res


# -- 2. end-to-end latency ----------------------------------------------------------------
async def _bridge_e2e(port: int, n: int, warmup: int = 20) -> list[float]:
    session = Session(HOST, port)
    await session.initialize()
    stream = Stream(session)
    await stream.open()
    done: dict[str, float] = {}
    waiters: dict[str, asyncio.Future[float]] = {}

    def on_status(params: dict[str, Any], received: float, perf: float) -> None:
        if params["status"] in TERMINAL:
            if params["status"] != "completed":
                raise RuntimeError(f"task {params['status']}: {params.get('statusMessage')}")
            done[params["taskId"]] = perf
            fut = waiters.pop(params["taskId"], None)
            if fut is not None and not fut.done():
                fut.set_result(perf)

    reader = asyncio.create_task(stream.run(on_status))
    loop = asyncio.get_running_loop()
    times = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        task = await session.create_task("echo", {"text": "x"})
        tid = task["taskId"]
        if tid in done:
            t1 = done[tid]
        else:
            fut: asyncio.Future[float] = loop.create_future()
            waiters[tid] = fut
            t1 = await asyncio.wait_for(fut, 30)
        if i >= warmup:
            times.append(t1 - t0)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    await stream.close()
    await session.conn.close()
    return times


def e2e_latency(ctx: Context, run: int) -> Result:
    n = ctx.sizes.e2e
    bridge = asyncio.run(_bridge_e2e(ctx.port, n))
    raw = rawcelery.roundtrip_latency(n)
    res = Result()
    res.rows.extend(_percentile_rows("2 end-to-end latency", run, bridge, raw, 1.5))
    res.details.append(
        f"run {run}: {n} sequential no-op tasks, request sent -> `notifications/tasks/status` "
        f"completed read on the session's GET stream, vs `noop.apply_async().get()`"
    )
    return res


# -- 3. throughput ------------------------------------------------------------------------
async def _bridge_throughput(port: int, n: int, clients: int) -> dict[str, float]:
    sessions = [Session(HOST, port) for _ in range(clients)]
    for s in sessions:
        await s.initialize()
    streams = [Stream(s) for s in sessions]
    for st in streams:
        await st.open()
    seen: set[str] = set()
    bad: list[str] = []
    all_done = asyncio.Event()
    last = [0.0]

    def on_status(params: dict[str, Any], received: float, perf: float) -> None:
        status = params["status"]
        if status == "completed" and params["taskId"] not in seen:
            seen.add(params["taskId"])
            last[0] = perf
            if len(seen) == n:
                all_done.set()
        elif status in ("failed", "cancelled"):
            bad.append(status)

    readers = [asyncio.create_task(st.run(on_status)) for st in streams]
    shares = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]

    async def client(session: Session, count: int) -> None:
        for _ in range(count):
            await session.create_task("echo", {"text": "x"})

    t0 = time.perf_counter()
    await asyncio.gather(*(client(s, k) for s, k in zip(sessions, shares, strict=True)))
    t_created = time.perf_counter()
    await asyncio.wait_for(all_done.wait(), 600)
    for r in readers:
        r.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for st in streams:
        await st.close()
    for s in sessions:
        await s.conn.close()
    if bad:
        raise RuntimeError(f"{len(bad)} tasks did not complete")
    return {"seconds": last[0] - t0, "create_seconds": t_created - t0}


def _cpu_seconds(ctx: Context) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each kind of process: the bench client,
    the bridge, each worker's main process and pool children, and Redis."""
    client = ctx.services.redis()
    try:
        labels = {**ctx.services.labelled_pids(), int(client.info("server")["process_id"]): "redis"}
    finally:
        client.close()
    seconds: dict[str, float] = {}
    for pid, label in labels.items():
        ticks = procs.cpu_ticks(pid) or 0
        seconds[label] = seconds.get(label, 0.0) + ticks / os.sysconf("SC_CLK_TCK")
    return seconds


def _cpu_used(before: dict[str, float], after: dict[str, float]) -> str:
    return ", ".join(
        f"{label} {after[label] - before.get(label, 0.0):.1f} s"
        for label in sorted(after)
        if after[label] - before.get(label, 0.0) >= 0.05
    )


def throughput(ctx: Context, run: int, profile: Callable[[int], Any] | None = None) -> Result:
    n, clients = ctx.sizes.throughput, ctx.sizes.clients
    cpu_0 = _cpu_seconds(ctx)
    bridge = asyncio.run(_bridge_throughput(ctx.port, n, clients))
    cpu_1 = _cpu_seconds(ctx)
    _idle_queues(ctx)
    cpu_2 = _cpu_seconds(ctx)
    raw_s, raw_pub = rawcelery.throughput(n)
    cpu_3 = _cpu_seconds(ctx)
    b, r = n / bridge["seconds"], n / raw_s
    res = Result()
    res.rows.append(
        _ratio_row("3 throughput", f"{n} tasks", run, b, r, "tasks/s", "ratio >= 0.8", b / r >= 0.8)
    )
    # Issue 17's bar: the bridge process's utime + stime over the bridge run, per task.
    cpu_ms = ms((cpu_1.get("bridge", 0.0) - cpu_0.get("bridge", 0.0)) / n)
    res.rows.append(
        Row(
            "3 throughput",
            "bridge CPU per task",
            run,
            cpu_ms,
            None,
            "ms",
            target="<= 0.5 ms",
            met=cpu_ms <= 0.5,
        )
    )
    res.details.append(
        f"run {run}: bridge {n} tasks by {clients} clients in {bridge['seconds']:.1f} s "
        f"(creates done after {bridge['create_seconds']:.1f} s, i.e. "
        f"{n / bridge['create_seconds']:.0f} creates/s); raw published {n} in {raw_pub:.1f} s "
        f"from one thread ({n / raw_pub:.0f}/s), all results after {raw_s:.1f} s. CPU used "
        f"(per process kind, from /proc): bridge run: {_cpu_used(cpu_0, cpu_1)}; raw run: "
        f"{_cpu_used(cpu_2, cpu_3)}"
    )
    return res


def profile_throughput(ctx: Context, out: Path) -> dict[str, Any]:
    """One more bridge throughput run (not counted) with py-spy recording the bridge."""
    from bench import profile

    assert ctx.services.bridge is not None
    recorder = profile.start(ctx.services.bridge.pid, out)
    try:
        time.sleep(1.0)  # py-spy attaches
        bridge = asyncio.run(_bridge_throughput(ctx.port, ctx.sizes.throughput, ctx.sizes.clients))
    finally:
        profile.stop(recorder)
    _idle_queues(ctx)
    return {"seconds": bridge["seconds"], "tasks": ctx.sizes.throughput}


# -- 4. cancel latency --------------------------------------------------------------------
class CpuWatch(threading.Thread):
    """Watches one process until it stops burning CPU: it is gone (or a zombie), or its
    utime+stime has not moved for ``quiet`` seconds (then the time of the last move)."""

    def __init__(self, pid: int, quiet: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.quiet = quiet
        self.stopped_at: float | None = None
        self.how = ""
        self._abort = threading.Event()

    def run(self) -> None:
        last = procs.cpu_ticks(self.pid)
        last_change = time.perf_counter()
        while not self._abort.is_set():
            ticks = procs.cpu_ticks(self.pid)
            now = time.perf_counter()
            if ticks is None:
                self.stopped_at, self.how = now, "exited"
                return
            if ticks != last:
                last, last_change = ticks, now
            elif now - last_change > self.quiet:
                self.stopped_at, self.how = last_change, "idle"
                return
            time.sleep(0.001)

    def result(self, timeout: float) -> float | None:
        self.join(timeout)
        self._abort.set()
        return self.stopped_at


def _burning(pid: int, timeout: float = 2.0) -> bool:
    """Wait until ``pid`` accrues CPU time (the spin loop really runs)."""
    start = procs.cpu_ticks(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = procs.cpu_ticks(pid)
        if now is None:
            return False
        if start is not None and now >= start + 2:
            return True
        time.sleep(0.005)
    return False


@dataclass
class CancelTrials:
    """Cancel trials: time to the process stopping (and to the cancel call's answer) of
    each trial after the first ``warmup``; a trial whose process never stopped fails."""

    warmup: int
    latencies: list[float] = field(default_factory=list)
    rpcs: list[float] = field(default_factory=list)
    hows: list[str] = field(default_factory=list)
    failures: int = 0

    def add(self, i: int, t0: float, t_rpc: float, stopped: float | None, how: str) -> None:
        if stopped is None:
            self.failures += 1
        elif i >= self.warmup:
            self.latencies.append(max(0.0, stopped - t0))
            self.rpcs.append(t_rpc - t0)
            self.hows.append(how)

    def summary(self) -> dict[str, Any]:
        return {
            "latencies": self.latencies,
            "rpcs": self.rpcs,
            "hows": self.hows,
            "failures": self.failures,
        }


async def _bridge_cancels(ctx: Context, trials: int, warmup: int = 2) -> dict[str, Any]:
    session = Session(HOST, ctx.port)
    await session.initialize()
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    trials_ = CancelTrials(warmup)
    for i in range(warmup + trials):
        task = await session.create_task("spin", {"seconds": 20})
        key = ctx.keys.task(task["taskId"])
        pid = None
        deadline = time.monotonic() + 30
        while pid is None and time.monotonic() < deadline:
            m = _RUNNING.search(await client.hget(key, "message") or "")
            if m:
                pid = int(m.group(1))
            else:
                await asyncio.sleep(0.005)
        assert pid is not None, "the spin task never started"
        if not await asyncio.to_thread(_burning, pid):
            trials_.failures += 1
            continue
        watch = CpuWatch(pid)
        watch.start()
        t0 = time.perf_counter()
        answer = await session.call("tasks/cancel", {"taskId": task["taskId"]})
        t_rpc = time.perf_counter()
        stopped = await asyncio.to_thread(watch.result, 10)
        assert answer["status"] == "cancelled", answer
        trials_.add(i, t0, t_rpc, stopped, watch.how)
    await client.aclose()
    await session.conn.close()
    return trials_.summary()


def _raw_cancels(trials: int, warmup: int = 2) -> dict[str, Any]:
    trials_ = CancelTrials(warmup)
    for i in range(warmup + trials):
        r = rawcelery.spin.apply_async((20,))
        deadline = time.monotonic() + 30
        pid = None
        while pid is None and time.monotonic() < deadline:
            if r.state == "PROGRESS" and isinstance(r.info, dict):
                pid = int(r.info["pid"])
            else:
                time.sleep(0.005)
        assert pid is not None, "the raw spin task never started"
        if not _burning(pid):
            trials_.failures += 1
            continue
        watch = CpuWatch(pid)
        watch.start()
        t0 = time.perf_counter()
        rawcelery.app.control.revoke(r.id, terminate=True, signal="SIGTERM")
        t_rpc = time.perf_counter()
        trials_.add(i, t0, t_rpc, watch.result(10), watch.how)
    return trials_.summary()


def cancel_latency(ctx: Context, run: int) -> Result:
    trials = ctx.sizes.cancel_trials
    bridge = asyncio.run(_bridge_cancels(ctx, trials))
    raw = _raw_cancels(trials)
    res = Result()
    for q in (50, 95):
        b, r = ms(percentile(bridge["latencies"], q)), ms(percentile(raw["latencies"], q))
        target, met = "", None
        if q == 95:
            target, met = "bridge p95 < 500 ms", b < 500
        res.rows.append(_ratio_row("4 cancel latency", f"p{q}", run, b, r, "ms", target, met))
    res.rows.append(
        _ratio_row(
            "4 cancel latency",
            "cancel call p50",
            run,
            ms(percentile(bridge["rpcs"], 50)),
            ms(percentile(raw["rpcs"], 50)),
            "ms",
        )
    )
    res.details.append(
        f"run {run}: {len(bridge['latencies'])} bridge trials (stopped by: "
        f"{_counts(bridge['hows'])}; {bridge['failures']} failed), "
        f"{len(raw['latencies'])} raw trials ({_counts(raw['hows'])}; "
        f"{raw['failures']} failed). 'cancel call' = `tasks/cancel` answered vs "
        "`revoke()` returned"
    )
    return res


def _counts(items: list[str]) -> str:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


# -- 5. listing at scale ------------------------------------------------------------------
async def _seed_owners(ctx: Context, counts: tuple[int, ...]) -> dict[int, Session]:
    owners: dict[int, Session] = {}
    for count in counts:
        session = Session(HOST, ctx.port)
        await session.initialize()
        await session.conn.close()
        t0 = time.perf_counter()
        await seed_owner(session.owner, count)
        ctx.state.setdefault("seed_seconds", {})[count] = time.perf_counter() - t0
        owners[count] = session
    return owners


async def _list_run(ctx: Context, owners: dict[int, Session]) -> dict[int, dict[str, float]]:
    """Page times of every owner, interleaved request by request (first page, then a
    middle page, for each owner in turn), so that the machine's drift hits them alike."""
    reps, warmup = ctx.sizes.list_reps, 5
    conn = Connection(HOST, ctx.port)
    cursors: dict[int, str] = {}
    for count in owners:
        # The owner's tasks were seeded in one go: their sequence numbers are contiguous.
        lo, hi = ctx.state["seq_ranges"][count]
        cursors[count] = _encode_cursor("t", lo + (hi - lo) // 2)
    first: dict[int, list[float]] = {c: [] for c in owners}
    middle: dict[int, list[float]] = {c: [] for c in owners}
    for i in range(warmup + reps):
        for count, session in owners.items():
            for params, into in (({}, first), ({"cursor": cursors[count]}, middle)):
                t0 = time.perf_counter()
                page = await session.call("tasks/list", params, conn)
                t1 = time.perf_counter()
                assert len(page["tasks"]) > 0
                if i >= warmup:
                    into[count].append(t1 - t0)
    await conn.close()
    return {
        count: {
            "first_p50": percentile(first[count], 50),
            "first_p95": percentile(first[count], 95),
            "middle_p50": percentile(middle[count], 50),
        }
        for count in owners
    }


async def _expired_list(ctx: Context, count: int) -> dict[str, float]:
    """An owner whose ``count`` tasks have all expired (their hashes deleted, as expiry
    would): the first `tasks/list` cleans the index inside one Lua call."""
    session = Session(HOST, ctx.port)
    await session.initialize()
    ids = await seed_owner(session.owner, count)
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    for i in range(0, len(ids), 1000):
        await client.delete(*(ctx.keys.task(t) for t in ids[i : i + 1000]))
    await client.aclose()
    t0 = time.perf_counter()
    try:
        await session.call("tasks/list", {})
    except Exception:
        pass
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    with contextlib.suppress(Exception):
        await session.call("tasks/list", {})
    second = time.perf_counter() - t0
    await session.conn.close()
    return {"first": first, "second": second}


def listing(ctx: Context, run: int) -> Result:
    counts = ctx.sizes.list_owners
    if "owners" not in ctx.state:
        client = ctx.services.redis()
        owners = asyncio.run(_seed_owners(ctx, tuple(counts)))
        # Each owner numbers its own tasks, from 1.
        ctx.state["seq_ranges"] = {
            count: (0, int(client.get(ctx.keys.owner_seq(session.owner)) or 0))
            for count, session in owners.items()
        }
        client.close()
        ctx.state["owners"] = owners
    figures = asyncio.run(_list_run(ctx, ctx.state["owners"]))
    base = figures[counts[0]]["first_p50"]
    res = Result()
    for count in counts:
        f = figures[count]
        ratio = f["first_p50"] / base
        is_big = count == counts[-1]
        res.rows.append(
            Row(
                "5 tasks/list page",
                f"first page p50, {count:,} tasks",
                run,
                ms(f["first_p50"]),
                None,
                "ms",
                ratio=ratio,
                target="<= 2 x the 100 case" if is_big else "",
                met=(ratio <= 2) if is_big else None,
                note="ratio vs the smallest owner",
            )
        )
    res.details.append(
        f"run {run}: pages of 50 (the default page size), {ctx.sizes.list_reps} requests per "
        "owner and page kind, interleaved; "
        + "; ".join(
            f"{c:,} tasks: first p50 {ms(figures[c]['first_p50']):.2f} ms / p95 "
            f"{ms(figures[c]['first_p95']):.2f} ms, middle page p50 "
            f"{ms(figures[c]['middle_p50']):.2f} ms"
            for c in counts
        )
    )
    if run == 1:
        seeds = ctx.state.get("seed_seconds", {})
        res.details.append(
            "seeding with `Registry.create` (64 concurrent coroutines, once, shared by the "
            "runs): " + ", ".join(f"{c:,} in {s:.1f} s" for c, s in seeds.items())
        )
        expired_n = counts[1]
        exp = asyncio.run(_expired_list(ctx, expired_n))
        res.details.append(
            f"extra (no target): an owner whose {expired_n:,} tasks have all expired: the "
            f"first `tasks/list` took {ms(exp['first']):.1f} ms (its Lua script removes every "
            f"stale index entry in one call, blocking Redis meanwhile), the next "
            f"{ms(exp['second']):.2f} ms"
        )
    return res


# -- 6. streams at scale ------------------------------------------------------------------
#: Streams opened at once. Kept under 100: the bridge's redis-py asyncio pool is capped at
#: 100 connections (redis-py 8's default) and answers 503 beyond (see ``burst_probe``).
OPEN_BATCH = 50


def _conns_by_command(pid: int) -> dict[str, int]:
    """The bridge's Redis connections by the last command each ran (CLIENT LIST ``cmd``):
    tells the registry pool (evalsha, hgetall, exec...) from kombu's (lpush, publish)."""
    ports = procs.redis_ports({pid: "bridge"}, REDIS_PORT)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        held = [c for c in client.client_list() if int(c["addr"].rsplit(":", 1)[1]) in ports]
    finally:
        client.close()
    counts: dict[str, int] = {}
    for c in held:
        counts[c["cmd"]] = counts.get(c["cmd"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _bridge_redis_conns(pid: int) -> tuple[int, int]:
    """Redis connections of ``pid``: (all, those subscribed to pub/sub channels)."""
    ports = procs.redis_ports({pid: "bridge"}, REDIS_PORT)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        held = [c for c in client.client_list() if int(c["addr"].rsplit(":", 1)[1]) in ports]
    finally:
        client.close()
    return len(held), sum(1 for c in held if int(c["sub"]) or int(c["psub"]))


async def _pooled(jobs: list[Any], width: int, port: int, work: Callable[..., Any]) -> None:
    """Run ``work(conn, job)`` for every job over ``width`` keep-alive connections."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker() -> None:
        conn = Connection(HOST, port)
        try:
            while True:
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await work(conn, job)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(width)))


async def _bridge_streams(ctx: Context, n: int) -> dict[str, Any]:
    services = ctx.services
    bridge = services.start_bridge(f"streams-{n}")
    try:
        port, pid = bridge.port, bridge.pid
        sessions = [Session(HOST, port) for _ in range(n)]

        async def init(conn: Connection, s: Session) -> None:
            await s.initialize(conn)

        await _pooled(sessions, 32, port, init)
        await asyncio.sleep(1.0)
        rss0, conns0 = procs.rss_kb(pid), _bridge_redis_conns(pid)

        streams = [Stream(s) for s in sessions]
        refused = 0
        for i in range(0, n, OPEN_BATCH):
            batch = streams[i : i + OPEN_BATCH]
            refused += sum(await asyncio.gather(*(st.open(retries=20) for st in batch)))
        await asyncio.sleep(2.0)
        rss1, conns1 = procs.rss_kb(pid), _bridge_redis_conns(pid)

        lags: dict[str, float] = {}
        expected: dict[str, str] = {}  # session id -> task id
        all_done = asyncio.Event()

        def make_handler(session: Session) -> Callable[[dict[str, Any], float, float], None]:
            def on_status(params: dict[str, Any], received: float, perf: float) -> None:
                if params["status"] == "completed" and params["taskId"] not in lags:
                    lags[params["taskId"]] = received - parse_time(params["lastUpdatedAt"])
                    if len(lags) == n:
                        all_done.set()

            return on_status

        readers = [asyncio.create_task(st.run(make_handler(st.session))) for st in streams]

        gate = f"bench-gate-{uuid.uuid4().hex}"

        async def create(conn: Connection, s: Session) -> None:
            task = await s.create_task("gated", {"key": gate}, conn=conn)
            expected[s.id] = task["taskId"]

        t0 = time.perf_counter()
        await _pooled(sessions, 16, port, create)
        created = time.perf_counter() - t0
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        await client.set(gate, "1", ex=3600)
        await client.aclose()
        t0 = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_done.wait(), 60 + n / 50)
        elapsed = time.perf_counter() - t0
        await asyncio.sleep(0.5)
        rss2, conns2 = procs.rss_kb(pid), _bridge_redis_conns(pid)
        by_cmd = _conns_by_command(pid)
        delivered = sum(1 for tid in expected.values() if tid in lags)
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for i in range(0, n, 500):
            await asyncio.gather(*(st.close() for st in streams[i : i + 500]))
        return {
            "n": n,
            "delivered": delivered,
            "lags": list(lags.values()),
            "rss_kb": (rss0, rss1, rss2),
            "conns": (conns0, conns1, conns2),
            "seconds": elapsed,
            "create_seconds": created,
            "refused": refused,
            "by_cmd": by_cmd,
        }
    finally:
        services.stop_bridge(bridge)


async def _burst_probe(ctx: Context, width: int) -> dict[int, int]:
    """``width`` GET streams opened at the same moment on a fresh bridge: answers by
    status (no retries)."""
    bridge = ctx.services.start_bridge(f"burst-{width}")
    try:
        sessions = [Session(HOST, bridge.port) for _ in range(width)]

        async def init(conn: Connection, s: Session) -> None:
            await s.initialize(conn)

        await _pooled(sessions, 32, bridge.port, init)
        streams = [Stream(s) for s in sessions]

        async def attempt(st: Stream) -> int:
            try:
                await st.open()
            except AssertionError:
                pass
            return st.status

        statuses = await asyncio.gather(*(attempt(st) for st in streams))
        await asyncio.gather(*(st.close() for st in streams))
        counts: dict[int, int] = {}
        for status in statuses:
            counts[status] = counts.get(status, 0) + 1
        return counts
    finally:
        ctx.services.stop_bridge(bridge)


def _raw_waitmany(ctx: Context, n: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    try:
        subprocess.run(
            [sys.executable, "-m", "bench.rawcelery", "waitmany", str(n), str(out)],
            cwd=ROOT,
            env={**os.environ, **ctx.services.raw_env()},
            check=True,
            timeout=600,
        )
        data: dict[str, Any] = json.loads(out.read_text())
        return data
    finally:
        out.unlink(missing_ok=True)


def streams(ctx: Context, run: int) -> Result:
    res = Result()
    largest = ctx.sizes.streams[-1]
    first_conns: int | None = None
    pubsub_max = 0
    for n in ctx.sizes.streams:
        b = asyncio.run(_bridge_streams(ctx, n))
        _idle_queues(ctx)
        r = _raw_waitmany(ctx, n)
        lag50, lag99 = ms(percentile(b["lags"], 50)), ms(percentile(b["lags"], 99))
        rlag50, rlag99 = ms(percentile(r["lags"], 50)), ms(percentile(r["lags"], 99))
        rss0, rss1, rss2 = b["rss_kb"]
        per_stream = (rss1 - rss0) * 1024 / n / 1000  # KB (1000 bytes) per idle stream
        raw_per = (r["rss_pending_kb"] - r["rss_before_kb"]) * 1024 / n / 1000
        conns, pubsub = b["conns"][1]
        pubsub_max = max(pubsub_max, pubsub)
        if first_conns is None:
            first_conns = conns
        scen = f"6 streams, N={n:,}"
        big = n == largest
        res.rows += [
            Row(
                scen,
                "delivered",
                run,
                b["delivered"],
                r["delivered"],
                "of N",
                target="all delivered" if big else "",
                met=(b["delivered"] == n) if big else None,
            ),
            _ratio_row(scen, "delivery lag p50", run, lag50, rlag50, "ms"),
            _ratio_row(scen, "delivery lag p99", run, lag99, rlag99, "ms"),
            Row(
                scen,
                "RSS per idle stream",
                run,
                per_stream,
                raw_per,
                "KB",
                target="<= 16 KB" if big else "",
                met=(per_stream <= 16) if big else None,
            ),
            Row(
                scen,
                "Redis connections held",
                run,
                conns,
                r["redis_connections"],
                "conns",
                target="not growing with N" if big else "",
                met=(conns <= first_conns * 1.1 and pubsub_max <= 1) if big else None,
            ),
        ]
        res.details.append(
            f"run {run}, N={n:,}: bridge RSS {rss0 / 1024:.1f} MiB with sessions only, "
            f"{rss1 / 1024:.1f} MiB with {n:,} idle streams, {rss2 / 1024:.1f} MiB after the "
            f"notifications; bridge Redis connections (of which pub/sub) "
            f"{'{} ({})'.format(*b['conns'][0])} with sessions only -> "
            f"{'{} ({})'.format(*b['conns'][1])} with the streams open -> "
            f"{'{} ({})'.format(*b['conns'][2])} after {n:,} tasks (by last command: "
            f"{', '.join(f'{k} {v}' for k, v in b['by_cmd'].items())}); {n:,} gated tasks "
            f"created in {b['create_seconds']:.1f} s, all notified {b['seconds']:.1f} s after "
            f"the gate opened. Raw: one client process with {n:,} pending "
            f"AsyncResults (RSS {r['rss_before_kb'] / 1024:.1f} -> "
            f"{r['rss_pending_kb'] / 1024:.1f} MiB), {r['redis_connections']} connections "
            f"({r['pubsub_connections']} pub/sub). "
            f"Streams opened {OPEN_BATCH} at a time; 503 answers met (then retried): "
            f"{b['refused']}"
        )
    if run == 1:
        width = 200
        counts = asyncio.run(_burst_probe(ctx, width))
        res.details.append(
            f"burst probe (run 1 only): {width} GET streams opened at the same moment on a "
            f"fresh bridge were answered "
            + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
            + " (a 503 body says `task store unavailable: MaxConnectionsError`: the bridge's "
            "redis-py asyncio pool allows 100 connections at once by default)"
        )
    return res


# -- 7. registry cost ---------------------------------------------------------------------
async def _bridge_lifecycles(
    port: int, k: int, session: Session | None = None, ids: list[str] | None = None
) -> Session:
    """k tasks one after another, each: create, completed notification, tasks/result."""
    if session is not None:
        session.conn = Connection(HOST, port)  # (the old one belongs to another loop)
    else:
        session = Session(HOST, port)
        await session.initialize()
    stream = Stream(session)
    await stream.open()
    done: dict[str, asyncio.Event] = {}

    def on_status(params: dict[str, Any], received: float, perf: float) -> None:
        if params["status"] == "completed":
            done.setdefault(params["taskId"], asyncio.Event()).set()

    reader = asyncio.create_task(stream.run(on_status))
    for _ in range(k):
        task = await session.create_task("echo", {"text": "x"}, ttl=600_000)
        if ids is not None:
            ids.append(task["taskId"])
        event = done.setdefault(task["taskId"], asyncio.Event())
        await asyncio.wait_for(event.wait(), 30)
        result = await session.call("tasks/result", {"taskId": task["taskId"]})
        assert result["content"][0]["text"] == "x", result
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    await stream.close()
    return session


def _measure(ctx: Context, action: Callable[[], Any], idle_s: float = 3.0) -> dict[str, Any]:
    """MONITOR an idle window, then the action; per-process round trips and commands of
    the action with the idle rate subtracted."""
    client = ctx.services.redis()
    with redisstats.Monitor() as idle_mon:
        time.sleep(idle_s)
    idle = idle_mon.capture
    idle_ports = procs.redis_ports(ctx.services.labelled_pids(), REDIS_PORT)
    stats0 = redisstats.commandstats(client)
    mon = redisstats.Monitor()
    mon.start()
    try:
        action()
    finally:
        ports = procs.redis_ports(ctx.services.labelled_pids(), REDIS_PORT)
        active = mon.stop()
    stats1 = redisstats.commandstats(client)
    client.close()
    prefix = ctx.services.prefix + ":"
    idle_t = redisstats.traffic(idle, idle_ports, prefix)
    act_t = redisstats.traffic(active, ports, prefix)
    scale = active.duration / idle.duration
    return {
        "idle": idle_t,
        "active": act_t,
        "scale": scale,
        "duration": active.duration,
        "db9_commands": len(active.commands),
        "other_db_lines": active.other_db_lines,
        "commandstats_calls": sum(redisstats.commandstats_delta(stats0, stats1).values()),
        "capture": active,
    }


def _per_task(m: dict[str, Any], label: str, k: int, registry_only: bool = False) -> float:
    field = "registry_trips" if registry_only else "round_trips"
    idle = getattr(m["idle"], field).get(label, 0) * m["scale"]
    return (getattr(m["active"], field).get(label, 0) - idle) / k


def _command_table(m: dict[str, Any], labels: list[str], k: int) -> list[str]:
    lines = []
    for label in labels:
        act = m["active"].commands.get(label, {})
        idl = m["idle"].commands.get(label, {})
        parts = []
        for name in sorted(act):
            v = (act[name] - idl.get(name, 0) * m["scale"]) / k
            if abs(v) >= 0.05:
                parts.append(f"{name} {v:.2f}")
        kinds = m["active"].trip_kinds.get(label, {})
        idle_kinds = m["idle"].trip_kinds.get(label, {})
        trips = ", ".join(
            f"{name} {(kinds[name] - idle_kinds.get(name, 0) * m['scale']) / k:.2f}"
            for name in sorted(kinds)
            if abs((kinds[name] - idle_kinds.get(name, 0) * m["scale"]) / k) >= 0.05
        )
        chans = m["active"].channels.get(label, {})
        idle_chans = m["idle"].channels.get(label, {})
        pubsub = ", ".join(
            f"{name} {(chans[name] - idle_chans.get(name, 0) * m['scale']) / k:.2f}"
            for name in sorted(chans)
            if abs((chans[name] - idle_chans.get(name, 0) * m["scale"]) / k) >= 0.05
        )
        lines.append(
            f"  - {label}: round trips per task {_per_task(m, label, k):.2f}, of which on "
            f"the bridge's keys {_per_task(m, label, k, True):.2f} ({trips}); "
            f"commands per task: {', '.join(parts) or 'none'}"
            + (f"; channels: {pubsub}" if pubsub else "")
        )
    return lines


def _message_bytes(capture: redisstats.Capture, queue: str) -> float:
    sizes = [
        len(c.args[2])
        for c in capture.commands
        if c.name == "LPUSH" and len(c.args) > 2 and c.args[1].decode() == queue
    ]
    return sum(sizes) / len(sizes) if sizes else 0.0


def registry_cost(ctx: Context, run: int) -> Result:
    k = ctx.sizes.registry_tasks
    services = ctx.services
    # Warm up (scripts loaded, pools filled, worker children connected).
    session = asyncio.run(_bridge_lifecycles(ctx.port, 10))
    for _ in range(10):
        rawcelery.noop.apply_async(("x",)).get(timeout=30)

    bridge_ids: list[str] = []
    raw_ids: list[str] = []

    def bridge_action() -> None:
        asyncio.run(_bridge_lifecycles(ctx.port, k, session, bridge_ids))

    def raw_action() -> None:
        for _ in range(k):
            r = rawcelery.noop.apply_async(("x",))
            r.get(timeout=30)
            raw_ids.append(r.id)

    mb = _measure(ctx, bridge_action)
    mr = _measure(ctx, raw_action)

    client = services.redis()
    p = services.prefix
    task_sizes = redisstats.sizes_of(client, [ctx.keys.task(t) for t in bridge_ids])
    owner_key = ctx.keys.owner_tasks(session.owner)
    events_key = ctx.keys.events(session.owner)
    zset_n = int(client.zcard(owner_key))  # every task this session created
    stream_n = int(client.xlen(events_key))
    # Every key scoped to the owner (its list index, event stream, in-flight set, rate
    # counters... whatever this version of the bridge keeps), shared by its zset_n tasks.
    owner_keys = sorted({*client.scan_iter(match=f"{p}:*{session.owner}*", count=1000), events_key})
    owner_sizes = {
        key.replace(session.owner, "<owner>"): int(client.memory_usage(key, samples=0) or 0)
        for key in owner_keys
    }
    owner_bytes = sum(owner_sizes.values())
    session_sizes = redisstats.key_sizes(client, f"{p}:session:*")
    raw_sizes = redisstats.sizes_of(client, [f"celery-task-meta-{t}" for t in raw_ids])
    client.close()
    bridge_msg = _message_bytes(mb["capture"], services.queue)
    raw_msg = _message_bytes(mr["capture"], services.raw_queue)

    bridge_side = _per_task(mb, "bridge", k)
    worker_side = _per_task(mb, "worker main", k) + _per_task(mb, "worker child", k)
    bridge_reg = _per_task(mb, "bridge", k, True)
    worker_reg = _per_task(mb, "worker main", k, True) + _per_task(mb, "worker child", k, True)
    raw_client = _per_task(mr, "bench client", k)
    raw_worker = _per_task(mr, "raw worker main", k) + _per_task(mr, "raw worker child", k)
    events_per_task = stream_n / zset_n if zset_n else 0.0
    retained = task_sizes["mean_bytes"] + owner_bytes / max(zset_n, 1)
    res = Result()
    res.rows += [
        Row(
            "7 registry cost",
            "registry round trips, bridge side",
            run,
            bridge_reg,
            None,
            "per task",
            target="<= 6",
            met=bridge_reg <= 6.05,
        ),
        Row(
            "7 registry cost",
            "registry round trips, worker side",
            run,
            worker_reg,
            None,
            "per task",
            target="<= 4",
            met=worker_reg <= 4.05,
        ),
        _ratio_row(
            "7 registry cost",
            "all round trips, client/bridge side",
            run,
            bridge_side,
            raw_client,
            "per task",
        ),
        _ratio_row(
            "7 registry cost",
            "all round trips, worker side",
            run,
            worker_side,
            raw_worker,
            "per task",
        ),
        _ratio_row(
            "7 registry cost",
            "bytes kept per finished task",
            run,
            retained,
            raw_sizes["mean_bytes"],
            "bytes",
        ),
        _ratio_row("7 registry cost", "broker message", run, bridge_msg, raw_msg, "bytes"),
    ]
    res.details.append(
        f"run {run}: K={k} tasks one after another. Bridge life: task-augmented `tools/call` "
        "-> worker runs it -> `completed` read on the GET stream -> `tasks/result`. Raw life: "
        f"`apply_async().get()`. Windows: bridge {mb['duration']:.2f} s, raw "
        f"{mr['duration']:.2f} s; idle rate from a {3.0:.0f} s quiet window before each, "
        f"scaled and subtracted. DB 9 commands seen by MONITOR: bridge window "
        f"{mb['db9_commands']}, raw window {mr['db9_commands']}; lines of other databases "
        f"(other engineers) {mb['other_db_lines']} / {mr['other_db_lines']}; INFO "
        f"commandstats calls (server-wide, includes those) {mb['commandstats_calls']} / "
        f"{mr['commandstats_calls']}"
    )
    res.details.append("  bridge window, per task:")
    res.details += _command_table(
        mb, ["bridge", "worker main", "worker child", "lua (inside scripts)", "other"], k
    )
    res.details.append("  raw window, per task:")
    res.details += _command_table(
        mr, ["bench client", "raw worker main", "raw worker child", "other"], k
    )
    res.details.append(
        f"  bytes: task hash {task_sizes['mean_bytes']:.0f} B (mean of "
        f"{task_sizes['measured']}); the owner's keys, shared by its {zset_n} tasks: "
        + ", ".join(f"`{k}` {v} B" for k, v in owner_sizes.items())
        + f" ({stream_n} stream entries, {events_per_task:.1f} per task); "
        f"session hash {session_sizes['mean_bytes']:.0f} B per session; raw result key "
        f"{raw_sizes['mean_bytes']:.0f} B (mean of {raw_sizes['measured']}). Broker message "
        "= LPUSH payload (transient: gone once a worker takes it)."
    )
    return res
