"""A job's life, and its requests' with it: a new job, its batch, its start, its outcome
(publish, a cache's or an evaluation's or an audit's end), the follow-up jobs of a new
version, and what a failed attempt does.

Every job-driven move of a deletion request is made here (a client's own moves, cancel and
retry, are ``service.deletion_requests.service``'s), and every move goes through
``service.states`` (docs/architecture.md, rule 8). Functions work in the caller's
transaction and commit nothing; the rules they keep:
- rule 3, a chain: :func:`new_job` flushes at once, so the partial unique index
  ``uq_jobs_one_live_lineage_job_per_model`` refuses a second live lineage job right there
  (``audit`` and ``evaluate`` jobs read a published version and stay outside it);
- rule 4, atomic publish: the caller has written the artifacts (content-addressed) before
  :func:`publish`, which then creates the version, moves the head, tombstones the samples,
  moves the requests and appends to the audit log in one transaction;
- rule 7, forgotten means forgotten: :func:`publish` tombstones every forgotten sample.

A request of an unlearning batch is ``auditing`` from the publish of its version until the
version's audit job has stored its report (:func:`finish_audit`); only then is it
``completed``, so a completed request always has the audit its certificate cites.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ml.unlearners import Need
from service import metrics, outbox
from service.artifacts import StoredArtifact
from service.callbacks import service as callbacks
from service.db import on_commit
from service.deletion_requests.service import log_received, log_request
from service.enums import (
    LINEAGE_JOB_KINDS,
    LIVE_JOB_STATUSES,
    DatasetStatus,
    JobKind,
    JobStatus,
    ModelStatus,
    RequestStatus,
    VersionKind,
    WebhookEvent,
)
from service.models import versions
from service.models.settings import ModelSettings
from service.settings import get_settings
from service.states import move_job, move_request
from service.tables import Dataset, DeletionRequest, Job, Model, ModelVersion, utcnow

__all__ = [
    "NewVersion",
    "live_lineage_job",
    "new_job",
    "new_register_job",
    "finish_registration",
    "model_of",
    "fail_registration",
    "batch",
    "start",
    "publish",
    "publish_uploaded",
    "finish_cache",
    "finish_evaluation",
    "finish_audit",
    "requeue_or_fail",
]


@dataclass(frozen=True)
class NewVersion:
    """What a job produced, ready to publish; its files are already in the store."""

    kind: VersionKind
    weights_sha256: str | None  # None: nothing was left to forget, no version
    accuracies: dict[str, Any]  # UA / RA / TA (``ml.evaluation``)
    seconds: float  # training or unlearning time
    forgotten: Mapping[int, str] = field(default_factory=dict)  # sample id -> its request
    artifacts: Mapping[str, StoredArtifact] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)  # extra stages for the job row
    report: Mapping[str, Any] = field(default_factory=dict)  # the method's, JSON-safe
    training: Mapping[str, Any] | None = None  # the recipe it was trained with, as run
    generation: int | None = None  # the dataset generation it was trained on (None: its base's)


def live_lineage_job(session: Session, model_id: str) -> Job | None:
    """The model's queued or running job that writes its lineage, if any."""
    return session.scalar(
        select(Job).where(
            Job.model_id == model_id,
            Job.status.in_(list(LIVE_JOB_STATUSES)),
            Job.kind.in_(list(LINEAGE_JOB_KINDS)),
        )
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
    unlearning job; ``request_ids`` the requests an audit job completes. The job's seed is
    recorded here: a retried attempt draws the same random numbers, and replaying a model's
    history draws them again (:func:`job_seed`).
    """
    base_version = model.head_version if version is None else version
    job = Job(
        seed=job_seed(model, kind, base_version),
        tenant_id=model.tenant_id,
        model_id=model.id,
        kind=kind,
        status=JobStatus.QUEUED,
        base_version=base_version,
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


def new_register_job(session: Session, dataset: Dataset) -> Job:
    """A queued ``register`` job for a dataset whose source is indexed in the background,
    sent to its queue once the caller commits. It has no model: its tenant and seed are
    the dataset's (the seed of its holdout split)."""
    job = Job(
        seed=dataset.seed,
        tenant_id=dataset.tenant_id,
        model_id=None,
        dataset_id=dataset.id,
        kind=JobKind.REGISTER,
        status=JobStatus.QUEUED,
        params={},
        request_ids=[],
    )
    session.add(job)
    session.flush()
    job_id = job.id
    on_commit(session, lambda: outbox.enqueue_job(job_id, JobKind.REGISTER))
    return job


def finish_registration(session: Session, *, job: Job, seconds: float) -> None:
    """A register job's end, its dataset stored (``ready``) by the caller."""
    _succeed(session, job, result_version=None, timings={"registering": seconds})


def fail_registration(session: Session, *, job: Job, reason: str) -> None:
    """A register job whose source was refused: the job and its dataset fail at once (the
    same files would be refused again), and the dataset's name is free for a new try."""
    job.lease_expires_at = None
    job.error = reason
    move_job(session, job, JobStatus.FAILED, detail=reason)
    _fail_dataset(session, job, reason)


def _fail_dataset(session: Session, job: Job, reason: str) -> None:
    """A failed register job's dataset fails with it (unless it is already settled)."""
    if job.dataset_id is None:
        return
    dataset = session.get(Dataset, job.dataset_id, with_for_update=True)
    if dataset is not None and dataset.status == DatasetStatus.REGISTERING:
        dataset.status, dataset.error = DatasetStatus.FAILED, reason


def model_of(job: Job) -> str:
    """The model of a model's job (every kind but ``register``)."""
    if job.model_id is None:
        raise RuntimeError(f"job {job.id} ({job.kind}) belongs to no model")
    return job.model_id


def job_seed(model: Model, kind: JobKind, base_version: int | None) -> int:
    """The seed of every random draw of a job: a train job's is its recipe's, so version 1
    is the recipe's to reproduce; any other's follows from the recipe's seed, the job's kind
    and the version it reads, so the same history gives the same versions."""
    recipe_seed = int((model.training or {}).get("seed", 0))
    if kind == JobKind.TRAIN:
        return recipe_seed
    text = f"{recipe_seed}:{kind}:{base_version}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") >> 1


