"""The application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import (
    audits,
    datasets,
    deletion_requests,
    jobs,
    models,
    operations,
    problems,
)
from service.api.middleware import ObserveAndLimit
from service.settings import get_settings


def create_app(*, start_worker: bool | None = None) -> FastAPI:
    """The API; with the embedded default it also runs the in-process worker."""
    settings = get_settings()
    embedded = settings.embedded_worker if start_worker is None else start_worker

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if embedded:
            from workers.embedded import runner

            runner().start()
            yield
            runner().stop()
        else:
            yield

    app = FastAPI(
        title="unlearnd",
        version="0.1.0",
        summary="Right-to-be-forgotten for trained models: deletion requests, machine "
        "unlearning, audits and model lineage.",
        lifespan=lifespan,
    )
    problems.install(app)
    for router in (
        operations.router,
        datasets.router,
        models.router,
        deletion_requests.router,
        jobs.router,
        audits.router,
    ):
        app.include_router(router)
    if settings.metrics_enabled and settings.metrics_port is None:
        app.add_api_route(
            "/metrics", operations.metrics_endpoint, methods=["GET"], include_in_schema=False
        )

    app.add_middleware(ObserveAndLimit, max_body_bytes=settings.max_body_bytes)
    return app
