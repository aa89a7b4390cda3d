"""Celery tasks: each takes ids only and is one call into the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.settings import get_settings
from workers import pipeline
from workers.celery_app import app
from workers.queue import DISPATCH, RUN_JOB, SWEEP

_limit = get_settings().job_soft_time_limit_seconds


@app.task(name=RUN_JOB, soft_time_limit=_limit, time_limit=_limit + 300)
def run_job(job_id: str) -> None:
    pipeline.run_job(job_id)


@app.task(name=DISPATCH, soft_time_limit=120, time_limit=180)
def dispatch(model_id: str | None = None) -> None:
    if model_id:
        pipeline.dispatch_model(model_id)
    else:
        pipeline.dispatch_all()


@app.task(name=SWEEP, soft_time_limit=120, time_limit=180)
def sweep() -> None:
    pipeline.sweep()


TASK_BODIES: dict[str, Callable[..., Any]] = {
    RUN_JOB: pipeline.run_job,
    DISPATCH: lambda model_id=None: (
        pipeline.dispatch_model(model_id) if model_id else pipeline.dispatch_all()
    ),
    SWEEP: pipeline.sweep,
}
