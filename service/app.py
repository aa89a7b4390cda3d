"""The application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

from fastapi import FastAPI

from service import admin, api_docs
from service.api import (
    audits,
    callbacks,
    caller,
    catalog,
    conditional,
    datasets,
    deletion_requests,
    events,
    jobs,
    keys,
    models,
    openapi,
    operations,
    overview,
    problems,
    webhooks,
)
from service.api.gate import Gate
from service.api.middleware import Observe
from service.deletion_requests import ingest
from service.settings import get_settings

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(*, lifespan: Lifespan | None = None) -> FastAPI:
    """The HTTP API. ``lifespan`` is the runtime's hook around serving (``workers.runtime``
    starts the embedded worker with it); the API itself starts nothing."""
    settings = get_settings()

    @asynccontextmanager
    async def serving(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app) if lifespan is not None else nullcontext():
            yield
        await ingest.close()  # the ingest batcher and its async engine, on this loop

    app = FastAPI(
        title="unlearnd",
        version="0.1.0",
        summary="Right-to-be-forgotten for trained models: deletion requests, machine "
        "unlearning, audits and model lineage.",
        lifespan=serving,
        # FastAPI's own OpenTelemetry hooks: unused here (metrics are Prometheus', logs our
        # own), and asking for a tracer provider on every request cost 4% of the ingest
        # path's CPU (py-spy, docs/benchmarks.md).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # Swagger UI is served by the service itself (service.api_docs), ReDoc not at all:
        # FastAPI's pages load both from a CDN.
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=openapi.operation_id,
    )
    app.webhooks.include_router(events.webhooks)
    problems.install(app)
    conditional.install(app)
    openapi.install(app)
    # The ingest routes first: every request walks the routes in order until one matches,
    # and these carry the bursts (no path of another router overlaps theirs).
    for router in (
        deletion_requests.router,
        operations.router,
        caller.router,
        datasets.router,
        models.router,
        jobs.router,
        audits.router,
        overview.router,
        keys.router,
        callbacks.router,
        webhooks.router,
        catalog.router,
    ):
        app.include_router(router)
    admin.mount(app)
    api_docs.mount(app)
    if settings.metrics_enabled and settings.metrics_port is None:
        app.add_api_route(
            "/metrics", operations.metrics_endpoint, methods=["GET"], include_in_schema=False
        )

    # Added last = outermost: every request is observed, then gated, then routed.
    app.add_middleware(Gate, settings=settings)
    app.add_middleware(Observe)
    return app
