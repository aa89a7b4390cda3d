"""A worker's hold on a job: the claim, the lease a heartbeat renews, and the fence that
keeps a stale attempt from writing (docs/architecture.md, rules 1, 2 and 5).

:func:`claim` moves a queued job to its running status and counts the attempt; a message
for a job that is no longer queued claims nothing (messages are nudges). While the job
runs, the worker's heartbeat calls :func:`renew`, which pushes the lease forward and
records progress. Every later write of the job starts with :func:`lock_owned_job`, which
locks the row and raises :class:`LeaseLost` unless this attempt still owns it: once the
sweeper has requeued an expired job, the old attempt can no longer publish anything.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.datasets import erasure
from service.db import session_scope
from service.enums import JobKind, JobStatus
from service.jobs import lifecycle
from service.models.settings import UnlearnerSpec
from service.settings import get_settings
from service.states import move_job
from service.tables import Job, utcnow

__all__ = ["Attempt", "LeaseLost", "claim", "lock_owned_job", "fenced", "release", "renew"]

# Statuses in which a job is held by a worker (and its lease is renewed).
HELD = (JobStatus.RUNNING, JobStatus.AUDITING)


class LeaseLost(RuntimeError):
    """Another attempt owns the job now (the sweeper requeued it); stop without writing."""


@dataclass(frozen=True)
class Attempt:
    """One attempt at a job, as the worker that claimed it knows it; everything else it
    reads by id."""

    job_id: str
    number: int  # the job's attempt count when this one claimed it: the fence's token
    kind: JobKind
    model_id: str | None  # None: a ``register`` job, which has its dataset instead
    base_version: int | None  # the version the job reads: unlearning base, cache or audit
    unlearner: UnlearnerSpec | None  # the model's method when the job was created
    request_ids: list[str]
    params: dict[str, Any]
    seed: int  # the job's: every attempt draws the same random numbers
    dataset_id: str | None = None  # a ``register`` job's dataset
    started: float = field(default_factory=time.monotonic)

    @property
    def model(self) -> str:
        """The job's model: every kind but ``register`` has one."""
        if self.model_id is None:
            raise RuntimeError(f"job {self.job_id} ({self.kind}) belongs to no model")
        return self.model_id


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def claim(job_id: str) -> Attempt | None:
    """Take a queued job for this worker (None when it is not queued: a stale message)."""
    settings = get_settings()
    with session_scope() as session:
        job = session.scalar(select(Job).where(Job.id == job_id).with_for_update(skip_locked=True))
        if job is None or job.status != JobStatus.QUEUED:
            return None
        now = utcnow()
        job.attempts += 1
        job.worker = _worker_name()
        job.lease_expires_at = now + timedelta(seconds=settings.job_lease_seconds)
        job.started_at = job.started_at or now
        # The first attempt's: later ones can only see less. A register job reads no
        # model's samples (it writes its dataset's first ones).
        if job.forget_seq is None and job.model_id is not None:
            job.forget_seq = erasure.forget_seq(session, job.model_id)
        job.timings = {**job.timings, "queued": (now - job.created_at).total_seconds()}
        kind = JobKind(job.kind)
        status = JobStatus.AUDITING if kind == JobKind.AUDIT else JobStatus.RUNNING
        move_job(session, job, status, detail=f"attempt {job.attempts} on {job.worker}")
        lifecycle.start(session, job)
        return Attempt(
            job_id=job.id,
            number=job.attempts,
            kind=kind,
            model_id=job.model_id,
            base_version=job.base_version,
            unlearner=UnlearnerSpec.model_validate(job.unlearner) if job.unlearner else None,
            request_ids=list(job.request_ids),
            params=dict(job.params or {}),
            seed=job.seed if job.seed is not None else _seed_of(job.id),
            dataset_id=job.dataset_id,
        )


def _seed_of(job_id: str) -> int:
    """A seed for a job created before jobs recorded theirs: fixed by its id."""
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:4], "big") >> 1


def lock_owned_job(session: Session, attempt: Attempt) -> Job:
    """The job row, locked, if this attempt still owns it (the fence); else LeaseLost."""
    job = session.scalar(select(Job).where(Job.id == attempt.job_id).with_for_update())
    if job is None or job.attempts != attempt.number or job.status not in HELD:
        raise LeaseLost(attempt.job_id)
    return job


@contextmanager
def fenced(attempt: Attempt) -> Iterator[tuple[Session, Job]]:
    """A transaction whose first act is :func:`lock_owned_job`: what it writes commits only
    if this attempt still owns the job."""
    with session_scope() as session:
        yield session, lock_owned_job(session, attempt)


def release(attempt: Attempt, reason: str) -> None:
    """After a failed attempt: requeue the job, or fail it once its attempts are spent."""
    try:
        with fenced(attempt) as (session, job):
            lifecycle.requeue_or_fail(session, job, reason)
    except LeaseLost:
        pass


def renew(attempt: Attempt, lease_seconds: float, progress: dict[str, Any] | None) -> bool:
    """Push the lease ``lease_seconds`` forward (and record ``progress``); False once
    another attempt owns the job."""
    values: dict[str, Any] = {"lease_expires_at": utcnow() + timedelta(seconds=lease_seconds)}
    if progress is not None:
        values["progress"] = progress
    with session_scope() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == attempt.job_id, Job.attempts == attempt.number, Job.status.in_(HELD))
            .values(**values)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]
