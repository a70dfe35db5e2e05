"""What ``dev`` does when asked to stop, or when its worker dies.

- The first Ctrl-C (or SIGTERM, or SIGHUP from a closed terminal) is Celery's warm shutdown:
  SIGTERM to the worker's main process only, so the tasks it runs finish; the bridge keeps
  serving meanwhile, so their callers get their results. When the worker is gone the
  bridge stops, then Flower.
- The second is Celery's cold shutdown (SIGQUIT to the worker's main process) and the
  bridge stops without waiting for its connections.
- A worker that exits unasked stops everything, as foreman and honcho do: the bridge
  would otherwise accept calls that no process will ever run. ``dev`` then exits 1.

Signal handlers only queue the event (``SimpleQueue.put`` is safe there); one thread acts
on the events, so no output is written from inside a handler, where a write to a stream
the main thread was writing would fail ("reentrant call").
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn

from mcp_celery_bridge.bridge.dev import Child

INTERRUPT = "interrupt"


def describe(status: int) -> str:
    if status < 0:
        return f"killed by {signal.Signals(-status).name}"
    return f"exit status {status}"


class Supervisor:
    def __init__(self, worker: Child, say: Callable[[str], None]) -> None:
        self.worker = worker
        self.say = say
        self.interrupts = 0
        #: The worker's exit status when it exited unasked.
        self.worker_died: int | None = None
        self._server: uvicorn.Server | None = None
        self._done = False
        self._events: queue.SimpleQueue[str | int] = queue.SimpleQueue()
        threading.Thread(target=self._watch, name="dev-watch-worker", daemon=True).start()
        threading.Thread(target=self._act, name="dev-supervisor", daemon=True).start()

    def server(self, config: uvicorn.Config) -> uvicorn.Server:
        """The bridge's uvicorn server, its signals routed here."""
        supervisor = self

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                supervisor.interrupt(sig, frame)

        self._server = Server(config)
        if self._done:
            self._server.should_exit = True
        return self._server

    def interrupt(self, signum: int, frame: FrameType | None) -> None:
        self._events.put(INTERRUPT)

    def _watch(self) -> None:
        # Waiting also reaps the worker: no zombie is left behind.
        self._events.put(self.worker.popen.wait())

    def _act(self) -> None:
        while True:
            event = self._events.get()
            if event == INTERRUPT:
                self._interrupted()
            elif isinstance(event, int):
                if self.interrupts == 0:
                    self.worker_died = event
                    self.say(
                        f"dev: the worker exited ({describe(event)}), so dev stops too: "
                        "a bridge without a worker would queue calls nobody runs"
                    )
                self._stop_bridge()

    def _interrupted(self) -> None:
        self.interrupts += 1
        alive = self.worker.popen.poll() is None
        if self.interrupts == 1:
            if alive:
                self.say(
                    "dev: stopping: the worker finishes the tasks it is running first "
                    "(Ctrl-C again to stop them now)"
                )
                # The main process alone: the whole group would stop the running tasks.
                self._signal_worker(signal.SIGTERM)
            else:
                self._stop_bridge()
            return
        if self.interrupts == 2:
            self.say("dev: stopping now, running tasks included")
            if alive:
                self._signal_worker(signal.SIGQUIT)
            self._stop_bridge(force=True)

    def _signal_worker(self, number: int) -> None:
        try:
            os.kill(self.worker.popen.pid, number)
        except ProcessLookupError:
            pass  # exited meanwhile: its event is on the way

    def _stop_bridge(self, force: bool = False) -> None:
        self._done = True
        if self._server is not None:
            self._server.should_exit = True
            if force:
                # As uvicorn's own second Ctrl-C: no waiting for open connections.
                self._server.force_exit = True
