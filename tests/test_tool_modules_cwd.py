"""The installed console script imports tool modules from the directory it is started in, as
``celery -A`` does (issue 12, item 5): the README's ``mytools.py`` beside the shell, listed in
``MCP_BRIDGE_TOOL_MODULES``, is served without ``PYTHONPATH=.``. A console script's
``sys.path`` starts with its own ``bin`` directory, not the current one, so only the
bridge's own insertion (``bridge.cli._prepare``) makes the module importable."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import httpx
import pytest

from tests import services
from tests.existing import sdk_session
from tests.services import ROOT, RedisServer, free_port, spawn, wait_for

pytestmark = pytest.mark.anyio

SCRIPT = ROOT / ".venv" / "bin" / "mcp-celery-bridge"


async def test_serve_from_the_console_script_imports_tool_modules_from_its_directory(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    here = tmp_path / "project"
    here.mkdir()
    (here / "mytools.py").write_text(
        textwrap.dedent('''\
            from workers import tool


            @tool
            def shout(text: str) -> str:
                """Say it louder."""
                return text.upper()
            ''')
    )
    # This checkout's bridge package (the venv's editable install may be another
    # checkout's), and nothing else: the project directory must not be on the path.
    pythonpath = str(ROOT)
    assert str(here) not in pythonpath.split(os.pathsep)
    env = {
        **services.test_env(own_redis.url),
        "MCP_BRIDGE_TOOL_MODULES": "mytools",
        "PYTHONPATH": pythonpath,
    }
    port = free_port()
    proc = spawn(
        "bridge-cwd",
        [str(SCRIPT), "serve", "--port", str(port)],
        env,
        tmp_path / "bridge.log",
        cwd=here,
    )
    url = f"http://127.0.0.1:{port}/mcp"

    def up() -> bool:
        if not proc.alive():
            raise AssertionError(proc.output()[-4000:])
        try:
            return httpx.get(url, timeout=1).status_code in (400, 405, 406)
        except httpx.TransportError:
            return False

    try:
        wait_for(up, 30, "the bridge started from the console script")
        async with sdk_session(url) as (session, _):
            tools = {t.name: t for t in (await session.list_tools()).tools}
    finally:
        proc.stop()
    assert set(tools) == {"shout"}, tools
    assert tools["shout"].description == "Say it louder."
    assert "Traceback" not in proc.output(), proc.output()[-4000:]
