"""``python -m bench.streammem [--streams K]``: where an idle GET stream's memory goes in the
bridge, by the Python heap (tracemalloc) of a bridge holding K idle streams against the same
bridge holding none.

The bridge runs in this process (uvicorn on uvloop and httptools, as ``serve`` runs it,
in a thread), on a private redis-server; the K sessions and their streams are opened by a
child process with the suite's lean client, so the client's memory is not counted. The
heap grown between the two snapshots, per stream, is grouped by the package that allocated
it (the innermost frame of the allocation). RSS per stream (what the ``streams`` scenario
reports) is larger: the transport's buffers and the allocator's slack are not Python heap.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

_CLIENT = textwrap.dedent(
    """
    import asyncio, sys
    from bench.client import Session, Stream

    async def main(port: int, k: int) -> None:
        streams = []
        for _ in range(k):
            session = Session("127.0.0.1", port)
            await session.initialize()
            await session.conn.close()
            stream = Stream(session)
            await stream.open()
            streams.append(stream)
        print("open", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
    """
)


def _package(filename: str) -> str:
    """The package (or our module) an allocation's innermost frame belongs to."""
    if "mcp_celery_bridge" in filename or "/bridge/" in filename:
        return "bridge: " + Path(filename).name
    if "site-packages/" in filename:
        return filename.split("site-packages/")[1].split("/")[0]
    return "stdlib: " + Path(filename).name


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streammem")
    parser.add_argument("--streams", type=int, default=500)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.services import RedisServer, free_port, test_env

    log_dir = Path(tempfile.mkdtemp(prefix="bench-streammem-"))
    redis = RedisServer(log_dir)
    redis.start()
    env = {**test_env(redis.url), "MCP_BRIDGE_MAX_SESSIONS_PER_PRINCIPAL": "1000000"}
    os.environ.update(env)
    import uvicorn

    from mcp_celery_bridge.bridge.app import create_app
    from mcp_celery_bridge.bridge.shared.settings import Settings

    port = free_port()
    config = uvicorn.Config(
        create_app(Settings()),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        log_config=None,
        loop="uvloop",
        http="httptools",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    client = None
    try:
        tracemalloc.start(1)
        gc.collect()
        before = tracemalloc.take_snapshot()
        client = subprocess.Popen(
            [sys.executable, "-c", _CLIENT, str(port), str(args.streams)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None and client.stdout.readline().strip() == "open"
        time.sleep(1.0)  # the last streams' first writes done
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        if client is not None and client.stdin is not None:
            client.stdin.close()
            client.wait(30)
        server.should_exit = True
        thread.join(10)
        redis.stop()
    own = [tracemalloc.Filter(False, tracemalloc.__file__)]
    grown: dict[str, int] = defaultdict(int)
    for stat in after.filter_traces(own).compare_to(before.filter_traces(own), "filename"):
        grown[_package(stat.traceback[0].filename)] += stat.size_diff
    k = args.streams
    total = sum(grown.values())
    print(f"{k} idle GET streams: the bridge's Python heap grew {total / k / 1024:.1f} KB each")
    for name, size in sorted(grown.items(), key=lambda item: -item[1])[:15]:
        print(f"  {size / k / 1024:6.2f} KB  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
