"""The application factory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from service import metrics
from service.api import (
    audits,
    datasets,
    deletion_requests,
    jobs,
    models,
    operations,
    problems,
)
from service.settings import get_settings


def _route_template(request: Request) -> str:
    """The matched route's template, set by the router; never the raw path (no per-request
    label values)."""
    route = request.scope.get("route")
    return getattr(route, "path", "unmatched")


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

    max_body = settings.max_body_bytes

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        length = request.headers.get("content-length")
        is_upload = request.url.path.endswith("/versions") and request.method == "POST"
        if length and length.isdigit() and int(length) > max_body and not is_upload:
            response: Response = problems.problem(
                413, "Payload too large", f"the body is over {max_body} bytes", "too-large"
            )
        else:
            response = await call_next(request)
        handler = _route_template(request)
        if handler != "/metrics":
            metrics.HTTP_REQUESTS.labels(request.method, handler, str(response.status_code)).inc()
            metrics.HTTP_DURATION.labels(request.method, handler).observe(
                time.perf_counter() - started
            )
        return response

    return app
