"""What /proc says about a process: memory, CPU time, and which of its TCP sockets are
Redis connections (so a Redis ``CLIENT LIST`` entry or a ``MONITOR`` line can be
traced back to the process that opened it)."""

from __future__ import annotations

import os
from pathlib import Path

#: Clock ticks per second of utime/stime in /proc/<pid>/stat.
CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3, the state, first);
    None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` in clock ticks; None when it is gone or a zombie."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[11]) + int(fields[12])


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except (FileNotFoundError, PermissionError):
        return inodes
    for fd in entries:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tcp_table(remote_port: int) -> dict[int, int]:
    """socket inode -> local port, for TCP sockets connected to ``remote_port``."""
    table: dict[int, int] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], int(parts[9])
            if int(remote.rsplit(":", 1)[1], 16) == remote_port and inode:
                table[inode] = int(local.rsplit(":", 1)[1], 16)
    return table


def redis_ports(pids: dict[int, str], redis_port: int = 6379) -> dict[int, str]:
    """Local port of every Redis connection of the given processes -> the label of its
    process (``pids`` maps pid -> label). A socket a child inherited from its parent keeps
    the label of the pid listed first (list parents before their children)."""
    table = _tcp_table(redis_port)
    ports: dict[int, str] = {}
    for pid, label in pids.items():
        for inode in socket_inodes(pid):
            port = table.get(inode)
            if port is not None:
                ports.setdefault(port, label)
    return ports
