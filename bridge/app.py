"""The Starlette app factory; its lifespan owns the Redis client, the Celery client, the
event listener and the lease reaper of this process."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.deadlines import BodyDeadline
from bridge.events import EventHub
from bridge.guard import HostOriginGuard
from bridge.headers import TrimmedHeaders
from bridge.health import Health
from bridge.legacy import LegacyProtocol
from bridge.metrics import Metrics
from bridge.modern import ModernProtocol
from bridge.publisher import Publisher
from bridge.reaper import Reaper
from bridge.sessions import Sessions
from bridge.shared.clients import async_client
from bridge.shared.registry import Registry
from bridge.shared.settings import Settings
from bridge.tasks import Tasks
from bridge.transport import Transport
from workers.tools import Tool, catalogue

ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def load_tools(modules: list[str]) -> dict[str, Tool]:
    for name in modules:
        importlib.import_module(name)
    return catalogue()


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    tools = load_tools(settings.tool_modules)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = async_client(settings.redis_url)
        publisher = Publisher(settings)
        hub = EventHub(settings, client)
        hub.start()
        registry = Registry(settings, client)
        reaper = Reaper(settings, registry)
        reaper.start()
        metrics = Metrics(hub)
        hub.on_event = metrics.observe
        app.state.metrics = metrics
        tasks = Tasks(settings, registry, publisher, hub, tools, metrics)
        legacy = LegacyProtocol(Sessions(settings, client), tasks)
        app.state.transport = Transport(settings, legacy, ModernProtocol(tasks, hub), hub, metrics)
        app.state.health = Health(client, publisher)
        try:
            yield
        finally:
            await reaper.stop()
            await hub.stop()
            publisher.close()
            await client.aclose()

    async def endpoint(request: Request) -> Response:
        transport: Transport = request.app.state.transport
        return await transport(request)

    async def healthz(request: Request) -> Response:
        health: Health = request.app.state.health
        return await health.healthz(request)

    async def metrics_endpoint(request: Request) -> Response:
        metrics: Metrics = request.app.state.metrics
        return await metrics.endpoint(request)

    async def readyz(request: Request) -> Response:
        health: Health = request.app.state.health
        return await health.readyz(request)

    return Starlette(
        # Every method reaches the transport, which answers the ones it does not serve with
        # a JSON-RPC 405 rather than the router's plain-text one.
        routes=[
            Route("/mcp", endpoint, methods=[*ALL_METHODS]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
        ],
        middleware=[
            Middleware(BodyDeadline, timeout_s=settings.body_timeout_s),
            Middleware(TrimmedHeaders),
            Middleware(
                HostOriginGuard,
                allowed_hosts=settings.allowed_hosts,
                allowed_origins=settings.allowed_origins,
            ),
        ],
        lifespan=lifespan,
    )
