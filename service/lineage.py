"""Writes to a model's lineage: new jobs, new versions, the atomic publish, tombstones, and
what happens to a job's requests when an attempt fails.

Every function works in the caller's transaction and commits nothing itself; the rules it
keeps are numbered in docs/architecture.md:
- rule 3, a chain: ``new_job`` flushes at once, so the partial unique index
  ``uq_jobs_one_live_lineage_job_per_model`` refuses a second live lineage job right there;
- rule 4, atomic publish: the caller has written the artifacts (content-addressed) before
  :func:`publish`, which then creates the version, moves the head, tombstones the samples,
  moves the requests and appends to the audit log in one transaction;
- rule 7, forgotten means forgotten: :func:`publish` tombstones every forgotten sample;
- rule 8: every status change goes through ``service.states``.

A request of an unlearning batch is ``auditing`` from the publish of its version until the
version's audit job has stored its report (:func:`complete_audited_requests`); only then is
it ``completed``, so a completed request always has the audit that its certificate cites.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from ml.unlearners import Need
from service import audit_log, metrics, outbox
from service.artifacts import store
from service.db import on_commit
from service.deletion_requests.service import log_request
from service.enums import (
    LINEAGE_JOB_KINDS,
    LIVE_JOB_STATUSES,
    JobKind,
    JobStatus,
    ModelStatus,
    RequestStatus,
    SampleState,
    VersionKind,
)
from service.models.schemas import ModelSettings
from service.settings import get_settings
from service.states import move_job, move_request
from service.tables import (
    DeletionRequest,
    Job,
    Model,
    ModelVersion,
    Sample,
    Tombstone,
    VersionArtifact,
    utcnow,
)

__all__ = [
    "StoredArtifact",
    "NewVersion",
    "live_lineage_job",
    "lock_model",
    "has_artifacts",
    "attach_artifacts",
    "record_metrics",
    "collect_artifacts",
    "new_job",
    "requests_of",
    "new_version",
    "publish",
    "publish_uploaded",
    "requeue_or_fail",
    "complete_audited_requests",
]

_TOMBSTONE_CHUNK = 5000


@dataclass(frozen=True)
class StoredArtifact:
    """An artifact already written to the store: its content address and metadata."""

    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewVersion:
    """What a job produced, ready to publish; its files are already in the store."""

    kind: VersionKind
    weights_sha256: str | None  # None: nothing was left to forget, no version
    metrics: dict[str, Any]
    seconds: float  # training or unlearning time
    forgotten: Mapping[int, str] = field(default_factory=dict)  # sample id -> its request
    artifacts: Mapping[str, StoredArtifact] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)  # extra stages for the job row


def live_lineage_job(session: Session, model_id: str) -> Job | None:
    """The model's queued or running job that writes its lineage, if any."""
    return session.scalar(
        select(Job).where(
            Job.model_id == model_id,
            Job.status.in_(list(LIVE_JOB_STATUSES)),
            Job.kind.in_(list(LINEAGE_JOB_KINDS)),
        )
    )


def _version_id(session: Session, model_id: str, number: int | None) -> str | None:
    return session.scalar(
        select(ModelVersion.id).where(
            ModelVersion.model_id == model_id, ModelVersion.number == number
        )
    )


def lock_model(session: Session, model_id: str) -> Model:
    """The model row, locked: the head moves under this lock only."""
    model = session.scalar(select(Model).where(Model.id == model_id).with_for_update())
    if model is None:
        raise LookupError(f"model {model_id} is gone")
    return model


def has_artifacts(session: Session, model_id: str, number: int) -> bool:
    """Whether version ``number`` has the per-version artifacts of an unlearner (a cache)."""
    version_id = _version_id(session, model_id, number)
    return (
        session.scalar(select(VersionArtifact.id).where(VersionArtifact.version_id == version_id))
        is not None
    )


