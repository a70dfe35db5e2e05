"""8. The peers, side by side (issue 17): the bridge, raw Celery and each peer server
(``bench/peer.py``) in the same run, on the same Redis, driven by the same lean client.

End-to-end latency is taken three ways, each where the server offers it:
- ``notify``: create -> the ``completed`` ``notifications/tasks/status`` on the session's
  GET stream (2025-11-25 servers);
- ``result``: create -> a blocking ``tasks/result`` sent right after the create answered
  (2025-11-25). FastMCP 3 does not block: while the task works it answers -32602 "Task
  not completed yet"; the series stops at the first such answer and the server is shown
  with none. A FastMCP 3 series that completes means every task had already ended when
  its create was answered, so it measures the create, not a wait;
- ``poll``: create -> the first ``tasks/get`` that says ``completed``, polled back to back
  (the only way a 2026-07-28 client without ``subscriptions/listen`` learns the end:
  FastMCP 4 has no task notifications).
Throughput: N tasks, C clients each creating its share one after another, the clock
stopping at the last completion (learned from notifications, else by polling)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import rawcelery
from bench.client import Session, Stream
from bench.modern import ModernClient
from bench.peer import PEERS, Peer, ensure_venv, installed, start_server
from bench.scenarios import Context
from bench.stats import Result, ms, percentile
from mcp_celery_bridge.bridge.messages import RpcError
from tests.services import free_port

HOST = "127.0.0.1"
TERMINAL = {"completed", "failed", "cancelled"}
WARMUP = 10
#: A notification not seen this long after the last one is fetched with tasks/get.
QUIET_S = 10.0


@dataclass
class Side:
    name: str
    port: int
    era: str
    #: None until probed: whether tasks/result blocks until the task ends.
    blocking: bool | None = None
    departure: str = ""


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- latency ------------------------------------------------------------------------------
async def _notify(port: int, n: int) -> list[float]:
    session = Session(HOST, port)
    await session.initialize()
    stream = Stream(session)
    await stream.open()
    arrived: dict[str, float] = {}
    events: dict[str, asyncio.Event] = {}

    def on_status(params: dict[str, Any], received: float, perf: float) -> None:
        if params["status"] in TERMINAL:
            arrived.setdefault(params["taskId"], perf)
            events.setdefault(params["taskId"], asyncio.Event()).set()

    reader = asyncio.create_task(stream.run(on_status))
    times = []
    for i in range(WARMUP + n):
        t0 = time.perf_counter()
        task = await session.create_task("echo", {"text": "x"})
        tid = task["taskId"]
        await asyncio.wait_for(events.setdefault(tid, asyncio.Event()).wait(), 30)
        if i >= WARMUP:
            times.append(arrived[tid] - t0)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    await stream.close()
    await session.conn.close()
    return times


async def _result(port: int, n: int) -> list[float] | str:
    """Latencies, or what the server answered instead of blocking."""
    session = Session(HOST, port)
    await session.initialize()
    times = []
    for i in range(WARMUP + n):
        t0 = time.perf_counter()
        task = await session.create_task("echo", {"text": "x"})
        try:
            result = await session.call("tasks/result", {"taskId": task["taskId"]})
        except RpcError as e:
            await session.conn.close()
            return f"{e.code}: {e.message}"
        assert result["content"][0]["text"] == "x", result
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    await session.conn.close()
    return times


async def _poll(side: Side, n: int) -> tuple[list[float], float]:
    """Latencies, and the mean number of tasks/get per task."""
    times, polls = [], 0
    if side.era == "modern":
        client = ModernClient(HOST, side.port)
        for i in range(WARMUP + n):
            t0 = time.perf_counter()
            tid = await client.create_task("echo", {"text": "x"})
            k = 1
            while await client.status(tid) not in TERMINAL:
                k += 1
            if i >= WARMUP:
                times.append(time.perf_counter() - t0)
                polls += k
        await client.close()
    else:
        session = Session(HOST, side.port)
        await session.initialize()
        for i in range(WARMUP + n):
            t0 = time.perf_counter()
            tid = (await session.create_task("echo", {"text": "x"}))["taskId"]
            k = 1
            while (await session.call("tasks/get", {"taskId": tid}))["status"] not in TERMINAL:
                k += 1
            if i >= WARMUP:
                times.append(time.perf_counter() - t0)
                polls += k
        await session.conn.close()
    return times, polls / max(n, 1)


# -- throughput ---------------------------------------------------------------------------
async def _throughput_legacy(port: int, n: int, clients: int) -> dict[str, Any]:
    sessions = [Session(HOST, port) for _ in range(clients)]
    for s in sessions:
        await s.initialize()
    streams = [Stream(s) for s in sessions]
    for st in streams:
        await st.open()
    done: dict[str, float] = {}
    progress = asyncio.Event()

    def on_status(params: dict[str, Any], received: float, perf: float) -> None:
        if params["status"] in TERMINAL and params["taskId"] not in done:
            done[params["taskId"]] = perf
            progress.set()

    readers = [asyncio.create_task(st.run(on_status)) for st in streams]
    ids: list[list[str]] = [[] for _ in sessions]
    share = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]

    async def create(i: int) -> None:
        for _ in range(share[i]):
            ids[i].append((await sessions[i].create_task("echo", {"text": "x"}))["taskId"])

    t0 = time.perf_counter()
    await asyncio.gather(*(create(i) for i in range(clients)))
    created = time.perf_counter() - t0
    while len(done) < n:
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), QUIET_S)
        except TimeoutError:
            break
    notified = len(done)
    # What the streams never told: asked for (a polling client would have learned it
    # sooner, so this can only make the figure worse for the server).
    for i, session in enumerate(sessions):
        for tid in ids[i]:
            while tid not in done:
                status = (await session.call("tasks/get", {"taskId": tid}))["status"]
                if status in TERMINAL:
                    done[tid] = time.perf_counter()
    for r in readers:
        r.cancel()
    for st in streams:
        await st.close()
    for s in sessions:
        await s.conn.close()
    return {
        "seconds": max(done.values()) - t0,
        "created_s": created,
        "notified": notified,
        "polled": n - notified,
    }


async def _throughput_modern(port: int, n: int, clients: int) -> dict[str, Any]:
    share = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    done: list[float] = []
    polls = 0

    async def run(i: int) -> None:
        nonlocal polls
        client = ModernClient(HOST, port)
        pending = [await client.create_task("echo", {"text": "x"}) for _ in range(share[i])]
        while pending:
            still = []
            for tid in pending:
                polls += 1
                if await client.status(tid) in TERMINAL:
                    done.append(time.perf_counter())
                else:
                    still.append(tid)
            pending = still
        await client.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(clients)))
    return {"seconds": max(done) - t0, "polls_per_task": polls / n}


# -- the scenario -------------------------------------------------------------------------
def _start_peers(ctx: Context) -> list[tuple[Peer, Side]]:
    """The peer servers, started once for every run (stopped with the services); a peer
    that cannot be installed or started is reported, not fatal."""
    if "peers" in ctx.state:
        found: list[tuple[Peer, Side]] = ctx.state["peers"]
        return found
    from bench.services import REDIS_URL

    started: list[tuple[Peer, Side]] = []
    notes: list[str] = []
    for peer in PEERS:
        try:
            ensure_venv(peer)
            port = free_port()
            proc = start_server(
                peer,
                port,
                ctx.services.log_dir,
                REDIS_URL,
                f"{ctx.services.prefix}-{peer.key}",
            )
        except Exception as e:
            notes.append(f"{peer.title}: could not be run: `{type(e).__name__}: {e}`"[:600])
            continue
        ctx.services.adopt(proc.stop)
        versions = ", ".join(f"{k} {v}" for k, v in installed(peer).items())
        where = "Docket on the run's Redis" if peer.redis else "in memory"
        notes.append(f"{peer.title}: {versions}; tasks {where}; `{peer.server.name}`")
        started.append((peer, Side(peer.title, port, peer.era)))
    ctx.state["peers"] = started
    ctx.state["peer_notes"] = notes
    return started


def _fmt(values: list[float] | None) -> str:
    if not values:
        return "n/a"
    return f"{ms(percentile(values, 50)):.2f} ms"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"{a / b:.2f}x"


def peers(ctx: Context, run: int) -> Result:
    sizes = ctx.sizes
    n_lat, n_thr, clients = sizes.peer_e2e, sizes.peer_throughput, sizes.clients
    bridge = Side("bridge", ctx.port, "legacy")
    bridge_modern = Side("bridge (2026-07-28)", ctx.port, "modern")
    peer_sides = [side for _, side in _start_peers(ctx)]
    legacy = [bridge, *(s for s in peer_sides if s.era == "legacy")]
    pollers = [bridge, bridge_modern, *peer_sides]
    load0 = _load()
    notify = {s.name: asyncio.run(_notify(s.port, n_lat)) for s in legacy}
    result: dict[str, list[float]] = {}
    for s in legacy:
        got = asyncio.run(_result(s.port, n_lat))
        if isinstance(got, str):
            s.blocking, s.departure = False, got
        else:
            s.blocking, result[s.name] = True, got
    poll: dict[str, tuple[list[float], float]] = {
        s.name: asyncio.run(_poll(s, n_lat)) for s in pollers
    }
    raw_e2e = rawcelery.roundtrip_latency(n_lat)
    thr: dict[str, dict[str, Any]] = {}
    for s in [bridge, *peer_sides]:
        if s.era == "modern":
            thr[s.name] = asyncio.run(_throughput_modern(s.port, n_thr, clients))
        else:
            thr[s.name] = asyncio.run(_throughput_legacy(s.port, n_thr, clients))
    raw_seconds, _ = rawcelery.throughput(n_thr)
    load1 = _load()

    def rate(name: str) -> float:
        return n_thr / float(thr[name]["seconds"])

    raw_rate = n_thr / raw_seconds
    res = Result()
    res.details += [
        f"run {run}: load average {load0} before, {load1} after; e2e {n_lat} sequential "
        f"tasks per way (after {WARMUP} warm-up), throughput {n_thr} tasks by {clients} "
        "clients",
        "",
        "| server | e2e p50, notification | e2e p50, blocking tasks/result | e2e p50, "
        "polling tasks/get (gets per task) | throughput |",
        "|---|---|---|---|---|",
    ]
    for s in [bridge, bridge_modern, *peer_sides]:
        p_times, p_count = poll[s.name]
        res.details.append(
            f"| {s.name} | {_fmt(notify.get(s.name))} | "
            f"{_fmt(result.get(s.name)) if s.blocking is not False else 'none: ' + s.departure}"
            f" | {_fmt(p_times)} ({p_count:.1f}) | "
            + (f"{rate(s.name):.0f} tasks/s" if s.name in thr else "")
            + " |"
        )
    res.details.append(
        f"| raw Celery | {_fmt(raw_e2e)} (`apply_async().get()`) | | | {raw_rate:.0f} tasks/s |"
    )
    res.details += [
        "",
        "| bridge / other | e2e p50, notification | e2e p50, tasks/result | e2e p50, "
        "polling (2026-07-28 bridge for a modern peer) | throughput |",
        "|---|---|---|---|---|",
    ]

    def p50(values: list[float] | None) -> float | None:
        return percentile(values, 50) if values else None

    b_notify, b_result = p50(notify["bridge"]), p50(result.get("bridge"))
    for s in peer_sides:
        own_poll = p50(poll[s.name][0])
        b_poll = p50(poll[bridge_modern.name if s.era == "modern" else "bridge"][0])
        res.details.append(
            f"| {s.name} | {_ratio(b_notify, p50(notify.get(s.name)))} | "
            f"{_ratio(b_result, p50(result.get(s.name)))} | {_ratio(b_poll, own_poll)} | "
            f"{_ratio(rate('bridge'), rate(s.name))} |"
        )
    res.details.append(
        f"| raw Celery | {_ratio(b_notify, p50(raw_e2e))} | {_ratio(b_result, p50(raw_e2e))} "
        f"| | {_ratio(rate('bridge'), raw_rate)} |"
    )
    res.details.append("")
    for s in [bridge, *peer_sides]:
        t = thr[s.name]
        extra = (
            f"{t['polls_per_task']:.1f} tasks/get per task"
            if "polls_per_task" in t
            else f"creates done after {t['created_s']:.1f} s; {t['notified']} completions "
            f"notified, {t['polled']} learned by tasks/get after {QUIET_S:.0f} s without one"
        )
        res.details.append(f"- throughput, {s.name}: {t['seconds']:.1f} s ({extra})")
    if run == 1:
        res.details += ["", *(f"- {line}" for line in ctx.state.get("peer_notes", []))]
    return res