def _requests_of(session: Session, job: Job) -> list[DeletionRequest]:
    """The job's requests, locked, in id order (the same order everywhere: no deadlocks)."""
    if not job.request_ids:
        return []
    return list(
        session.scalars(
            select(DeletionRequest)
            .where(DeletionRequest.id.in_(list(job.request_ids)))
            .order_by(DeletionRequest.id)
            .with_for_update()
        )
    )


def batch(session: Session, model: Model, requests: Sequence[DeletionRequest]) -> Job | None:
    """Pending requests (locked by the caller) become one ``unlearn`` job's batch. A request
    that cannot be honoured fails alone, with its reason, and its batch-mates go on; None
    when none is left."""
    honoured = _honourable(session, model, requests)
    if not honoured:
        return None
    job = new_job(session, model, JobKind.UNLEARN, requests=honoured)
    for request in honoured:
        request.job_id = job.id
        move_request(session, request, RequestStatus.BATCHED, detail=f"job {job.id}")
        log_received(session, request)
    return job


def _honourable(
    session: Session, model: Model, requests: Sequence[DeletionRequest]
) -> list[DeletionRequest]:
    """The requests that can be honoured together, in order; the others fail here. A class
    deletion that, with the classes the model already forgot and those of its batch-mates
    before it, would leave the model no class cannot be (each request alone was checked
    against the class count when it was accepted)."""
    num_classes = session.scalar(select(Dataset.num_classes).where(Dataset.id == model.dataset_id))
    deleted = versions.forgotten_classes(session, model.id)
    honoured = []
    for request in requests:
        if request.class_labels and num_classes is not None:
            together = deleted | set(request.class_labels)
            if len(together) >= num_classes:
                reason = (
                    f"deleting classes {sorted(request.class_labels)} would leave the model no "
                    f"class: it has forgotten or is forgetting {sorted(deleted)} of "
                    f"{num_classes}"
                )
                request.error = reason
                move_request(session, request, RequestStatus.FAILED, detail=reason)
                log_received(session, request)
                log_request(session, request, "failed", reason=reason)
                continue
            deleted = together
        honoured.append(request)
    return honoured


def start(session: Session, job: Job) -> None:
    """A worker claimed ``job``: its batched requests are being unlearned now."""
    for request in _requests_of(session, job):
        if request.status == RequestStatus.BATCHED:
            move_request(session, request, RequestStatus.UNLEARNING)


