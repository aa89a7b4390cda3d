"""The Celery app (production). Settings follow docs/architecture.md, rule 5: late acks,
requeue on worker loss, one message prefetched, a visibility timeout longer than the
longest job. Task names and queues come from ``service.outbox``."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from service import outbox
from service.settings import get_settings


def create_celery(broker_url: str) -> Celery:
    settings = get_settings()
    app = Celery("unlearnd", broker=broker_url or "memory://", include=["workers.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=outbox.CONTROL,
        task_routes={
            outbox.RUN_JOB: {"queue": outbox.GPU},
            outbox.DISPATCH: {"queue": outbox.CONTROL},
            outbox.SWEEP: {"queue": outbox.CONTROL},
            outbox.DELIVER_CALLBACK: {"queue": outbox.CALLBACKS},
        },
        broker_transport_options={
            "visibility_timeout": settings.job_soft_time_limit_seconds + 3600,
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # Task events (received, started, succeeded, failed, ...) for `celery events`,
        # Flower or an exporter; "sent" too, so a task waiting in a queue is visible.
        worker_send_task_events=True,
        task_send_sent_event=True,
        beat_schedule={
            "dispatch": {"task": outbox.DISPATCH, "schedule": settings.dispatch_interval_seconds},
            "sweep": {"task": outbox.SWEEP, "schedule": settings.sweep_interval_seconds},
        },
    )
    return app


app = create_celery(get_settings().broker_url)


@lru_cache(maxsize=4)
def celery_for(broker_url: str) -> Celery:
    """The app for a broker (settings can change under tests; production has one)."""
    return app if broker_url == app.conf.broker_url else create_celery(broker_url)


def send(task: str, args: list[str], queue: str) -> str | None:
    """``service.outbox``'s sender over the configured broker; returns the message id."""
    message = celery_for(get_settings().broker_url).send_task(task, args=args, queue=queue)
    return str(message.id)


def ping() -> None:
    """Raises unless the configured broker accepts a connection (``/readyz``)."""
    app_for_broker = celery_for(get_settings().broker_url)
    with app_for_broker.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)
