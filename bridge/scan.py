"""Reading hashes that have no index: every ``{prefix}<id>`` hash, found by SCAN.

The operator commands (``bridge.admin``) list tasks and sessions this way, across owners.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from typing import TypeVar

import redis

#: Keys asked of Redis per SCAN step, and hashes read per pipeline round trip.
SCAN_COUNT = 500
T = TypeVar("T")


def collect(
    client: redis.Redis,
    key_prefix: str,
    limit: int,
    parse: Callable[[str, dict[str, str], int], T | None],
) -> tuple[list[T], bool]:
    """What ``parse(id, hash, pttl)`` keeps of the hashes ``{key_prefix}<id>``, and whether
    ``limit`` (0: none) stopped the search. There is no index: SCAN (no order, may repeat a
    key) in steps of ``SCAN_COUNT`` keys, each batch read in one pipelined round trip. Ids
    never contain ':', so that skips sub-keys like ``:inputs`` and ``:answer:``. Redis
    errors pass through."""
    # The prefix is an operator's string: escape glob characters so MATCH is literal.
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", key_prefix) + "*"
    found: list[T] = []

    def fresh_ids() -> Iterator[str]:
        seen: set[str] = set()
        for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
            item_id = str(key)[len(key_prefix) :]
            if ":" not in item_id and item_id not in seen:
                seen.add(item_id)
                yield item_id

    fresh = fresh_ids()
    while batch := list(itertools.islice(fresh, SCAN_COUNT)):
        with client.pipeline(transaction=False) as pipe:
            for item_id in batch:
                pipe.hgetall(key_prefix + item_id)
                pipe.pttl(key_prefix + item_id)
            replies = pipe.execute()
        for item_id, h, pttl in zip(batch, replies[::2], replies[1::2], strict=True):
            # An empty hash expired between SCAN and the read.
            item = parse(item_id, h, int(pttl)) if h else None
            if item is not None:
                found.append(item)
                if limit and len(found) >= limit:
                    return found, True
    return found, False