def _succeed(
    session: Session, job: Job, *, result_version: int | None, timings: Mapping[str, float]
) -> None:
    job.result_version = result_version
    job.timings = {**job.timings, **timings}
    move_job(session, job, JobStatus.SUCCEEDED)


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
    job.report = dict(result.report)
    if result.weights_sha256 is not None:
        parent = versions.get(session, model.id, job.base_version)
        unchanged = parent is not None and parent.artifact_sha256 == result.weights_sha256
        version = versions.new_version(
            session,
            model=model,
            kind=result.kind,
            sha256=result.weights_sha256,
            accuracies=result.accuracies,
            job=job,
            forgotten=len(result.forgotten),
            seconds=result.seconds,
            training=result.training,
            unchanged_reason=_unchanged_reason(result.report) if unchanged else None,
            generation=result.generation,
        )
        versions.add_artifacts(session, version, result.artifacts)
        number = version.number
        versions.tombstone(session, model.id, result.forgotten, number)
    audited = version is not None and version.forgotten_samples > 0
    for request in _requests_of(session, job):
        request.result_version = number
        if audited:
            move_request(session, request, RequestStatus.AUDITING, detail=f"version {number}")
        else:  # nothing was left to forget: there is no version to audit
            _complete(session, request, detail=f"version {number}: nothing left to forget")
    stage = "training" if result.kind == VersionKind.TRAINED else "unlearning"
    timings = {**result.timings, stage: result.seconds}
    _succeed(session, job, result_version=number, timings=timings)
    if result.kind == VersionKind.TRAINED:
        model.status = ModelStatus.READY
    session.flush()  # the job leaves the live set before a follow-up job may enter it
    if version is not None:
        _after_new_version(session, model, version)
    return number


def _unchanged_reason(report: Mapping[str, Any]) -> str:
    stopped_by = report.get("stopped_by")
    return f"the method took no step: {stopped_by}" if stopped_by else "the method changed nothing"


def publish_uploaded(
    session: Session, *, model: Model, weights_sha256: str, generation: int
) -> ModelVersion:
    """An uploaded version (weights already in the store), trained on dataset generation
    ``generation`` as its uploader declares, published in the caller's transaction with the
    model row locked."""
    version = versions.new_version(
        session,
        model=model,
        kind=VersionKind.UPLOADED,
        sha256=weights_sha256,
        accuracies={},
        job=None,
        forgotten=0,
        seconds=None,
        generation=generation,
    )
    model.status = ModelStatus.READY
    _after_new_version(session, model, version)
    return version


def finish_cache(
    session: Session, *, job: Job, artifacts: Mapping[str, StoredArtifact], seconds: float
) -> None:
    """A cache job's end: its artifacts join the version it read, the job succeeds, and the
    model's pending requests are looked at again (they may have waited for this cache)."""
    model_id = model_of(job)
    version = versions.get_or_raise(session, model_id=model_id, number=job.base_version)
    versions.add_artifacts(session, version, artifacts)
    _succeed(session, job, result_version=job.base_version, timings={"cache": seconds})
    session.flush()
    versions.collect_artifacts(session, model_id)
    on_commit(session, lambda: outbox.enqueue_dispatch(model_id))


def finish_evaluation(session: Session, *, job: Job, accuracies: dict[str, Any]) -> None:
    """An evaluate job's end: the version it read gets its UA / RA / TA."""
    version = versions.get_or_raise(
        session, model_id=model_of(job), number=job.base_version, lock=True
    )
    version.metrics = {**version.metrics, **accuracies}
    _succeed(session, job, result_version=job.base_version, timings={})


def finish_audit(
    session: Session, *, job: Job, verdict: str | None, seconds: float, referenced: bool
) -> None:
    """An audit job's end (its report is stored by the caller): the job succeeds and the
    requests that waited for this audit complete, unless the model's policy (as it is now)
    wants an audit against retrained references and this one (``referenced``) was not: then
    such an audit of the version is queued, carrying the requests, so none waits for good
    (the policy may have changed while this audit ran)."""
    _succeed(session, job, result_version=job.base_version, timings={"auditing": seconds})
    model = session.get(Model, model_of(job))
    policy = ModelSettings.of(model).audit if model is not None else None
    if (
        model is not None
        and policy is not None
        and policy.complete_after == "reference_audit"
        and not referenced
    ):
        waiting = [r.id for r in _requests_of(session, job) if r.status == RequestStatus.AUDITING]
        if waiting:
            session.flush()  # this job leaves the live set first
            new_job(
                session,
                model,
                JobKind.AUDIT,
                version=job.base_version,
                request_ids=waiting,
                params={"reference": "retrain"},
            )
        return
    _complete_audited(session, job, detail=f"version {job.base_version} audited: {verdict}")


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