def new_job(
    session: Session,
    model: Model,
    kind: JobKind,
    *,
    requests: Sequence[DeletionRequest] = (),
    request_ids: Sequence[str] | None = None,
    version: int | None = None,
    params: dict[str, Any] | None = None,
) -> Job:
    """A queued job, sent to its queue once the caller commits.

    ``version`` is the version the job reads (default: the head): the base of an
    unlearning, the version a cache or an audit is for. ``requests`` are the batch of an
    unlearning job; ``request_ids`` the requests an audit job completes.
    """
    job = Job(
        tenant_id=model.tenant_id,
        model_id=model.id,
        kind=kind,
        status=JobStatus.QUEUED,
        base_version=model.head_version if version is None else version,
        unlearner=model.unlearner if kind != JobKind.TRAIN else None,
        params=params or {},
        request_ids=list(request_ids) if request_ids is not None else [r.id for r in requests],
        sample_count=sum(r.sample_count for r in requests),
    )
    session.add(job)
    session.flush()  # the partial unique index speaks here
    job_id, job_kind = job.id, kind
    on_commit(session, lambda: outbox.enqueue_job(job_id, job_kind))
    return job


def requests_of(session: Session, request_ids: Sequence[str]) -> list[DeletionRequest]:
    """The requests, locked, in id order (the same order everywhere: no deadlocks)."""
    if not request_ids:
        return []
    return list(
        session.scalars(
            select(DeletionRequest)
            .where(DeletionRequest.id.in_(list(request_ids)))
            .order_by(DeletionRequest.id)
            .with_for_update()
        )
    )


def new_version(
    session: Session,
    *,
    model: Model,
    kind: VersionKind,
    sha256: str,
    metrics: dict[str, Any],
    job: Job | None,
    forgotten: int,
    seconds: float | None,
    reference_of: int | None = None,
) -> ModelVersion:
    """A new version, in the caller's transaction with the model row locked. It becomes the
    head, unless it is a retrained audit reference of version ``reference_of`` (kept outside
    the lineage, its parent the audited version)."""
    parent = model.head_version if reference_of is None else reference_of
    previous = session.scalar(
        select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.number == parent)
    )
    number = (
        session.scalar(
            select(func.max(ModelVersion.number)).where(ModelVersion.model_id == model.id)
        )
        or 0
    ) + 1
    unlearned = kind == VersionKind.UNLEARNED
    version = ModelVersion(
        model_id=model.id,
        number=number,
        parent=parent,
        kind=kind,
        in_lineage=reference_of is None,
        unlearner=(job.unlearner if job and job.unlearner else model.unlearner)
        if unlearned
        else None,
        job_id=job.id if job and reference_of is None else None,
        deletion_request_ids=list(job.request_ids) if job and unlearned else [],
        forgotten_samples=forgotten,
        forgotten_total=(previous.forgotten_total if previous else 0) + forgotten,
        artifact_sha256=sha256,
        metrics=metrics,
        seconds=seconds,
    )
    session.add(version)
    session.flush()
    if reference_of is None:
        model.head_version = number
    audit_log.append(
        session,
        tenant_id=model.tenant_id,
        action="model_version.published",
        subject_type="model",
        subject_id=model.id,
        payload={
            "version": number,
            "parent": version.parent,
            "kind": kind.value,
            "in_lineage": version.in_lineage,
            "artifact_sha256": sha256,
            "job_id": job.id if job else None,
            "deletion_request_ids": version.deletion_request_ids,
        },
    )
    return version


def _add_artifacts(
    session: Session, version_id: str, artifacts: Mapping[str, StoredArtifact]
) -> None:
    for name, artifact in artifacts.items():
        session.add(
            VersionArtifact(
                version_id=version_id, name=name, sha256=artifact.sha256, meta=artifact.meta
            )
        )


def attach_artifacts(
    session: Session, *, job: Job, artifacts: Mapping[str, StoredArtifact], seconds: float
) -> None:
    """A cache job's end: its artifacts join the version it read, the job succeeds, and the
    model's pending requests are looked at again (they may have waited for this cache)."""
    version_id = _version_id(session, job.model_id, job.base_version)
    if version_id is None:
        raise LookupError(f"model {job.model_id} has no version {job.base_version}")
    _add_artifacts(session, version_id, artifacts)
    job.result_version = job.base_version
    job.timings = {**job.timings, "cache": seconds}
    move_job(session, job, JobStatus.SUCCEEDED)
    session.flush()
    collect_artifacts(session, job.model_id)
    model_id = job.model_id
    on_commit(session, lambda: outbox.enqueue_dispatch(model_id))


