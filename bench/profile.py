"""py-spy on the bridge: record collapsed stacks while a load runs, then rank functions by
samples where they are on top of the stack (self) and anywhere in it (inclusive)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PY_SPY = Path(sys.executable).parent / "py-spy"
RATE = 100
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def start(pid: int, out: Path) -> subprocess.Popen[bytes]:
    if not PY_SPY.exists():
        raise RuntimeError(f"py-spy not found at {PY_SPY}: .venv/bin/pip install py-spy")
    return subprocess.Popen(
        [
            str(PY_SPY),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            str(RATE),
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop(recorder: subprocess.Popen[bytes]) -> None:
    recorder.send_signal(signal.SIGINT)
    try:
        recorder.wait(timeout=30)
    except subprocess.TimeoutExpired:
        recorder.kill()
        recorder.wait()


#: The checkout's root as it appears in frame paths (to show repo-relative paths).
_ROOT = str(Path(__file__).resolve().parent.parent) + "/"


def _short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (pkg/file.py)``."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", _ROOT, "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def _package(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    path = m.group("file") if m else frame
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if _ROOT in path:
        return "/".join(path.split(_ROOT, 1)[1].split("/")[:1])
    if "lib/python3.11/" in path:
        return "stdlib " + path.split("lib/python3.11/", 1)[1].split("/", 1)[0]
    # py-spy's short file names are relative to their sys.path entry: "uvicorn/...",
    # "asyncio/...", "mcp_celery_bridge/bridge/...".
    parts = path.split("/")
    if parts[0] == "mcp_celery_bridge" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0].removesuffix(".py")


#: Leaf frames that mean "waiting", not running (py-spy's own idle detection did not drop
#: them here, with or without --gil).
WAITS = {
    "EpollSelector.select (selectors.py)": "event loop idle in epoll",
    # uvloop runs the loop in C: a sample whose leaf is the Python frame that entered it is
    # inside libuv (polling, idle or not, and socket I/O), not in any Python callback.
    "Runner.run (asyncio/runners.py)": "event loop inside uvloop's C code (polling and I/O)",
    "Condition.wait (threading.py)": "idle worker thread (waiting for a job)",
    "Event.wait (threading.py)": "idle worker thread (waiting for a job)",
    "EventDispatcher.publish (celery/events/publisher.py)": (
        "blocked on the mutex of Celery's event publisher (task-sent events)"
    ),
    "SocketBuffer._read_from_socket (redis/_parsers/socket.py)": (
        "blocked reading a Redis reply (kombu/redis-py in a thread)"
    ),
}


@dataclass
class Summary:
    seconds_sampled: float
    loop_samples: int
    loop_busy: int
    thread_samples: int
    waits: list[tuple[str, int]]
    loop_self: list[tuple[str, int]]
    loop_incl: list[tuple[str, int]]
    thread_self: list[tuple[str, int]]
    thread_incl: list[tuple[str, int]]
    packages: list[tuple[str, int]]
    loop_parts: list[tuple[str, int]]


def summarize(path: Path, top: int = 15) -> Summary:
    loop_self: Counter[str] = Counter()
    loop_incl: Counter[str] = Counter()
    thread_self: Counter[str] = Counter()
    thread_incl: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    waits: Counter[str] = Counter()
    loop_parts: Counter[str] = Counter()
    total = loop = loop_busy = threads = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if _FRAME.match(f.strip())]
        if not frames:
            continue
        total += count
        # The event loop runs in the main thread (uvicorn); other threads start in
        # threading's bootstrap. (uvloop leaves no Python `run_forever` frame to look for.)
        in_loop = not frames[0].startswith("_bootstrap")
        leaf = frames[-1]
        if in_loop:
            loop += count
        else:
            threads += count
        if leaf in WAITS:
            waits[WAITS[leaf]] += count
            continue
        packages[_package(stack.split(";")[-1])] += count
        names = set(frames)
        if in_loop:
            loop_busy += count
            loop_self[leaf] += count
            loop_parts[_part(stack)] += count
            for name in names:
                if "(bridge/" in name or "(mcp_celery_bridge/bridge/" in name:
                    loop_incl[name] += count
        else:
            thread_self[leaf] += count
            for name in names:
                thread_incl[name] += count
    return Summary(
        total / RATE,
        loop,
        loop_busy,
        threads,
        waits.most_common(),
        loop_self.most_common(top),
        _interesting(loop_incl, loop_busy, top),
        thread_self.most_common(top),
        _interesting(thread_incl, max(1, thread_self.total()), top),
        packages.most_common(top),
        loop_parts.most_common(),
    )


def _part(stack: str) -> str:
    """What an event-loop sample was doing, coarsely."""
    if any(m in stack for m in ("sse_starlette", "bridge/events.py", "listener.py", "channels.py")):
        return "notifications (pub/sub listener, fan-out, SSE writes)"
    if "run_asgi" in stack:
        return "HTTP requests (h11, Starlette, the bridge's handlers and their Redis calls)"
    if "redis/asyncio" in stack:
        return "Redis I/O outside a request (redis-py asyncio)"
    if "anyio" in stack:
        return "thread hand-off (anyio)"
    if "h11" in stack or "uvicorn" in stack:
        return "HTTP protocol outside a request (uvicorn/h11)"
    return "other (event loop machinery)"


def _interesting(incl: Counter[str], whole: int, top: int) -> list[tuple[str, int]]:
    """Inclusive counts without the frames every sample has (the loop, the ASGI stack)."""
    return [(n, c) for n, c in incl.most_common() if c < 0.9 * whole][:top]


def markdown(summary: Summary, seconds: float, tasks: int) -> list[str]:
    busy_s = summary.loop_busy / RATE

    def pct(n: int, of: int) -> str:
        return f"{100 * n / of:.1f}%" if of else "-"

    run_thread = summary.thread_samples - sum(
        n for w, n in summary.waits if w != "event loop idle in epoll"
    )
    lines = [
        f"`py-spy record --rate {RATE}` (collapsed stacks) on the bridge process during one "
        f"extra throughput run ({tasks:,} tasks by 16 clients in {seconds:.1f} s, not counted "
        "in the table). Samples whose leaf frame is a wait are set apart (py-spy's idle "
        "detection did not drop them here).",
        "",
        f"- event loop thread: busy (not in epoll) {busy_s:.1f} s of {seconds:.1f} s = "
        f"**{100 * busy_s / max(seconds, 1e-9):.0f}% of one core**",
        f"- other threads (anyio worker threads: Celery's blocking calls, e.g. a publish to a "
        "broker other than the registry's Redis, revoke, ping): "
        f"{summary.thread_samples / RATE:.1f} thread-seconds, of which running "
        f"{max(run_thread, 0) / RATE:.1f} s",
        "- waits: " + "; ".join(f"{name} {n / RATE:.1f} s" for name, n in summary.waits),
        "- running samples by package (leaf frame): "
        + ", ".join(
            f"{name} {pct(n, summary.loop_busy + max(run_thread, 0))}"
            for name, n in summary.packages[:10]
        ),
        "",
        "Event loop busy samples by what they were doing: "
        + "; ".join(f"{name} {pct(n, summary.loop_busy)}" for name, n in summary.loop_parts),
        "",
        "Event loop, self time (share of its busy samples):",
        "",
    ]
    lines += [
        f"{i + 1}. {pct(n, summary.loop_busy)} `{name}`"
        for i, (name, n) in enumerate(summary.loop_self)
    ]
    lines += ["", "Event loop, inclusive time of the bridge's own functions:", ""]
    lines += [
        f"{i + 1}. {pct(n, summary.loop_busy)} `{name}`"
        for i, (name, n) in enumerate(summary.loop_incl)
    ]
    run = max(run_thread, 1)
    lines += ["", "Worker threads while running, self time:", ""]
    lines += [f"{i + 1}. {pct(n, run)} `{name}`" for i, (name, n) in enumerate(summary.thread_self)]
    lines += ["", "Worker threads while running, inclusive time:", ""]
    lines += [f"{i + 1}. {pct(n, run)} `{name}`" for i, (name, n) in enumerate(summary.thread_incl)]
    return lines
