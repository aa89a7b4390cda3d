"""The batching policy and the sweeper: what beat runs every few seconds.

Dispatch turns a model's pending requests into one ``unlearn`` job when its policy says so
(``max_requests`` pending, the oldest waited ``max_wait_seconds``, or a flush). A model's
dispatchers take turns on its row (``FOR NO KEY UPDATE``), so one of them claims every
pending request and the next finds them batched: two racers can neither share a request,
nor split a batch, nor clear a flush whose requests the other then lets go
(docs/architecture.md, rule 2). The rows are claimed ``FOR UPDATE SKIP LOCKED``, past a
request that an API call holds; the partial unique index keeps one live lineage job per
model (rule 3). The sweeper requeues jobs whose lease expired and re-sends queued jobs
whose message was lost (rule 5).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ml.unlearners import Need
from service import metrics, outbox
from service.db import new_session, session_scope
from service.enums import JobKind, JobStatus, ModelStatus, RequestStatus
from service.jobs import lifecycle
from service.models import versions
from service.models.settings import ModelSettings
from service.settings import get_settings
from service.tables import DeletionRequest, Job, Model, utcnow

__all__ = ["MAX_BATCH_REQUESTS", "dispatch_all", "dispatch_model", "sweep"]

MAX_BATCH_REQUESTS = 10_000


def dispatch_all() -> list[str]:
    """Dispatch every model with pending requests or a flush; returns created job ids."""
    with session_scope() as session:
        model_ids = set(
            session.scalars(
                select(DeletionRequest.model_id)
                .where(DeletionRequest.status == RequestStatus.PENDING)
                .distinct()
            )
        )
        model_ids |= set(
            session.scalars(select(Model.id).where(Model.flush_requested_at.is_not(None)))
        )
    return [job_id for model_id in sorted(model_ids) if (job_id := dispatch_model(model_id))]


def dispatch_model(model_id: str) -> str | None:
    """Apply the model's batching policy; create at most one job. Safe to race."""
    session = new_session()
    try:
        return _dispatch(session, model_id)
    except IntegrityError:  # another dispatcher created this model's live job first
        session.rollback()
        return None
    finally:
        session.close()


def _dispatch(session: Session, model_id: str) -> str | None:
    # NO KEY UPDATE: a model's dispatchers wait for each other; deletion requests inserted
    # meanwhile (a KEY SHARE on this row, for their foreign key) do not wait for them.
    model = session.scalar(
        select(Model).where(Model.id == model_id).with_for_update(key_share=True)
    )
    if model is None or model.status != ModelStatus.READY or model.head_version is None:
        return None
    if lifecycle.live_lineage_job(session, model_id) is not None:
        return None  # the unique index is the guarantee; this only avoids the noise
    settings = ModelSettings.of(model)
    if Need.CACHE in settings.unlearner.method.needs and not versions.has_artifacts(
        session, model_id, model.head_version
    ):
        cache = lifecycle.new_job(session, model, JobKind.CACHE)
        session.commit()
        return cache.id
    requests = list(
        session.scalars(
            select(DeletionRequest)
            .where(
                DeletionRequest.model_id == model_id,
                DeletionRequest.status == RequestStatus.PENDING,
            )
            .order_by(DeletionRequest.created_at, DeletionRequest.id)
            .limit(MAX_BATCH_REQUESTS)
            .with_for_update(skip_locked=True)
        )
    )
    flush = model.flush_requested_at is not None
    if not requests:
        if flush:
            model.flush_requested_at = None
            session.commit()
        return None
    age = (utcnow() - requests[0].created_at).total_seconds()
    due = (
        flush
        or len(requests) >= settings.batching.max_requests
        or age >= settings.batching.max_wait_seconds
    )
    if not due:
        session.rollback()
        return None
    job = lifecycle.batch(session, model, requests)
    model.flush_requested_at = None
    session.commit()
    if job is None:  # every request failed alone (lifecycle.batch says why)
        return None
    metrics.BATCH_SIZE.observe(len(job.request_ids))
    metrics.BATCH_SAMPLES.observe(job.sample_count)
    return job.id


def sweep() -> dict[str, int]:
    """Requeue (or fail, past the attempt cap) jobs whose lease expired; re-send queued jobs
    whose message was lost."""
    settings = get_settings()
    now = utcnow()
    requeued = failed = 0
    with session_scope() as session:
        expired = session.scalars(
            select(Job)
            .where(
                Job.status.in_([JobStatus.RUNNING, JobStatus.AUDITING]),
                Job.lease_expires_at < now,
            )
            .with_for_update(skip_locked=True)
        ).all()
        for job in expired:
            lifecycle.requeue_or_fail(
                session, job, "lease expired: the worker stopped heartbeating"
            )
            metrics.JOB_FAILURES.labels(job.kind, "lease_expired").inc()
            failed += job.status == JobStatus.FAILED
            requeued += job.status == JobStatus.QUEUED
        stale = now - timedelta(seconds=settings.job_lease_seconds)
        lost = session.execute(
            select(Job.id, Job.kind).where(
                Job.status == JobStatus.QUEUED,
                or_(Job.enqueued_at.is_(None), Job.enqueued_at < stale),
                Job.created_at < stale,
            )
        ).all()
    for job_id, kind in lost:
        outbox.enqueue_job(job_id, kind)
    return {"requeued": requeued, "failed": failed, "resent": len(lost)}
