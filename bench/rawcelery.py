"""Raw Celery, the baseline: a trivial app and tasks on the same broker database as the
bridge, with a Redis result backend, and the worker settings of ``workers.app`` (prefork,
prefetch 1, task events on, sent events on, JSON).

Its own control exchange keeps its revokes and pings away from the bridge's worker (both
share database 9). Run as ``python -m bench.rawcelery waitmany N OUT`` it is the raw side
of the streams scenario: one client process waiting on N results at once."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
import uuid
from datetime import datetime
from typing import Any

from celery import Celery
from celery.result import AsyncResult, ResultSet

from bench import procs
from bench.gate import gate_client, wait_gate

CONTROL = "benchraw"
#: Poll interval of Celery's result consumer. With the default (0.5 s) it was seen here
#: stalling up to 0.5 s at a time while results were already waiting (celery 5.7), which
#: would flatter the bridge; a short interval gives raw Celery its best figures.
POLL = 0.005

app = Celery("bench_raw")


def raw_config() -> dict[str, Any]:
    url = os.environ.get("BENCH_RAW_REDIS_URL", "redis://127.0.0.1:6379/9")
    return {
        "broker_url": url,
        "result_backend": url,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": os.environ.get("BENCH_RAW_QUEUE", "bench-raw"),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # As workers.app: prefetch 1, task events and sent events on.
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "control_exchange": CONTROL,
        "result_expires": 3600,
    }


app.add_defaults(raw_config)


@app.task(name="bench.noop")
def noop(text: str) -> str:
    return text


@app.task(name="bench.gated")
def gated(key: str) -> str:
    """Like ``bench.tools.gated``: return once the Redis key ``key`` exists."""
    wait_gate(gate_client("BENCH_RAW_REDIS_URL"), key)
    return "x"


@app.task(name="bench.spin", bind=True)
def spin(self: Any, seconds: float) -> int:
    """Busy-loop like ``workers.examples.spin``; tells its pid through the result backend
    first (what a raw Celery user would do to find the process)."""
    self.update_state(state="PROGRESS", meta={"pid": os.getpid()})
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return n


# -- measurements (run in the bench process) ----------------------------------------------
def publish_latency(n: int, warmup: int = 20) -> list[float]:
    """Seconds per ``apply_async()`` call, n sequential calls; waits for every result after
    the timed loop (untimed) so the next measurement starts on an idle worker."""
    results: list[AsyncResult] = []
    times: list[float] = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        r = noop.apply_async(("x",))
        t1 = time.perf_counter()
        results.append(r)
        if i >= warmup:
            times.append(t1 - t0)
    ResultSet(results).join_native(timeout=300, interval=POLL)
    return times


def roundtrip_latency(n: int, warmup: int = 20) -> list[float]:
    """Seconds per ``apply_async().get()``, n sequential calls."""
    times = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        noop.apply_async(("x",)).get(timeout=30, interval=POLL)
        t1 = time.perf_counter()
        if i >= warmup:
            times.append(t1 - t0)
    return times


def throughput(n: int) -> tuple[float, float]:
    """Publish n no-op tasks from one thread, then collect every result; (seconds, seconds
    spent publishing)."""
    t0 = time.perf_counter()
    results = [noop.apply_async(("x",)) for _ in range(n)]
    t1 = time.perf_counter()
    values = ResultSet(results).join_native(timeout=600, interval=POLL)
    t2 = time.perf_counter()
    assert len(values) == n and all(v == "x" for v in values), "raw results missing"
    return t2 - t0, t1 - t0


def wait_many(n: int) -> dict[str, Any]:
    """One client waiting on n results at once: delivery lag (result received minus the
    worker's ``date_done``), RSS per pending result, Redis connections held.

    The tasks wait for a gate that opens once every one is published (and Celery reads
    results only while a caller waits), so the lag is delivery, not the publishing loop."""
    # Warm up the producer and the result consumer, so RSS0 has the connections.
    noop.apply_async(("x",)).get(timeout=30)
    rss0 = procs.rss_kb(os.getpid())
    gate = f"bench-gate-raw-{uuid.uuid4().hex}"
    results = [gated.apply_async((gate,)) for _ in range(n)]
    rss1 = procs.rss_kb(os.getpid())
    app.backend.client.set(gate, "1", ex=3600)
    ids = {r.id for r in results}
    lags: dict[str, float] = {}

    def on_message(meta: dict[str, Any]) -> None:
        now = time.time()
        done = meta.get("date_done")
        tid = meta.get("task_id")
        if meta.get("status") == "SUCCESS" and done and tid in ids and tid not in lags:
            lags[tid] = now - datetime.fromisoformat(done).timestamp()

    ResultSet(results).join_native(timeout=600, interval=POLL, on_message=on_message)
    redis_port = urllib.parse.urlsplit(raw_config()["broker_url"]).port or 6379
    ports = procs.redis_ports({os.getpid(): "raw client"}, redis_port)
    client = app.backend.client
    held = [c for c in client.client_list() if int(c["addr"].rsplit(":", 1)[1]) in ports]
    return {
        "n": n,
        "delivered": len(lags),
        "lags": list(lags.values()),
        "rss_before_kb": rss0,
        "rss_pending_kb": rss1,
        "redis_connections": len(held),
        "pubsub_connections": sum(1 for c in held if int(c["sub"]) or int(c["psub"])),
    }


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[0] == "waitmany":
        out = wait_many(int(argv[1]))
        with open(argv[2], "w") as f:
            json.dump(out, f)
        return
    raise SystemExit("usage: python -m bench.rawcelery waitmany N OUT.json")


if __name__ == "__main__":
    main(sys.argv[1:])
