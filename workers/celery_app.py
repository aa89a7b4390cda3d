"""The Celery app (production). Settings follow DESIGN rule 5: late acks, requeue on
worker loss, one message prefetched, a visibility timeout longer than the longest job."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from service.settings import get_settings
from workers.queue import DISPATCH, RUN_JOB, SWEEP


def create_celery(broker_url: str) -> Celery:
    settings = get_settings()
    app = Celery("unlearnd", broker=broker_url or "memory://", include=["workers.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue="control",
        task_routes={
            RUN_JOB: {"queue": "gpu"},
            DISPATCH: {"queue": "control"},
            SWEEP: {"queue": "control"},
        },
        broker_transport_options={
            "visibility_timeout": settings.job_soft_time_limit_seconds + 3600,
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "dispatch": {"task": DISPATCH, "schedule": settings.dispatch_interval_seconds},
            "sweep": {"task": SWEEP, "schedule": settings.sweep_interval_seconds},
        },
    )
    return app


app = create_celery(get_settings().broker_url)


@lru_cache(maxsize=4)
def celery_for(broker_url: str) -> Celery:
    """The app for a broker (settings can change under tests; production has one)."""
    return app if broker_url == app.conf.broker_url else create_celery(broker_url)
