"""The bodies of the background tasks, one function each, whatever carries the message
(Celery in production, the embedded runner otherwise). Each takes ids only and reads the
rest from the database; a message for work that is already done does nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from service import metrics, outbox
from service.jobs import dispatch as dispatching
from workers.lease import Heartbeat, LeaseLost, claim, release
from workers.runners import RUNNERS

__all__ = ["run_job", "dispatch", "sweep", "COMMANDS"]

log = logging.getLogger(__name__)


def run_job(job_id: str) -> None:
    """Claim the job, run its kind's runner under a heartbeat, release it on failure."""
    job_claim = claim(job_id)
    if job_claim is None:
        return
    unlearner = job_claim.unlearner.name if job_claim.unlearner else "-"
    outcome = "succeeded"
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
    metrics.JOB_DURATION.labels(job_claim.kind, unlearner, outcome).observe(
        time.monotonic() - job_claim.started
    )


def dispatch(model_id: str | None = None) -> None:
    """Apply the batching policy to one model, or to every model with pending requests."""
    if model_id:
        dispatching.dispatch_model(model_id)
    else:
        dispatching.dispatch_all()


def sweep() -> None:
    dispatching.sweep()


COMMANDS: dict[str, Callable[..., Any]] = {
    outbox.RUN_JOB: run_job,
    outbox.DISPATCH: dispatch,
    outbox.SWEEP: sweep,
}