def publish(session: Session, *, job: Job, model: Model, result: NewVersion) -> int | None:
    """Publish what ``job`` produced (rule 4): the version and its artifacts, the new head,
    the tombstones, the job's success and its requests' next status, in the caller's
    transaction. ``job`` and ``model`` are locked by the caller; returns the version number
    the requests now point at."""
    if model.head_version != job.base_version:
        raise RuntimeError(
            f"head moved from {job.base_version} to {model.head_version} during the job"
        )
    number = model.head_version
    version = None
    if result.weights_sha256 is not None:
        version = new_version(
            session,
            model=model,
            kind=result.kind,
            sha256=result.weights_sha256,
            metrics=result.metrics,
            job=job,
            forgotten=len(result.forgotten),
            seconds=result.seconds,
        )
        _add_artifacts(session, version.id, result.artifacts)
        number = version.number
        _tombstone(session, model.id, result.forgotten, number)
    audited = version is not None and version.forgotten_samples > 0
    for request in requests_of(session, job.request_ids):
        request.result_version = number
        if audited:
            move_request(session, request, RequestStatus.AUDITING, detail=f"version {number}")
        else:  # nothing was left to forget: there is no version to audit
            _complete(session, request, detail=f"version {number}: nothing left to forget")
    job.result_version = number
    stage = "training" if result.kind == VersionKind.TRAINED else "unlearning"
    job.timings = {**job.timings, **result.timings, stage: result.seconds}
    if result.kind == VersionKind.TRAINED:
        model.status = ModelStatus.READY
    move_job(session, job, JobStatus.SUCCEEDED)
    session.flush()  # the job leaves the live set before a follow-up job may enter it
    if version is not None:
        _after_new_version(session, model, version)
    return number


def _complete(session: Session, request: DeletionRequest, *, detail: str) -> None:
    move_request(session, request, RequestStatus.COMPLETED, detail=detail)
    log_request(
        session,
        request,
        "completed",
        model_id=request.model_id,
        version=request.result_version,
        job_id=request.job_id,
    )
    created = request.created_at
    on_commit(
        session,
        lambda: metrics.REQUEST_END_TO_END.observe((utcnow() - created).total_seconds()),
    )


def complete_audited_requests(session: Session, job: Job, *, detail: str) -> None:
    """Complete the requests that waited for this audit job's version to be audited."""
    for request in requests_of(session, job.request_ids):
        if request.status == RequestStatus.AUDITING:
            _complete(session, request, detail=detail)


def _tombstone(session: Session, model_id: str, forgotten: Mapping[int, str], number: int) -> None:
    if not forgotten:
        return
    now = utcnow()
    session.execute(
        insert(Tombstone),
        [
            {
                "model_id": model_id,
                "sample_id": sample_id,
                "request_id": request_id,
                "version_number": number,
                "created_at": now,
            }
            for sample_id, request_id in forgotten.items()
        ],
    )
    ids = sorted(forgotten)
    for start in range(0, len(ids), _TOMBSTONE_CHUNK):
        session.execute(
            update(Sample)
            .where(Sample.id.in_(ids[start : start + _TOMBSTONE_CHUNK]))
            .values(state=SampleState.FORGOTTEN)
        )


def record_metrics(session: Session, *, job: Job, metrics: dict[str, Any]) -> None:
    """An evaluate job's end: the version it read gets its UA / RA / TA."""
    version = session.scalar(
        select(ModelVersion)
        .where(ModelVersion.model_id == job.model_id, ModelVersion.number == job.base_version)
        .with_for_update()
    )
    if version is None:
        raise LookupError(f"model {job.model_id} has no version {job.base_version}")
    version.metrics = {**version.metrics, **metrics}
    job.result_version = job.base_version
    move_job(session, job, JobStatus.SUCCEEDED)


