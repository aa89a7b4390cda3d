"""The bodies of the background tasks, one function each, whatever carries the message
(Celery in production, the embedded runner otherwise). Each takes ids only and reads the
rest from the database; a message for work that is already done does nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ml.training import seeded
from service import logs, metrics, outbox
from service.callbacks import delivery as callback_delivery
from service.callbacks import service as callbacks
from service.jobs import dispatch as dispatching
from service.jobs.lease import LeaseLost, claim, release
from workers.heartbeat import Heartbeat
from workers.runners import RUNNERS

__all__ = ["run_job", "dispatch", "sweep", "deliver_callback", "COMMANDS"]

log = logging.getLogger(__name__)


def run_job(job_id: str) -> None:
    """Claim the job, run its kind's runner under a heartbeat, release it on failure."""
    token = logs.context.set({"job_id": job_id})
    try:
        _run_job(job_id)
    finally:
        logs.context.reset(token)


def _run_job(job_id: str) -> None:
    attempt = claim(job_id)
    if attempt is None:
        return
    unlearner = attempt.unlearner.name if attempt.unlearner else "-"
    outcome = "succeeded"
    log.info(
        "job started",
        extra={
            "kind": attempt.kind.value,
            "attempt": attempt.number,
            "model_id": attempt.model_id,
            "dataset_id": attempt.dataset_id,
            "deletion_request_ids": attempt.request_ids,
        },
    )
    with Heartbeat(attempt) as heartbeat:
        try:
            with seeded(attempt.seed):  # every random draw of the job from its recorded seed
                RUNNERS[attempt.kind](attempt, heartbeat)
        except LeaseLost:
            outcome = "lease_lost"
            log.warning("job %s attempt %s lost its lease; stopping", job_id, attempt.number)
        except Exception as error:
            outcome = "failed"
            log.exception("job %s attempt %s failed", job_id, attempt.number)
            metrics.JOB_FAILURES.labels(attempt.kind, type(error).__name__).inc()
            release(attempt, f"{type(error).__name__}: {error}")
    seconds = time.monotonic() - attempt.started
    metrics.JOB_DURATION.labels(attempt.kind, unlearner, outcome).observe(seconds)
    log.info("job ended", extra={"outcome": outcome, "seconds": round(seconds, 3)})


def dispatch(model_id: str | None = None) -> None:
    """Apply the batching policy to one model, or to every model with pending requests."""
    if model_id:
        dispatching.dispatch_model(model_id)
    else:
        dispatching.dispatch_all()


def sweep() -> None:
    """Requeue jobs whose lease expired, re-send lost job messages and due callbacks."""
    dispatching.sweep()
    callbacks.resend_due()


def deliver_callback(delivery_id: str) -> None:
    token = logs.context.set({"delivery_id": delivery_id})
    try:
        callback_delivery.deliver(delivery_id)
    finally:
        logs.context.reset(token)


COMMANDS: dict[str, Callable[..., Any]] = {
    outbox.RUN_JOB: run_job,
    outbox.DISPATCH: dispatch,
    outbox.SWEEP: sweep,
    outbox.DELIVER_CALLBACK: deliver_callback,
}
