"""Counting what Redis does for us: a MONITOR capture (DB 9 only, each command traced back
to the process whose connection sent it), round trips grouped from it, INFO commandstats
deltas (server-wide, so other databases' traffic shows there too), and key sizes."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from bench.services import REDIS_DB, REDIS_HOST, REDIS_PORT

#: Two commands of one connection less than this apart (server clock) came in one write:
#: a pipeline. A client that waits for a reply cannot send again this fast (a Python
#: client's loopback round trip is well over 50 us).
PIPELINE_GAP_S = 30e-6

_LINE = re.compile(rb"^\+(\d+\.\d+) \[(\d+) ([^\]]*)\] (.*)$")
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}


def parse_args(raw: bytes) -> list[bytes]:
    """The quoted, escaped arguments of a MONITOR line."""
    args: list[bytes] = []
    i, n = 0, len(raw)
    while i < n:
        if raw[i : i + 1] != b'"':
            i += 1
            continue
        i += 1
        out = bytearray()
        while i < n and raw[i : i + 1] != b'"':
            c = raw[i : i + 1]
            if c == b"\\" and i + 1 < n:
                nxt = raw[i + 1 : i + 2]
                if nxt == b"x" and i + 3 < n:
                    out += bytes([int(raw[i + 2 : i + 4], 16)])
                    i += 4
                    continue
                out += _ESCAPES.get(nxt, nxt)
                i += 2
                continue
            out += c
            i += 1
        args.append(bytes(out))
        i += 1
    return args


@dataclass(frozen=True)
class Command:
    time: float
    client: str  # "127.0.0.1:PORT" or "lua"
    args: list[bytes]

    @property
    def name(self) -> str:
        return self.args[0].decode().upper() if self.args else ""

    @property
    def port(self) -> int | None:
        if self.client == "lua" or ":" not in self.client:
            return None
        return int(self.client.rsplit(":", 1)[1])


@dataclass
class Capture:
    commands: list[Command] = field(default_factory=list)
    other_db_lines: int = 0
    started: float = 0.0
    stopped: float = 0.0

    @property
    def duration(self) -> float:
        return self.stopped - self.started


class Monitor:
    """MONITOR on a raw socket in a thread; keeps DB 9 lines, counts the rest."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.capture = Capture()

    def __enter__(self) -> Monitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        sock = socket.create_connection((REDIS_HOST, REDIS_PORT))
        sock.sendall(b"MONITOR\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += sock.recv(5)
        assert reply == b"+OK\r\n", reply
        sock.settimeout(0.2)
        self._sock = sock
        self.capture.started = time.time()
        self._thread = threading.Thread(target=self._read, name="bench-monitor", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._sock is not None
        buffer = b""
        marker = b" [%d " % REDIS_DB
        while not self._stop.is_set():
            try:
                data = self._sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not data:
                break
            buffer += data
            *lines, buffer = buffer.split(b"\r\n")
            for line in lines:
                if marker not in line[:40]:
                    self.capture.other_db_lines += 1
                    continue
                m = _LINE.match(line)
                if m is None or int(m.group(2)) != REDIS_DB:
                    self.capture.other_db_lines += 1
                    continue
                self.capture.commands.append(
                    Command(float(m.group(1)), m.group(3).decode(), parse_args(m.group(4)))
                )

    def stop(self) -> Capture:
        # Let the last lines arrive.
        time.sleep(0.3)
        self.capture.stopped = time.time() - 0.3
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._sock is not None:
            self._sock.close()
        return self.capture


@dataclass
class Traffic:
    """Per process label: round trips, and commands by name (Lua-internal ones under the
    label ``lua``)."""

    round_trips: Counter[str] = field(default_factory=Counter)
    commands: dict[str, Counter[str]] = field(default_factory=dict)
    trip_kinds: dict[str, Counter[str]] = field(default_factory=dict)
    channels: dict[str, Counter[str]] = field(default_factory=dict)
    registry_trips: Counter[str] = field(default_factory=Counter)


_IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16,}")


def _channel(cmd: Command) -> str | None:
    """``PUBLISH``/``SUBSCRIBE`` with its channel, ids masked."""
    if cmd.name in ("PUBLISH", "SUBSCRIBE", "UNSUBSCRIBE") and len(cmd.args) > 1:
        return f"{cmd.name} {_IDS.sub('<id>', cmd.args[1].decode(errors='replace'))}"
    return None


def _keys(cmd: Command) -> list[bytes]:
    """The key(s) a command names, as far as this benchmark needs: the first argument, or
    an EVAL/EVALSHA's declared keys."""
    if cmd.name in ("EVAL", "EVALSHA") and len(cmd.args) > 2:
        n = int(cmd.args[2])
        return cmd.args[3 : 3 + n]
    if cmd.name in ("MULTI", "EXEC", "DISCARD") or len(cmd.args) < 2:
        return []
    return [cmd.args[1]]


def traffic(capture: Capture, ports: dict[int, str], prefix: str = "") -> Traffic:
    """Group the capture per process (``ports`` maps a connection's local port to its
    process label; unknown ports are ``other``). A round trip is one command, or a
    MULTI..EXEC block, or commands of one connection pipelined within PIPELINE_GAP_S. A
    round trip that touches a key starting with ``prefix`` is also counted under
    ``registry_trips`` (the bridge's own keys, as opposed to Celery's queues, events,
    results and unacked bookkeeping)."""
    out = Traffic()
    last: dict[str, float] = {}
    in_multi: set[str] = set()
    open_trip: dict[str, list[Any]] = {}  # connection -> [label, touches registry]
    pre = prefix.encode()
    for cmd in capture.commands:
        if cmd.client == "lua":
            out.commands.setdefault("lua (inside scripts)", Counter())[cmd.name] += 1
            continue
        port = cmd.port
        label = ports.get(port, "other") if port is not None else "other"
        out.commands.setdefault(label, Counter())[cmd.name] += 1
        channel = _channel(cmd)
        if channel:
            out.channels.setdefault(label, Counter())[channel] += 1
        key = cmd.client
        pipelined = key in in_multi or (cmd.time - last.get(key, -1.0) < PIPELINE_GAP_S)
        if cmd.name == "MULTI":
            in_multi.add(key)
        elif cmd.name in ("EXEC", "DISCARD"):
            in_multi.discard(key)
        last[key] = cmd.time
        if not pipelined:
            out.round_trips[label] += 1
            kind = "MULTI/EXEC" if cmd.name == "MULTI" else cmd.name
            out.trip_kinds.setdefault(label, Counter())[kind] += 1
            open_trip[key] = [label, False]
        trip = open_trip.get(key)
        if trip is not None and pre and not trip[1]:
            if any(k.startswith(pre) for k in _keys(cmd)):
                trip[1] = True
                out.registry_trips[label] += 1
    return out


def commandstats(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def commandstats_delta(before: dict[str, int], after: dict[str, int]) -> Counter[str]:
    return Counter(
        {k: after.get(k, 0) - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    )


def key_sizes(client: redis.Redis, pattern: str, sample: int = 500) -> dict[str, Any]:
    """Count and MEMORY USAGE (exact, SAMPLES 0) of keys matching ``pattern`` (at most
    ``sample`` of them measured)."""
    keys = list(client.scan_iter(match=pattern, count=1000))
    return {**sizes_of(client, keys[:sample]), "count": len(keys)}


def sizes_of(client: redis.Redis, keys: list[str]) -> dict[str, Any]:
    """MEMORY USAGE (exact, SAMPLES 0) of the given keys (missing ones are skipped)."""
    sizes = [int(s) for s in (client.memory_usage(k, samples=0) for k in keys) if s]
    return {
        "count": len(keys),
        "measured": len(sizes),
        "mean_bytes": sum(sizes) / len(sizes) if sizes else 0.0,
        "total_bytes": sum(sizes),
    }
