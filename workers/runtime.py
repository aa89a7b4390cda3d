"""How a process of this service is put together: which transport carries the service's
messages (``service.outbox``), and the API as ``unlearnd serve`` runs it, with the embedded
worker inside it on the embedded default."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import outbox
from service.app import create_app as create_api
from service.settings import get_settings
from workers import celery_app
from workers.embedded import runner

__all__ = ["install_sender", "create_app"]


def install_sender() -> None:
    """Celery over the broker when one is configured; the in-process runner otherwise."""
    if get_settings().embedded_worker:
        outbox.install_sender(runner().send)
    else:
        outbox.install_sender(celery_app.send, probe=celery_app.ping)


@asynccontextmanager
async def _embedded_worker(_: FastAPI) -> AsyncIterator[None]:
    runner().start()
    try:
        yield
    finally:
        runner().stop()


def create_app() -> FastAPI:
    """The API with its sender installed; on the embedded default the in-process worker
    starts and stops with it."""
    install_sender()
    return create_api(lifespan=_embedded_worker if get_settings().embedded_worker else None)
