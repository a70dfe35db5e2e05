"""The Starlette app factory: the routes, the middleware, and the lifespan that owns the
Redis client, the Celery client, the event listener and the lease reaper of this process.

The MCP endpoint is the request pipeline (``bridge.pipeline``) in front of the transport
(``bridge.transport``), which hands each message to its era's adapter (``bridge.eras``);
the adapters call the task service (``bridge.service``) and the tool catalogue
(``bridge.catalogue``), which the app owns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mcp_celery_bridge.bridge import eras
from mcp_celery_bridge.bridge.auth import Authenticator
from mcp_celery_bridge.bridge.catalogue import Catalogue
from mcp_celery_bridge.bridge.deadlines import BodyDeadline
from mcp_celery_bridge.bridge.events import EventHub
from mcp_celery_bridge.bridge.guard import HostOriginGuard
from mcp_celery_bridge.bridge.headers import TrimmedHeaders
from mcp_celery_bridge.bridge.health import Health
from mcp_celery_bridge.bridge.metrics import FleetSources, Metrics
from mcp_celery_bridge.bridge.pipeline import mcp_pipeline
from mcp_celery_bridge.bridge.publisher import Publisher, project_app
from mcp_celery_bridge.bridge.reaper import Reaper
from mcp_celery_bridge.bridge.request_state import RequestStates
from mcp_celery_bridge.bridge.service import TaskService
from mcp_celery_bridge.bridge.sessions import Sessions
from mcp_celery_bridge.bridge.shared.clients import async_client, prepared
from mcp_celery_bridge.bridge.shared.keys import Keys
from mcp_celery_bridge.bridge.shared.registry import Registry
from mcp_celery_bridge.bridge.shared.settings import Settings
from mcp_celery_bridge.bridge.transport import Transport

ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _count_store_fault(scope: Scope) -> None:
    metrics: Metrics | None = getattr(scope["app"].state, "metrics", None)
    if metrics is not None:
        metrics.redis_errors.inc()


def create_app(settings: Settings) -> Starlette:
    """The app for ``settings``, which the caller reads once per process."""
    # The project's app first: its tasks, named by the tool modules, then resolve in it.
    project = project_app(settings)
    catalogue = Catalogue.load(settings)
    authenticator = Authenticator(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = async_client(settings.redis_url, ca_file=settings.redis_ca_file)
        await prepared(client)
        publisher = Publisher(settings, project)
        hub = EventHub(settings, client)
        hub.start()
        registry = Registry(settings, client)
        reaper = Reaper(settings, registry)
        reaper.start()
        metrics = Metrics(hub, FleetSources(publisher.queue_depth, registry.running_by_worker))
        hub.on_event = metrics.observe
        reaper.on_error = metrics.reaper_errors.inc
        app.state.metrics = metrics
        parts = eras.Parts(
            settings=settings,
            tasks=TaskService(settings, registry, publisher, hub, metrics),
            catalogue=catalogue,
            hub=hub,
            sessions=Sessions(settings, client),
            states=RequestStates(settings, client),
        )
        app.state.transport = Transport(settings, eras.build(parts))
        app.state.health = Health(client, publisher, Keys.of(settings), reaper, hub)
        try:
            yield
        finally:
            await reaper.stop()
            await hub.stop()
            publisher.close()
            await client.aclose()

    async def transport(scope: Scope, receive: Receive, send: Send) -> None:
        served: Transport = scope["app"].state.transport
        await served(scope, receive, send)

    async def healthz(request: Request) -> Response:
        health: Health = request.app.state.health
        return await health.healthz(request)

    async def metrics_endpoint(request: Request) -> Response:
        metrics: Metrics = request.app.state.metrics
        return await metrics.endpoint(request)

    async def readyz(request: Request) -> Response:
        health: Health = request.app.state.health
        return await health.readyz(request)

    endpoint = mcp_pipeline(transport, authenticator, settings.max_body_bytes, _count_store_fault)
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
