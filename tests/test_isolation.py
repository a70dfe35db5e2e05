"""The suite touches no Redis but its own: every bridge and worker process it started talks
to redis-server processes the suite started itself, whatever else runs on the machine (a
dev stack on 127.0.0.1:6379 lost its tasks to a suite that flushed "its" databases there)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from tests.services import Process, parent_pid


def _sockets(pid: int) -> set[str]:
    """The inodes of the sockets ``pid`` holds open."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def _tcp() -> list[tuple[int, int, str, str]]:
    """(local port, remote port, state, inode) of every TCP socket of this network
    namespace."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            rows.append(
                (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), state, inode)
            )
    return rows


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}  # another user's process, or gone
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def test_bridges_and_workers_talk_only_to_the_suites_own_redis(
    env: dict[str, str], worker: Process, bridge: str
) -> None:
    assert httpx.get(bridge.removesuffix("/mcp") + "/readyz").status_code == 200
    tcp = _tcp()
    listening = {inode: local for local, _, state, inode in tcp if state == "0A"}
    # The ports of the redis-server processes this test run started.
    own_redis: set[int] = set()
    for pid in _pids():
        try:
            if parent_pid(pid) == os.getpid() and Path(f"/proc/{pid}/comm").read_text().startswith(
                "redis-server"
            ):
                own_redis |= {listening[i] for i in _sockets(pid) if i in listening}
        except OSError:
            continue
    assert own_redis, "the suite started no redis-server of its own"

    prefix = env["MCP_BRIDGE_KEY_PREFIX"]
    ours = [pid for pid in _pids() if _environ(pid).get("MCP_BRIDGE_KEY_PREFIX") == prefix]
    assert worker.pid in ours and len(ours) >= 3, "the worker, its pool and the bridge"
    elsewhere, to_own = [], 0
    for pid in ours:
        inodes = _sockets(pid)
        served = {listening[i] for i in inodes if i in listening}
        for local, remote, state, inode in tcp:
            # Established connections this process opened (not those its server accepted).
            to_own += inode in inodes and state == "01" and remote in own_redis
            if (
                inode in inodes
                and state == "01"
                and local not in served
                and remote not in own_redis
            ):
                elsewhere.append((pid, remote))
    assert to_own, "no connection to the suite's Redis seen"
    assert not elsewhere, f"processes of the suite connected outside its own Redis: {elsewhere}"