def _complete_audited(session: Session, job: Job, *, detail: str) -> None:
    """Complete the requests that waited for this audit job's version to be audited."""
    for request in _requests_of(session, job):
        if request.status == RequestStatus.AUDITING:
            _complete(session, request, detail=detail)


def _after_new_version(session: Session, model: Model, version: ModelVersion) -> None:
    """Follow-ups of a new head: announce it (``model.version_published``), build the
    unlearner's artifacts if it needs them, measure an uploaded version, audit a version
    that forgot something (its audit completes the version's requests), collect the
    artifacts nothing needs now, and look at what became pending meanwhile."""
    callbacks.emit(
        session,
        tenant_id=model.tenant_id,
        model_id=model.id,
        event=WebhookEvent.VERSION_PUBLISHED,
        fields={
            "version": version.number,
            "parent": version.parent,
            "kind": version.kind,
            "deletion_request_ids": list(version.deletion_request_ids),
            "weights_sha256": version.artifact_sha256,
            "weights_url": versions.weights_url(model.id, version.number),
        },
    )
    settings = ModelSettings.of(model)
    if version.kind == VersionKind.UPLOADED:
        new_job(session, model, JobKind.EVALUATE, version=version.number)
    if Need.CACHE in settings.unlearner.method.needs and not versions.has_artifacts(
        session, model.id, version.number
    ):
        new_job(session, model, JobKind.CACHE)
    if version.forgotten_samples:
        every, required = settings.audit.reference_every, settings.audit.complete_after
        periodic = bool(every) and version.number % every == 0
        reference = "retrain" if periodic or required == "reference_audit" else "none"
        new_job(
            session,
            model,
            JobKind.AUDIT,
            version=version.number,
            request_ids=version.deletion_request_ids,
            params={"reference": reference},
        )
    session.flush()  # the new jobs count as live for the collection
    versions.collect_artifacts(session, model.id)
    model_id = model.id
    on_commit(session, lambda: outbox.enqueue_dispatch(model_id))


def requeue_or_fail(session: Session, job: Job, reason: str) -> None:
    """After a failed attempt: back to the queue, or ``failed`` once attempts are spent.

    An unlearning batch's requests follow their job (back to ``batched``, or ``failed``
    with the reason). An audit job's requests stay ``auditing`` while it is retried; if it
    fails for good they complete anyway, since their version is published and the data is
    out of the model, with the failed audit named in their history. A register job that
    fails for good fails its dataset, with the reason.
    """
    job.lease_expires_at = None
    spent = job.attempts >= get_settings().job_max_attempts
    if spent:
        job.error = reason
        move_job(session, job, JobStatus.FAILED, detail=reason)
        if job.kind == JobKind.TRAIN and job.model_id is not None:
            model = session.get(Model, job.model_id)
            if model is not None:
                model.status = ModelStatus.FAILED
        if job.kind == JobKind.REGISTER:
            _fail_dataset(session, job, reason)
    else:
        move_job(session, job, JobStatus.QUEUED, detail=f"requeued: {reason}")
        job_id, kind = job.id, job.kind
        on_commit(session, lambda: outbox.enqueue_job(job_id, kind))
    if job.kind == JobKind.AUDIT:
        if spent:
            _complete_audited(
                session, job, detail=f"audit job {job.id} failed: {reason}; version published"
            )
        return
    for request in _requests_of(session, job):
        if spent and request.status in (RequestStatus.BATCHED, RequestStatus.UNLEARNING):
            request.error = f"job {job.id} failed after {job.attempts} attempts: {reason}"
            move_request(session, request, RequestStatus.FAILED, detail=reason)
        elif not spent and request.status == RequestStatus.UNLEARNING:
            move_request(session, request, RequestStatus.BATCHED, detail="requeued")
