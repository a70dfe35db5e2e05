"""10. Redis memory per finished task (issue 17): what N tasks that ended leave in Redis
for their TTL, the bridge's and raw Celery's, in the same run.

Two measures, taken with the system idle before and after the N tasks:
- ``INFO memory`` ``used_memory`` (what the allocator holds for the whole server: keys,
  the keyspace's own tables, client buffers, scripts), its difference divided by N;
- ``MEMORY USAGE key SAMPLES 0`` of every key of the database, grouped by kind (ids,
  owners and numbers in the name replaced), the difference of each kind divided by N:
  which keys a task leaves (its hash, its share of the owner's index and event stream,
  byte accounting, ...) and for how long (PTTL of one key of each kind).

``used_memory`` is server-wide: the scenario is meant for the bench's private
redis-server (the default). With ``BENCH_REDIS_URL`` pointing at a shared Redis other
databases' writes land in it too; the details count the keys of other databases."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import redis

from bench import rawcelery
from bench.client import Session
from bench.scenarios import HOST, Context, _idle_queues, _wait_terminal
from bench.services import REDIS_DB
from bench.stats import Result, Row
from mcp_celery_bridge.bridge.shared.settings import Settings

SCENARIO = "10 Redis memory per finished task"
CLIENTS = 16
WARMUP = 20
#: INFO memory fields kept (bytes).
FIELDS = ("used_memory", "used_memory_dataset", "used_memory_overhead", "mem_clients_normal")
#: What varies in key names from one task or owner to the next.
_VARYING = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<id>"),
    # Task and session ids: url-safe tokens between colons.
    (re.compile(r"(?<=:)[A-Za-z0-9_-]{16,}(?=:|$)"), "<id>"),
    (re.compile(r"\d{4,}"), "<n>"),
]


@dataclass
class Snapshot:
    info: dict[str, int]
    sizes: dict[str, int]  # key -> MEMORY USAGE (bytes)


def snapshot(client: redis.Redis) -> Snapshot:
    # INFO first: the scan below fills this client's own buffers, counted in used_memory.
    info = client.info("memory")
    keys = list(client.scan_iter(count=1000))
    sizes: dict[str, int] = {}
    for i in range(0, len(keys), 1000):
        batch = keys[i : i + 1000]
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)
        for key, size in zip(batch, pipe.execute(), strict=True):
            if size is not None:  # (expired meanwhile)
                sizes[key] = int(size)
    return Snapshot({f: int(info[f]) for f in FIELDS}, sizes)


def kind(key: str, prefix: str) -> str:
    name = key.replace(prefix, "{p}", 1)
    for pattern, placeholder in _VARYING:
        name = pattern.sub(placeholder, name)
    return name


@dataclass
class Kind:
    name: str
    keys: int  # new keys of this kind
    bytes: int  # growth of the kind's MEMORY USAGE
    pttl_s: float | None  # of one key of the kind, after


def compare(
    client: redis.Redis, before: Snapshot, after: Snapshot, prefix: str
) -> tuple[list[Kind], Kind]:
    """Growth by kind of the keys there after (new keys whole, the others by what they
    grew), largest first; and the keys gone meanwhile (expired: not what the tasks left,
    but their memory is missing from used_memory's growth)."""
    grown: dict[str, list[int]] = {}
    sample: dict[str, str] = {}
    for key, size in after.sizes.items():
        name = kind(key, prefix)
        entry = grown.setdefault(name, [0, 0])
        entry[0] += key not in before.sizes
        entry[1] += size - before.sizes.get(key, 0)
        sample.setdefault(name, key)
    gone = [size for key, size in before.sizes.items() if key not in after.sizes]
    kinds = []
    for name, (keys, size) in grown.items():
        if keys or size:
            pttl = int(client.pttl(sample[name]))
            kinds.append(Kind(name, keys, size, pttl / 1000 if pttl >= 0 else None))
    kinds.sort(key=lambda k: -k.bytes)
    return kinds, Kind("(gone)", -len(gone), -sum(gone), None)


def _settle(ctx: Context) -> None:
    """Queues empty, then a moment for the last acks and lease releases."""
    _idle_queues(ctx)
    time.sleep(1.0)


# -- bridge -------------------------------------------------------------------------------
async def _bridge(ctx: Context, n: int) -> tuple[Snapshot, Snapshot, list[str]]:
    client = ctx.services.redis()
    warm = Session(HOST, ctx.port)
    await warm.initialize()
    ids = [(await warm.create_task("echo", {"text": "x"}))["taskId"] for _ in range(WARMUP)]
    await warm.conn.close()
    sessions = [Session(HOST, ctx.port) for _ in range(CLIENTS)]
    await asyncio.gather(*(s.initialize() for s in sessions))
    await asyncio.to_thread(_wait_terminal, ctx, ids)
    await asyncio.to_thread(_settle, ctx)
    before = await asyncio.to_thread(snapshot, client)
    shares = [n // CLIENTS + (1 if i < n % CLIENTS else 0) for i in range(CLIENTS)]
    created: list[str] = []

    async def run(session: Session, count: int) -> None:
        for _ in range(count):
            created.append((await session.create_task("echo", {"text": "x"}))["taskId"])

    await asyncio.gather(*(run(s, k) for s, k in zip(sessions, shares, strict=True)))
    for s in sessions:
        await s.conn.close()
    await asyncio.to_thread(_wait_terminal, ctx, created)
    await asyncio.to_thread(_settle, ctx)
    after = await asyncio.to_thread(snapshot, client)
    client.close()
    return before, after, created


def _raw(ctx: Context, n: int) -> tuple[Snapshot, Snapshot]:
    client = ctx.services.redis()
    try:
        for _ in range(WARMUP):
            rawcelery.noop.apply_async(("x",)).get(timeout=30, interval=rawcelery.POLL)
        _settle(ctx)
        before = snapshot(client)
        rawcelery.throughput(n)
        _settle(ctx)
        return before, snapshot(client)
    finally:
        client.close()


def _statuses(ctx: Context, ids: list[str]) -> dict[str, int]:
    client = ctx.services.redis()
    try:
        pipe = client.pipeline(transaction=False)
        for tid in ids:
            pipe.hget(ctx.keys.task(tid), "status")
        counts: dict[str, int] = {}
        for status in pipe.execute():
            counts[str(status)] = counts.get(str(status), 0) + 1
        return counts
    finally:
        client.close()


def _other_databases(ctx: Context) -> int:
    client = ctx.services.redis()
    try:
        space = client.info("keyspace")
    finally:
        client.close()
    return sum(int(v["keys"]) for k, v in space.items() if k != f"db{REDIS_DB}")


def memory(ctx: Context, run: int) -> Result:
    n = ctx.sizes.memory_tasks
    prefix = ctx.services.prefix
    b0, b1, ids = asyncio.run(_bridge(ctx, n))
    statuses = _statuses(ctx, ids)
    if statuses != {"completed": n}:
        raise RuntimeError(f"not every task completed: {statuses}")
    r0, r1 = _raw(ctx, n)
    client = ctx.services.redis()
    try:
        bridge_kinds, bridge_gone = compare(client, b0, b1, prefix)
        raw_kinds, raw_gone = compare(client, r0, r1, prefix)
    finally:
        client.close()

    def per_task(s0: Snapshot, s1: Snapshot, field: str) -> float:
        return (s1.info[field] - s0.info[field]) / n

    def held(s0: Snapshot, s1: Snapshot) -> float:
        # Client buffers (query and output buffers of every connection) grow and shrink
        # with traffic, by hundreds of KB here: not what the tasks leave.
        return per_task(s0, s1, "used_memory") - per_task(s0, s1, "mem_clients_normal")

    def keys_bytes(kinds: list[Kind]) -> tuple[float, float]:
        return sum(k.keys for k in kinds) / n, sum(k.bytes for k in kinds) / n

    b_keys, b_bytes = keys_bytes(bridge_kinds)
    r_keys, r_bytes = keys_bytes(raw_kinds)
    b_used, r_used = held(b0, b1), held(r0, r1)
    res = Result()
    res.rows += [
        Row(SCENARIO, "used_memory growth per task", run, b_used, r_used, "bytes"),
        Row(SCENARIO, "MEMORY USAGE of keys left, per task", run, b_bytes, r_bytes, "bytes"),
        Row(SCENARIO, "keys left per task", run, b_keys, r_keys, "keys"),
    ]
    ttl_s = Settings().task_ttl_default_ms / 1000
    res.details.append(
        f"run {run}: {n:,} `echo` tasks by {CLIENTS} sessions (fresh owners: their keys' fixed "
        f"part is shared by their {n // CLIENTS} tasks each), all `completed`; raw: {n:,} "
        f"`noop` published from one thread and joined. used_memory growth per task without "
        f"client buffers (mem_clients_normal), bridge {b_used:,.0f} B (dataset "
        f"{per_task(b0, b1, 'used_memory_dataset'):,.0f} B; client buffers "
        f"{per_task(b0, b1, 'mem_clients_normal'):+,.0f} B more), raw {r_used:,.0f} B "
        f"(dataset {per_task(r0, r1, 'used_memory_dataset'):,.0f} B; client buffers "
        f"{per_task(r0, r1, 'mem_clients_normal'):+,.0f} B more). At the bridge's "
        f"default task ttl ({ttl_s:,.0f} s) every task/s sustained holds "
        f"{b_used * ttl_s / 1e6:,.1f} MB (raw Celery, result_expires 3,600 s: "
        f"{r_used * 3600 / 1e6:,.1f} MB)"
    )
    for side, kinds, gone in (
        ("bridge", bridge_kinds, bridge_gone),
        ("raw", raw_kinds, raw_gone),
    ):
        res.details.append(f"  {side}, by kind of key (growth / N; PTTL of one key):")
        res.details += [
            f"  - `{k.name}`: {k.keys:+,} keys, {k.bytes:+,} B = {k.bytes / n:,.1f} B per "
            f"task; PTTL {'none' if k.pttl_s is None else f'{k.pttl_s:,.0f} s'}"
            for k in kinds
        ]
        if gone.keys:
            res.details.append(
                f"  - keys of earlier work gone (expired) meanwhile, not counted above: "
                f"{-gone.keys:,} keys, {-gone.bytes:,} B (missing from used_memory's growth)"
            )
    others = _other_databases(ctx)
    if others:
        res.details.append(
            f"  caution: {others:,} keys in other databases of this Redis: used_memory is "
            "server-wide, their writes count in it"
        )
    return res
