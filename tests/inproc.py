"""The bridge's app in the test process (the fast tier): the real Starlette app with its
lifespan, on an event loop of its own in a thread, reached by httpx through a streaming ASGI
transport. No socket and no process, yet SSE streams stream: httpx's own ASGITransport
buffers a whole response, so a GET stream or a ``subscriptions/listen`` would never return.

A test that needs what only a process has (uvicorn's parser, a signal, a restart) keeps the
``bridge`` fixture of ``tests.services``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import queue
import threading
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.types import Message

from mcp_celery_bridge.bridge.app import create_app
from mcp_celery_bridge.bridge.shared import logs
from mcp_celery_bridge.bridge.shared.settings import Settings

# settings_of: the suite's one way from a test env to Settings, imported from here too.
from tests.services import free_port, tls
from tests.services import settings_of as settings_of

#: How long a response the client closed may take to notice the disconnect (an SSE stream
#: does at once) before its app call is cancelled.
CLOSE_GRACE_S = 5.0
#: A response that has not started within this many seconds is a hung app, not a slow one.
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class _Start:
    status: int
    headers: list[tuple[bytes, bytes]]


_END = object()

#: The loggers an in-process app raises to INFO: the named channels (``bridge.requests``,
#: ``bridge.transitions``, ``bridge.audit``) and the modules' own (``__name__``).
_OURS = ("bridge", "mcp_celery_bridge")

Emit = Callable[[object], None]


#: The app whose loop (or worker thread, which anyio gives a copy of the context) runs.
_serving: contextvars.ContextVar[AppServer | None] = contextvars.ContextVar(
    "inproc_serving", default=None
)


class AppServer:
    """The app of ``settings`` served on a loop thread, at ``url`` (``async_transport`` and
    ``sync_transport`` reach it). Its log goes to ``log`` as a bridge process writes it
    (``--log-level info``, the bridge's format): the records the app's own code emits, and
    what escapes the app, as uvicorn would log it."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.log = log
        self.url = f"http://127.0.0.1:{free_port()}/mcp"
        self.netloc = httpx.URL(self.url).netloc.decode()
        self.loop: asyncio.AbstractEventLoop | None = None
        #: The loop's context, which each request's task starts from.
        self.context = contextvars.Context()
        self._stop: asyncio.Event | None = None
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, name=f"app-{self.netloc}", daemon=True)
        self._handler = logging.FileHandler(log, encoding="utf-8")
        self._handler.setFormatter(logs.formatter(settings.log_format, self._handler.stream))
        self._handler.addFilter(logs.no_results)
        self._handler.addFilter(lambda record: _serving.get() is self)
        self._levels = {name: logging.getLogger(name).level for name in _OURS}

    def start(self) -> None:
        logging.getLogger().addHandler(self._handler)
        for name in _OURS:
            logging.getLogger(name).setLevel(logging.INFO)
        self._thread.start()
        self._ready.result(timeout=30)
        _servers[self.netloc] = self

    def stop(self) -> None:
        _servers.pop(self.netloc, None)
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        logging.getLogger().removeHandler(self._handler)
        self._handler.close()

    def log_error(self, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(exc))
        self._handler.emit(
            logging.LogRecord("uvicorn.error", logging.ERROR, "", 0, "%s", (text,), None)
        )

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        _serving.set(self)
        self.context = contextvars.copy_context()
        try:
            async with self.app.router.lifespan_context(self.app):
                self._ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if self._ready.done():
                raise
            self._ready.set_exception(exc)


_servers: dict[str, AppServer] = {}


@contextlib.contextmanager
def app_server(settings: Settings, log: Path) -> Iterator[AppServer]:
    """Serve the app, and at the end check its log holds no traceback (as
    ``tests.services.bridge_server`` checks a bridge process's)."""
    server = AppServer(settings, log)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, text[-4000:]


def async_transport(url: str) -> httpx.AsyncBaseTransport | None:
    """The in-process transport when ``url`` is an app served here, else None (httpx's own,
    for a real address)."""
    return AsyncTransport() if httpx.URL(url).netloc.decode() in _servers else None


def sync_transport(url: str) -> httpx.BaseTransport | None:
    return SyncTransport() if httpx.URL(url).netloc.decode() in _servers else None


def _server(request: httpx.Request) -> AppServer:
    server = _servers.get(request.url.netloc.decode())
    if server is None:
        raise httpx.ConnectError(f"no app served in-process at {request.url}", request=request)
    return server


