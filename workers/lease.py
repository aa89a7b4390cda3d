"""A worker's hold on a job: the claim, the lease a heartbeat renews, and the fence that
keeps a stale attempt from writing (docs/architecture.md, rules 1, 2 and 5).

:func:`claim` moves a queued job to its running status and counts the attempt; a message
for a job that is no longer queued claims nothing (messages are nudges). While the job
runs, :class:`Heartbeat` pushes its lease forward and records progress. Every later write
of the job starts with :func:`lock_owned_job`, which locks the row and raises
:class:`LeaseLost` unless this attempt still owns it: once the sweeper has requeued an
expired job, the old attempt can no longer publish anything.
"""

from __future__ import annotations

import logging
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

from service.db import session_scope
from service.enums import JobKind, JobStatus, RequestStatus
from service.lineage import requests_of, requeue_or_fail
from service.models.schemas import UnlearnerSpec
from service.settings import get_settings
from service.states import move_job, move_request
from service.tables import Job, utcnow

__all__ = ["JobClaim", "LeaseLost", "claim", "lock_owned_job", "fenced", "release", "Heartbeat"]

log = logging.getLogger(__name__)

# Statuses in which a job is held by a worker (and its lease is renewed).
HELD = (JobStatus.RUNNING, JobStatus.AUDITING)


class LeaseLost(RuntimeError):
    """Another attempt owns the job now (the sweeper requeued it); stop without writing."""


@dataclass(frozen=True)
class JobClaim:
    """What a worker knows of the job it claimed; everything else it reads by id."""

    job_id: str
    attempt: int
    kind: JobKind
    model_id: str
    version: int | None  # the version the job reads: unlearning base, cache or audit target
    unlearner: UnlearnerSpec | None  # the model's method when the job was created
    request_ids: list[str]
    params: dict[str, Any]
    started: float = field(default_factory=time.monotonic)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def claim(job_id: str) -> JobClaim | None:
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
        job.timings = {**job.timings, "queued": (now - job.created_at).total_seconds()}
        kind = JobKind(job.kind)
        status = JobStatus.AUDITING if kind == JobKind.AUDIT else JobStatus.RUNNING
        move_job(session, job, status, detail=f"attempt {job.attempts} on {job.worker}")
        for request in requests_of(session, job.request_ids):
            if request.status == RequestStatus.BATCHED:
                move_request(session, request, RequestStatus.UNLEARNING)
        return JobClaim(
            job_id=job.id,
            attempt=job.attempts,
            kind=kind,
            model_id=job.model_id,
            version=job.base_version,
            unlearner=UnlearnerSpec.model_validate(job.unlearner) if job.unlearner else None,
            request_ids=list(job.request_ids),
            params=dict(job.params or {}),
        )


def lock_owned_job(session: Session, job_claim: JobClaim) -> Job:
    """The job row, locked, if this attempt still owns it (the fence); else LeaseLost."""
    job = session.scalar(select(Job).where(Job.id == job_claim.job_id).with_for_update())
    if job is None or job.attempts != job_claim.attempt or job.status not in HELD:
        raise LeaseLost(job_claim.job_id)
    return job


@contextmanager
def fenced(job_claim: JobClaim) -> Iterator[tuple[Session, Job]]:
    """A transaction whose first act is :func:`lock_owned_job`: what it writes commits only
    if this attempt still owns the job."""
    with session_scope() as session:
        yield session, lock_owned_job(session, job_claim)


def release(job_claim: JobClaim, reason: str) -> None:
    """After a failed attempt: requeue the job, or fail it once its attempts are spent."""
    try:
        with fenced(job_claim) as (session, job):
            requeue_or_fail(session, job, reason)
    except LeaseLost:
        pass


class Heartbeat:
    """Renews the job's lease while it runs; ``lost`` once another attempt owns it."""

    def __init__(self, job_claim: JobClaim) -> None:
        self.claim = job_claim
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="job-heartbeat")
        self._progress: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def report(self, stage: str, step: int, total: int) -> None:
        """The unlearners' progress callback: recorded on the next beat, cheap to call."""
        if self.lost.is_set():
            raise LeaseLost(self.claim.job_id)
        with self._lock:
            self._progress = {"stage": stage, "step": step, "total": total}

    def _beat(self) -> None:
        lease = get_settings().job_lease_seconds
        interval = max(0.2, min(lease / 4, 10.0))
        while not self._stop.wait(interval):
            self.renew(lease)

    def renew(self, lease: float) -> None:
        with self._lock:
            progress, self._progress = self._progress, None
        values: dict[str, Any] = {"lease_expires_at": utcnow() + timedelta(seconds=lease)}
        if progress is not None:
            values["progress"] = progress
        try:
            with session_scope() as session:
                result = session.execute(
                    update(Job)
                    .where(
                        Job.id == self.claim.job_id,
                        Job.attempts == self.claim.attempt,
                        Job.status.in_(HELD),
                    )
                    .values(**values)
                )
                if result.rowcount == 0:  # type: ignore[attr-defined]
                    self.lost.set()
        except Exception:
            log.exception("heartbeat for job %s failed; retrying", self.claim.job_id)
