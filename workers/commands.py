"""The bodies of the background tasks, one function each, whatever carries the message
(Celery in production, the embedded runner otherwise). Each takes ids only and reads the
rest from the database; a message for work that is already done does nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from service import logs, metrics, outbox
from service.callbacks import delivery as callback_delivery
from service.callbacks import service as callbacks
from service.jobs import dispatch as dispatching
from workers.lease import Heartbeat, LeaseLost, claim, release
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
    job_claim = claim(job_id)
    if job_claim is None:
        return
    unlearner = job_claim.unlearner.name if job_claim.unlearner else "-"
    outcome = "succeeded"
    log.info(
        "job started",
        extra={
            "kind": job_claim.kind.value,
            "attempt": job_claim.attempt,
            "model_id": job_claim.model_id,
            "deletion_request_ids": job_claim.request_ids,
        },
    )
    with Heartbeat(job_claim) as heartbeat:
        try:
            RUNNERS[job_claim.kind](job_claim, heartbeat)
        except LeaseLost:
            outcome = "lease_lost"
            log.warning("job %s attempt %s lost its lease; stopping", job_id, job_claim.attempt)
        except Exception as error:
            outcome = "failed"
            log.exception("job %s attempt %s failed", job_id, job_claim.attempt)
            metrics.JOB_FAILURES.labels(job_claim.kind, type(error).__name__).inc()
            release(job_claim, f"{type(error).__name__}: {error}")
    seconds = time.monotonic() - job_claim.started
    metrics.JOB_DURATION.labels(job_claim.kind, unlearner, outcome).observe(seconds)
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