class _Exchange:
    """One request: the app call runs as a task on the app's loop and hands what it sends to
    ``emit`` (a response start, body chunks, ``_END``, or the exception that escaped it)."""

    def __init__(self, server: AppServer, request: httpx.Request, body: list[bytes], emit: Emit):
        assert server.loop is not None
        self.server = server
        self.loop = server.loop
        self.scope = _scope(server, request)
        self.body = body
        self.emit = emit
        self.disconnected = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        #: Done once the app call is over, however it ended.
        self.ended: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        # From the app's context, not the calling thread's (``call_soon_threadsafe`` copies
        # that one).
        self.task = self.loop.create_task(self._run(), context=self.server.context.copy())
        self.task.add_done_callback(lambda _: self.ended.set_result(None))

    async def _run(self) -> None:
        pending = list(self.body)
        started = complete = False

        async def receive() -> Message:
            if pending:
                chunk = pending.pop(0)
                return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
            await self.disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal started, complete
            if self.disconnected.is_set():
                return  # as uvicorn: what is sent after the client left goes nowhere
            if message["type"] == "http.response.start":
                started = True
                self.emit(_Start(message["status"], list(message.get("headers", []))))
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    self.emit(bytes(message["body"]))
                if not message.get("more_body", False):
                    complete = True
                    self.emit(_END)

        try:
            await self.server.app(self.scope, receive, send)
            if not started:
                raise RuntimeError("ASGI callable returned without starting response.")
        except asyncio.CancelledError:
            pass
        except BaseException as exc:
            self.server.log_error(exc)
            self.emit(exc)
        finally:
            if not complete:
                self.emit(_END)

    def disconnect(self) -> None:
        self.loop.call_soon_threadsafe(self.disconnected.set)

    def cancel(self) -> None:
        # Queued after ``_start``, so the task exists by then.
        self.loop.call_soon_threadsafe(lambda: self.task and self.task.cancel())


def _scope(server: AppServer, request: httpx.Request) -> dict[str, Any]:
    url = request.url
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": url.scheme,
        "path": url.path,
        "raw_path": url.raw_path.split(b"?", 1)[0],
        "query_string": url.query,
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.headers.raw],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", url.port or 80),
        "state": {},
    }


def _read_timeout(request: httpx.Request) -> float | None:
    timeout: dict[str, float | None] = request.extensions.get("timeout", {})
    return timeout.get("read")


def _response(request: httpx.Request, first: object, stream: Any) -> httpx.Response:
    if isinstance(first, BaseException):
        raise first
    if not isinstance(first, _Start):
        raise httpx.RemoteProtocolError("the app ended without a response", request=request)
    return httpx.Response(first.status, headers=first.headers, stream=stream, request=request)


class AsyncTransport(httpx.AsyncBaseTransport):
    """To whichever in-process app serves the request's host and port; any other address
    over the network (so one client reaches in-process apps and bridge processes alike)."""

    def __init__(self) -> None:
        # The suite's one SSL context: one of its own loaded the CA bundle, a seventh of the
        # fast tier's time when every client made one.
        self._network = httpx.AsyncHTTPTransport(verify=tls())

    async def aclose(self) -> None:
        await self._network.aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.netloc.decode() not in _servers:
            return await self._network.handle_async_request(request)
        assert isinstance(request.stream, httpx.AsyncByteStream)
        body = [chunk async for chunk in request.stream]
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[object] = asyncio.Queue()

        def emit(item: object) -> None:
            # The test's loop may be gone by the time an abandoned stream sends again.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(items.put_nowait, item)

        exchange = _Exchange(_server(request), request, body, emit)
        try:
            first = await asyncio.wait_for(items.get(), START_TIMEOUT_S)
            response = _response(request, first, _AsyncBody(exchange, items, request))
        except BaseException:
            await _AsyncBody(exchange, items, request).aclose()
            raise
        return response


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(
        self, exchange: _Exchange, items: asyncio.Queue[object], request: httpx.Request
    ) -> None:
        self.exchange, self.items, self.request = exchange, items, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                item = await asyncio.wait_for(self.items.get(), _read_timeout(self.request))
            except TimeoutError:
                raise httpx.ReadTimeout("no data from the app", request=self.request) from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item

    async def aclose(self) -> None:
        ended = self.exchange.ended
        if ended.done():
            return
        self.exchange.disconnect()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(ended)), CLOSE_GRACE_S)
            return
        self.exchange.cancel()
        await asyncio.wait_for(asyncio.wrap_future(ended), CLOSE_GRACE_S)


class SyncTransport(httpx.BaseTransport):
    """To whichever in-process app serves the request's host and port."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        body = list(request.stream)
        items: queue.SimpleQueue[object] = queue.SimpleQueue()
        exchange = _Exchange(_server(request), request, body, items.put)
        try:
            first = items.get(timeout=START_TIMEOUT_S)
            response = _response(request, first, _SyncBody(exchange, items, request))
        except BaseException:
            _SyncBody(exchange, items, request).close()
            raise
        return response


class _SyncBody(httpx.SyncByteStream):
    def __init__(
        self, exchange: _Exchange, items: queue.SimpleQueue[object], request: httpx.Request
    ) -> None:
        self.exchange, self.items, self.request = exchange, items, request

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                item = self.items.get(timeout=_read_timeout(self.request))
            except queue.Empty:
                raise httpx.ReadTimeout("no data from the app", request=self.request) from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item

    def close(self) -> None:
        ended = self.exchange.ended
        if ended.done():
            return
        self.exchange.disconnect()
        with contextlib.suppress(concurrent.futures.TimeoutError):
            ended.result(timeout=CLOSE_GRACE_S)
            return
        self.exchange.cancel()
        ended.result(timeout=CLOSE_GRACE_S)


def sdk_http() -> httpx.AsyncClient:
    """An httpx client for the MCP SDK's ``streamable_http_client`` (``http_client=``) that
    reaches the in-process apps, with the long read timeout the SDK's own client has."""
    return httpx.AsyncClient(
        transport=AsyncTransport(), follow_redirects=True, timeout=httpx.Timeout(30, read=300)
    )
