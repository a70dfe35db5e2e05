"""``python -m bench.preauth [--pings N] [--redis-db D]``: an authenticated ``ping``'s median
latency on an idle bridge, then while two clients without a token POST 4 MiB of nested
arrays over and over (issue 15, item 1). Run by hand; prints one markdown row.

The bridge is a real ``mcp-celery-bridge serve`` subprocess with static tokens; it needs
Redis (sessions) on 127.0.0.1:6379 and uses a key prefix unique to the run in database D."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

from tests.flood import Senders, ping_median, session
from tests.services import bridge_server, test_env


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.preauth")
    parser.add_argument("--pings", type=int, default=20)
    parser.add_argument("--redis-db", type=int, default=9)
    args = parser.parse_args()
    env = {**test_env(args.redis_db), "MCP_BRIDGE_AUTH_TOKENS": "tok-bench:bench"}
    with (
        tempfile.TemporaryDirectory() as logs,
        bridge_server(env, Path(logs), "bridge-preauth") as url,
        contextlib.closing(session(url, "tok-bench")) as client,
    ):
        ping_median(client, url, 5)  # warm up
        idle = ping_median(client, url, args.pings)
        with Senders(url, count=2) as senders:
            loaded = ping_median(client, url, args.pings)
            sent = senders.sent
    print("| idle ping p50 | ping p50, 2 unauthenticated 4 MiB senders | ratio | bodies sent |")
    print("|---|---|---|---|")
    print(f"| {idle * 1000:.1f} ms | {loaded * 1000:.1f} ms | {loaded / idle:.0f}x | {sent} |")


if __name__ == "__main__":
    main()
