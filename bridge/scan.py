"""Reading hashes that have no index: every task or session hash, found by SCAN.

The operator commands (``bridge.admin``) list tasks and sessions this way, across owners.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from typing import TypeVar

from mcp_celery_bridge.bridge.shared.clients import SyncRedis
from mcp_celery_bridge.bridge.shared.keys import Keys

#: Keys asked of Redis per SCAN step, and hashes read per pipeline round trip.
SCAN_COUNT = 500
T = TypeVar("T")


def collect(
    client: SyncRedis,
    keys: Keys,
    kind: str,
    limit: int,
    parse: Callable[[str, dict[str, str], int], T | None],
) -> tuple[list[T], bool]:
    """What ``parse(id, hash, pttl)`` keeps of the hashes of ``kind`` ("task" or "session")
    under ``keys``' prefix, and whether ``limit`` (0: none) stopped the search. There is no
    index: SCAN (no order, may repeat a key; on a Cluster, every primary in turn) in steps
    of ``SCAN_COUNT`` keys, each batch read in one pipelined round trip. Ids never contain
    ':', so that skips sub-keys like ``:inputs`` and ``:answer:``. Redis errors pass
    through."""
    # The prefix is an operator's string: escape glob characters so MATCH is literal.
    prefix = re.sub(r"([*?\[\]\\])", r"\\\1", keys.prefix)
    shard = "" if keys.shards == 1 else "{*}:"
    pattern = f"{prefix}:{shard}{kind}:*"
    found: list[T] = []

    def fresh_ids() -> Iterator[tuple[str, str]]:
        seen: set[str] = set()
        for found_key in client.scan_iter(match=pattern, count=SCAN_COUNT):
            key = str(found_key)
            item_id = key.rpartition(f":{kind}:")[2]
            if ":" not in item_id and item_id not in seen:
                seen.add(item_id)
                yield item_id, key

    fresh = fresh_ids()
    while batch := list(itertools.islice(fresh, SCAN_COUNT)):
        with client.pipeline(transaction=False) as pipe:
            for _, key in batch:
                pipe.hgetall(key)
                pipe.pttl(key)
            replies = pipe.execute()
        for (item_id, _), h, pttl in zip(batch, replies[::2], replies[1::2], strict=True):
            # An empty hash expired between SCAN and the read.
            item = parse(item_id, h, int(pttl)) if h else None
            if item is not None:
                found.append(item)
                if limit and len(found) >= limit:
                    return found, True
    return found, False
