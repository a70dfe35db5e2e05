"""The peers: servers a user would pick instead of the bridge, each serving the same
``echo`` task tool, each in a virtual environment of its own under ``.venv-peers/`` (FastMCP
4 needs mcp 2.x, the project's venv pins mcp 1.x). The venvs are made from the pinned
requirements in ``bench/peers/`` the first time a run needs them (and again when a
requirements file changes): ``python -m bench peers-setup`` does only that."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.services import Process, spawn, wait_for

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = ROOT / "bench" / "peers"
VENVS = ROOT / ".venv-peers"


@dataclass(frozen=True)
class Peer:
    key: str
    title: str
    #: "legacy" (2025-11-25: sessions, GET stream, tasks/result) or "modern" (2026-07-28).
    era: str
    #: Whether the peer keeps its tasks in Redis (Docket) rather than in memory.
    redis: bool
    #: Distributions whose versions the report names.
    packages: tuple[str, ...]

    @property
    def requirements(self) -> Path:
        return PEERS_DIR / f"{self.key}.txt"

    @property
    def server(self) -> Path:
        return PEERS_DIR / f"{self.key}_server.py"

    @property
    def venv(self) -> Path:
        return VENVS / self.key

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


PEERS = (
    Peer("fastmcp3", "FastMCP 3 + Docket", "legacy", True, ("fastmcp", "pydocket", "mcp")),
    Peer(
        "fastmcp4",
        "FastMCP 4 + fastmcp-tasks",
        "modern",
        True,
        ("fastmcp", "fastmcp-tasks", "pydocket", "mcp"),
    ),
    Peer("sdk", "Python SDK tasks (in memory)", "legacy", False, ("mcp",)),
)


def ensure_venv(peer: Peer) -> None:
    """Make the peer's venv from its requirements unless it already matches them (a copy
    of the requirements file it was made from is kept inside it)."""
    stamp = peer.venv / "bench-requirements.txt"
    wanted = peer.requirements.read_text()
    if peer.python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return
    print(f"installing {peer.title} into {peer.venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(peer.venv)], check=True)
    pip = [str(peer.python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "-r", str(peer.requirements)],
        check=True,
        timeout=1800,
    )
    stamp.write_text(wanted)


def installed(peer: Peer) -> dict[str, str]:
    """Versions of the peer's packages, as its venv has them."""
    code = (
        "import json, sys\nfrom importlib import metadata\n"
        "print(json.dumps({p: metadata.version(p) for p in sys.argv[1:]}))"
    )
    done = subprocess.run(
        [str(peer.python), "-c", code, *peer.packages],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    versions: dict[str, str] = json.loads(done.stdout)
    return versions


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_server(peer: Peer, port: int, log_dir: Path, redis_url: str, docket_name: str) -> Process:
    """The peer's server on ``port``, listening; Docket's state (FastMCP) in ``redis_url``
    under ``docket_name``."""
    env = {"FASTMCP_DOCKET_URL": redis_url, "FASTMCP_DOCKET_NAME": docket_name}
    proc = spawn(
        f"peer-{peer.key}",
        [str(peer.python), "-W", "ignore::DeprecationWarning", str(peer.server), str(port)],
        env,
        log_dir / f"peer-{peer.key}-{port}.log",
    )

    def up() -> bool:
        if not proc.alive():
            raise AssertionError(f"{peer.title} exited: {proc.output()[-2000:]}")
        return _answers(port)

    wait_for(up, 60, f"{peer.title} on port {port}")
    return proc
