"""Nudges to the workers. Messages carry only ids (DESIGN rule 1): Celery over the broker
in production, the in-process embedded runner otherwise, the same task bodies either way."""

from __future__ import annotations

import logging

from sqlalchemy import update

from service.enums import JobKind
from service.settings import get_settings

log = logging.getLogger(__name__)

RUN_JOB, DISPATCH, SWEEP = "unlearnd.run_job", "unlearnd.dispatch", "unlearnd.sweep"
JOB_QUEUE = {JobKind.AUDIT: "audit"}  # every other kind goes to the GPU queue


def queue_for(kind: str) -> str:
    return JOB_QUEUE.get(JobKind(kind), "gpu")


def _send(task: str, args: list[str], queue: str) -> str | None:
    if get_settings().embedded_worker:
        from workers.embedded import runner

        runner().submit(task, args)
        return None
    from workers.celery_app import celery_for

    app = celery_for(get_settings().broker_url)
    return str(app.send_task(task, args=args, queue=queue).id)


def enqueue_job(job_id: str, kind: str = JobKind.UNLEARN) -> None:
    """Send a job to its queue and note the task id on the row. Never raises: a job whose
    message is lost stays ``queued`` and the sweeper sends it again."""
    from service.db import session_scope
    from service.tables import Job, utcnow

    try:
        task_id = _send(RUN_JOB, [job_id], queue_for(kind))
        with session_scope() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(celery_task_id=task_id, enqueued_at=utcnow())
            )
    except Exception:
        log.exception("could not enqueue job %s; the sweeper will retry", job_id)


def enqueue_dispatch(model_id: str | None = None) -> None:
    try:
        _send(DISPATCH, [model_id] if model_id else [], "control")
    except Exception:
        log.exception("could not enqueue a dispatch; beat will dispatch on its next tick")
