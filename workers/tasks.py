"""Celery tasks: each has an explicit name and time limits, takes ids only, and is one call
to its command."""

from __future__ import annotations

from service import outbox
from service.settings import get_settings
from workers import commands
from workers.celery_app import app

_limit = get_settings().job_soft_time_limit_seconds


@app.task(name=outbox.RUN_JOB, soft_time_limit=_limit, time_limit=_limit + 300)
def run_job(job_id: str) -> None:
    commands.run_job(job_id)


@app.task(name=outbox.DISPATCH, soft_time_limit=120, time_limit=180)
def dispatch(model_id: str | None = None) -> None:
    commands.dispatch(model_id)


@app.task(name=outbox.SWEEP, soft_time_limit=120, time_limit=180)
def sweep() -> None:
    commands.sweep()


@app.task(name=outbox.DELIVER_CALLBACK, soft_time_limit=120, time_limit=180)
def deliver_callback(delivery_id: str) -> None:
    commands.deliver_callback(delivery_id)
