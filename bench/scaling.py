"""9. Cost as work grows (issue 17): end-to-end latency and throughput at 1, 16, 64 and 256
concurrent clients, the bridge and raw Celery in the same run, and the shape of each
curve computed from the figures.

A client keeps one task outstanding at a time: it creates an ``echo`` task, waits for its
end, creates the next. So the concurrency is the number of tasks in the system, and once
the two worker children are saturated a closed loop like this one must show latency
growing linearly with the clients while throughput stays flat (Little's law: mean
latency = clients / throughput); the details compare the measured mean with that bound,
which tells queueing from added cost.

- Bridge: each client its own session, its own POST connection and its own GET stream
  (on a connection of its own); end = the ``completed`` notification on its stream, as
  the e2e and throughput scenarios take it.
- Raw Celery: each client a thread of the bench process calling
  ``noop.apply_async().get()`` one after another (Celery's client is synchronous; its
  producer pool and one result consumer are shared by the threads, as in any threaded
  program using Celery)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench import rawcelery
from bench.client import Session, Stream
from bench.scenarios import HOST, TERMINAL, Context, _cpu_seconds, _cpu_used, _idle_queues
from bench.stats import Result, Row, ms, percentile

SCENARIO = "9 scaling"
#: Streams and sessions opened at once (below the bridge's Redis pool of 64 connections).
OPEN_BATCH = 32
WARMUP = 20


#: (sent, ended) of one task, perf_counter seconds.
Span = tuple[float, float]


@dataclass
class Level:
    """One side's figures at one concurrency: every client's tasks, in order."""

    clients: int
    start: float = 0.0
    spans: list[list[Span]] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def latencies(self) -> list[float]:
        return [end - sent for spans in self.spans for sent, end in spans]

    @property
    def tasks(self) -> int:
        return sum(len(spans) for spans in self.spans)

    @property
    def seconds(self) -> float:
        return max(spans[-1][1] for spans in self.spans) - self.start

    @property
    def window(self) -> tuple[float, float]:
        """Steady state: from the moment every client has ended its first task (past the
        start, when all creates arrive at once) to the moment the first client ended its
        last (after it, fewer clients are at work)."""
        return (
            max(spans[0][1] for spans in self.spans),
            min(spans[-1][1] for spans in self.spans),
        )

    @property
    def steady(self) -> list[Span]:
        """The tasks that ended inside the window (after its start)."""
        a, b = self.window
        return [span for spans in self.spans for span in spans if a < span[1] <= b]

    @property
    def throughput(self) -> float:
        """Tasks per second in the window; over the whole level when the window holds
        fewer tasks than there are clients (too few tasks per client to have one)."""
        a, b = self.window
        steady = self.steady
        if len(steady) < max(self.clients, 2):
            return self.tasks / self.seconds
        return len(steady) / (b - a)

    def p(self, q: float) -> float:
        return ms(percentile(self.latencies, q))

    @property
    def steady_mean_ms(self) -> float | None:
        """Mean latency of the tasks sent and ended inside the window."""
        a, _ = self.window
        inside = [end - sent for sent, end in self.steady if sent >= a]
        return ms(sum(inside) / len(inside)) if inside else None

    @property
    def little_ms(self) -> float:
        """Mean latency a closed loop of ``clients`` at this throughput must show."""
        return ms(self.clients / self.throughput)


def per_client(sizes_tasks: int, minimum: int, clients: int) -> int:
    """Tasks each client runs: at least ``minimum``, at least ``sizes_tasks`` in all."""
    return max(minimum, math.ceil(sizes_tasks / clients))


# -- bridge -------------------------------------------------------------------------------
async def _bridge_level(ctx: Context, clients: int, each: int, warmup: bool = False) -> Level:
    """``clients`` sessions running ``each`` tasks one after another; with ``warmup``, one
    session runs ``WARMUP`` tasks and nothing is measured."""
    sessions = [Session(HOST, ctx.port) for _ in range(clients)]
    for i in range(0, clients, OPEN_BATCH):
        await asyncio.gather(*(s.initialize() for s in sessions[i : i + OPEN_BATCH]))
    streams = [Stream(s) for s in sessions]
    for i in range(0, clients, OPEN_BATCH):
        await asyncio.gather(*(st.open(retries=20) for st in streams[i : i + OPEN_BATCH]))
    loop = asyncio.get_running_loop()
    ended: dict[str, float] = {}
    waiters: dict[str, asyncio.Future[float]] = {}
    bad: list[str] = []

    def on_status(params: dict[str, Any], received: float, perf: float) -> None:
        status, tid = params["status"], params["taskId"]
        if status not in TERMINAL or tid in ended:
            return
        if status != "completed":
            bad.append(f"{status}: {params.get('statusMessage')}")
        ended[tid] = perf
        fut = waiters.pop(tid, None)
        if fut is not None and not fut.done():
            fut.set_result(perf)

    readers = [asyncio.create_task(st.run(on_status)) for st in streams]

    async def client(session: Session, count: int) -> list[Span]:
        spans = []
        for _ in range(count):
            t0 = time.perf_counter()
            tid = (await session.create_task("echo", {"text": "x"}))["taskId"]
            if tid not in ended:
                waiters[tid] = loop.create_future()
                await asyncio.wait_for(waiters[tid], 120)
            spans.append((t0, ended[tid]))
        return spans

    try:
        if warmup:
            await client(sessions[0], WARMUP)
            return Level(clients)
        cpu0 = _cpu_seconds(ctx)
        t0 = time.perf_counter()
        spans = await asyncio.gather(*(client(s, each) for s in sessions))
        cpu = _delta(cpu0, _cpu_seconds(ctx))
        if bad:
            raise RuntimeError(f"{len(bad)} tasks did not complete, e.g. {bad[0]}")
        return Level(clients, t0, list(spans), cpu)
    finally:
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for i in range(0, clients, 128):
            await asyncio.gather(*(st.close() for st in streams[i : i + 128]))
            await asyncio.gather(*(s.conn.close() for s in sessions[i : i + 128]))


# -- raw Celery ---------------------------------------------------------------------------
def _raw_level(ctx: Context, clients: int, each: int) -> Level:
    start = threading.Barrier(clients + 1)
    spans: list[list[Span]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            start.wait(60)
            for _ in range(each):
                t0 = time.perf_counter()
                rawcelery.noop.apply_async(("x",)).get(timeout=120, interval=rawcelery.POLL)
                spans[i].append((t0, time.perf_counter()))
        except BaseException as exc:  # reported below, in the bench's thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    cpu0 = _cpu_seconds(ctx)
    t0 = time.perf_counter()
    start.wait(60)
    for t in threads:
        t.join(600)
    cpu = _delta(cpu0, _cpu_seconds(ctx))
    if errors or any(t.is_alive() for t in threads):
        raise RuntimeError(f"raw clients failed: {errors[:1] or 'still running'}")
    return Level(clients, t0, spans, cpu)


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


# -- shape --------------------------------------------------------------------------------
def exponent(x0: float, y0: float, x1: float, y1: float) -> float:
    """b in y ~ x^b between two points (log-log slope)."""
    return math.log(y1 / y0) / math.log(x1 / x0)


def shape(b: float) -> str:
    """A name for a log-log slope: how y grows when x is multiplied."""
    if abs(b) < 0.15:
        return "flat"
    if 0.85 <= b <= 1.15:
        return "linear"
    if b > 1.15:
        return "superlinear"
    if b > 0:
        return "sublinear"
    return "falling"


def _saturated(levels: list[Level]) -> Level:
    """The first level of 16 clients or more (the workers saturated), else the last."""
    return next((lv for lv in levels if lv.clients >= 16), levels[-1])


def growth(levels: list[Level]) -> dict[str, float]:
    """The shape rows: p50 and p99 at the last level over the first, throughput at the
    last over the first saturated one."""
    lo, hi, mid = levels[0], levels[-1], _saturated(levels)
    return {
        f"p50 at {hi.clients} / p50 at {lo.clients} clients": hi.p(50) / lo.p(50),
        f"p99 at {hi.clients} / p99 at {lo.clients} clients": hi.p(99) / lo.p(99),
        f"throughput at {hi.clients} / at {mid.clients} clients": hi.throughput / mid.throughput,
    }


def shape_lines(side: str, levels: list[Level]) -> list[str]:
    """The computed shape of one side's curves, first and last level (and the first
    saturated one to the last)."""
    lo, hi, mid = levels[0], levels[-1], _saturated(levels)
    lines = []
    for q in (50, 99):
        b = exponent(lo.clients, lo.p(q), hi.clients, hi.p(q))
        text = (
            f"{side} p{q}: x{hi.p(q) / lo.p(q):.1f} from {lo.clients} to {hi.clients} "
            f"clients (slope {b:.2f} in log-log: {shape(b)})"
        )
        if mid is not hi and mid is not lo:
            b2 = exponent(mid.clients, mid.p(q), hi.clients, hi.p(q))
            text += (
                f"; x{hi.p(q) / mid.p(q):.1f} from {mid.clients} to {hi.clients} "
                f"(slope {b2:.2f}: {shape(b2)})"
            )
        lines.append(text)
    ratio = hi.throughput / mid.throughput
    text = (
        f"{side} throughput: x{ratio:.2f} from {mid.clients} to {hi.clients} clients "
        f"({level(ratio)}), x{mid.throughput / lo.throughput:.2f} from {lo.clients} to "
        f"{mid.clients}"
    )
    mean = hi.steady_mean_ms
    if mean is not None:
        text += (
            f"; mean latency at {hi.clients} clients in the steady window {mean:.0f} ms "
            f"against {hi.little_ms:.0f} ms from Little's law (clients / throughput)"
        )
        if abs(mean / hi.little_ms - 1) < 0.2:
            text += ": the latency growth is the wait for the workers, not cost added per task"
    lines.append(text)
    return lines


def level(ratio: float) -> str:
    """A name for a throughput ratio between two saturated levels (20% either way is the
    noise of this shared machine)."""
    if 0.8 <= ratio <= 1.25:
        return "flat"
    return "rising" if ratio > 1 else "falling"


# -- the scenario -------------------------------------------------------------------------
def scaling(ctx: Context, run: int) -> Result:
    sizes = ctx.sizes
    # Warm-up (scripts loaded, pools filled, worker children connected), not timed.
    asyncio.run(_bridge_level(ctx, 1, 0, warmup=True))
    for _ in range(WARMUP):
        rawcelery.noop.apply_async(("x",)).get(timeout=30, interval=rawcelery.POLL)
    bridge: list[Level] = []
    raw: list[Level] = []
    for clients in sizes.scaling_clients:
        each = per_client(sizes.scaling_tasks, sizes.scaling_min_per_client, clients)
        bridge.append(asyncio.run(_bridge_level(ctx, clients, each)))
        _idle_queues(ctx)
        raw.append(_raw_level(ctx, clients, each))
        _idle_queues(ctx)
    res = Result()
    for b, r in zip(bridge, raw, strict=True):
        scen = f"{SCENARIO}, {b.clients} clients"
        cpu_ms = ms(b.cpu.get("bridge", 0.0) / b.tasks)
        res.rows += [
            Row(scen, "e2e p50", run, b.p(50), r.p(50), "ms"),
            Row(scen, "e2e p99", run, b.p(99), r.p(99), "ms"),
            Row(scen, "throughput", run, b.throughput, r.throughput, "tasks/s"),
            Row(scen, "bridge CPU per task", run, cpu_ms, None, "ms"),
        ]
        res.details.append(
            f"run {run}, {b.clients} clients x {b.tasks // b.clients} tasks: bridge "
            f"{b.tasks} tasks in {b.seconds:.2f} s ({_window(b)}), raw {r.tasks} in "
            f"{r.seconds:.2f} s ({_window(r)}); "
            f"bench client CPU per task: bridge side {_per_task(b, 'bench client')} ms, raw "
            f"side {_per_task(r, 'bench client')} ms. CPU used (per process kind, /proc): "
            f"bridge run: {_cpu_used({}, b.cpu)}; raw run: {_cpu_used({}, r.cpu)}"
        )
    raw_growth = growth(raw)
    for metric, value in growth(bridge).items():
        res.rows.append(Row(f"{SCENARIO}, shape", metric, run, value, raw_growth[metric], "x"))
    res.details += [f"run {run}: " + line for line in shape_lines("bridge", bridge)]
    res.details += [f"run {run}: " + line for line in shape_lines("raw Celery", raw)]
    return res


def _per_task(level: Level, label: str) -> str:
    return f"{ms(level.cpu.get(label, 0.0) / level.tasks):.2f}"


def _window(level: Level) -> str:
    a, b = level.window
    if len(level.steady) < max(level.clients, 2):
        # A client ended its last task before another ended its first: no steady state.
        return "no steady window: throughput over the whole level"
    return f"{len(level.steady)} in the steady window of {b - a:.2f} s"