def collect_artifacts(session: Session, model_id: str) -> None:
    """Drop the per-version artifacts (PGU's caches, ~80 MB each) that nothing needs any
    more: every one but the head's and those of versions a live job reads. Their files go
    once this transaction commits, unless another row still refers to the same content."""
    head = session.scalar(select(Model.head_version).where(Model.id == model_id))
    needed = {head} | set(
        session.scalars(
            select(Job.base_version).where(
                Job.model_id == model_id, Job.status.in_(list(LIVE_JOB_STATUSES))
            )
        )
    )
    stale = session.scalars(
        select(VersionArtifact)
        .join(ModelVersion, VersionArtifact.version_id == ModelVersion.id)
        .where(ModelVersion.model_id == model_id, ModelVersion.number.not_in(needed - {None}))
    ).all()
    if not stale:
        return
    for row in stale:  # through the session, so the versions' change stamps move
        session.delete(row)
    session.flush()
    shas = {row.sha256 for row in stale}
    kept = set(
        session.scalars(select(VersionArtifact.sha256).where(VersionArtifact.sha256.in_(shas)))
    ) | set(
        session.scalars(
            select(ModelVersion.artifact_sha256).where(ModelVersion.artifact_sha256.in_(shas))
        )
    )
    gone = sorted(shas - kept)

    def delete_files() -> None:
        for sha in gone:
            store().delete(sha)

    on_commit(session, delete_files)


def _after_new_version(session: Session, model: Model, version: ModelVersion) -> None:
    """Follow-ups of a new head: build the unlearner's artifacts if it needs them, measure
    an uploaded version, audit a version that forgot something (its audit completes the
    version's requests), collect the artifacts nothing needs now, and look at what became
    pending meanwhile."""
    settings = ModelSettings.of(model)
    if version.kind == VersionKind.UPLOADED:
        new_job(session, model, JobKind.EVALUATE, version=version.number)
    if Need.CACHE in settings.unlearner.method.needs and not has_artifacts(
        session, model.id, version.number
    ):
        new_job(session, model, JobKind.CACHE)
    if version.forgotten_samples:
        every = settings.audit.reference_every
        reference = "retrain" if every and version.number % every == 0 else "none"
        new_job(
            session,
            model,
            JobKind.AUDIT,
            version=version.number,
            request_ids=version.deletion_request_ids,
            params={"reference": reference},
        )
    session.flush()  # the new jobs count as live for the collection
    collect_artifacts(session, model.id)
    model_id = model.id
    on_commit(session, lambda: outbox.enqueue_dispatch(model_id))


def publish_uploaded(session: Session, *, model: Model, weights_sha256: str) -> ModelVersion:
    """An uploaded version (weights already in the store), published in the caller's
    transaction with the model row locked."""
    version = new_version(
        session,
        model=model,
        kind=VersionKind.UPLOADED,
        sha256=weights_sha256,
        metrics={},
        job=None,
        forgotten=0,
        seconds=None,
    )
    model.status = ModelStatus.READY
    _after_new_version(session, model, version)
    return version


def requeue_or_fail(session: Session, job: Job, reason: str) -> None:
    """After a failed attempt: back to the queue, or ``failed`` once attempts are spent.

    An unlearning batch's requests follow their job (back to ``batched``, or ``failed``
    with the reason). An audit job's requests stay ``auditing`` while it is retried; if it
    fails for good they complete anyway, since their version is published and the data is
    out of the model, with the failed audit named in their history.
    """
    job.lease_expires_at = None
    spent = job.attempts >= get_settings().job_max_attempts
    if spent:
        job.error = reason
        move_job(session, job, JobStatus.FAILED, detail=reason)
        if job.kind == JobKind.TRAIN:
            model = session.get(Model, job.model_id)
            if model is not None:
                model.status = ModelStatus.FAILED
    else:
        move_job(session, job, JobStatus.QUEUED, detail=f"requeued: {reason}")
        job_id, kind = job.id, job.kind
        on_commit(session, lambda: outbox.enqueue_job(job_id, kind))
    if job.kind == JobKind.AUDIT:
        if spent:
            complete_audited_requests(
                session, job, detail=f"audit job {job.id} failed: {reason}; version published"
            )
        return
    for request in requests_of(session, job.request_ids):
        if spent and request.status in (RequestStatus.BATCHED, RequestStatus.UNLEARNING):
            request.error = f"job {job.id} failed after {job.attempts} attempts: {reason}"
            move_request(session, request, RequestStatus.FAILED, detail=reason)
        elif not spent and request.status == RequestStatus.UNLEARNING:
            move_request(session, request, RequestStatus.BATCHED, detail="requeued")
