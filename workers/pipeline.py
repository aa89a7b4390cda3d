"""The job pipeline: dispatch -> claim -> run (train | unlearn | cache) -> publish, and the
sweeper that recovers jobs whose worker died.

Correctness rules (DESIGN.md) and where they hold:
1. Messages are nudges: ``run_job`` reloads the row and is a no-op unless it is queued.
2. Exactly once: pending requests are claimed ``FOR UPDATE SKIP LOCKED`` into one job.
3. A chain: the partial unique index ``uq_jobs_one_live_lineage_job_per_model``.
4. Atomic publish: artifacts are written first, then one transaction does the rest.
5. Worker death: a lease renewed by a heartbeat; ``sweep`` requeues expired leases up to
   ``job_max_attempts``; every write of a running job is fenced by its attempt number.
7. Forgotten means forgotten: tombstoned samples leave every retain set.
8. Transitions go through ``service.states``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from torch import nn

from ml.architectures import build_model
from ml.datasets import open_source
from ml.samples import SampleSet
from ml.training import TrainingConfig, accuracy, pick_device, train
from ml.unlearners import get_unlearner
from ml.unlearners.base import (
    Artifact,
    UnlearnContext,
    Unlearner,
    UnlearnResult,
    state_dict_of,
)
from ml.unlearners.class_masking import mask_classes
from service import audit_log, metrics
from service.artifacts import store
from service.db import new_session, on_commit, session_scope
from service.deletion_requests.service import log_received, log_request
from service.enums import (
    JobKind,
    JobStatus,
    ModelStatus,
    RequestStatus,
    SampleState,
    Split,
    VersionKind,
)
from service.settings import get_settings
from service.states import move_job, move_request
from service.tables import (
    Dataset,
    DeletionRequest,
    Job,
    Model,
    ModelVersion,
    Sample,
    Tombstone,
    VersionArtifact,
    utcnow,
)
from workers import queue

log = logging.getLogger(__name__)

MAX_BATCH_REQUESTS = 10_000
RETAIN_EVAL_SIZE = 2000  # RA on a fixed sample of D_r keeps evaluation off the critical path


class LeaseLost(RuntimeError):
    """Another attempt owns the job now (the sweeper requeued it); stop without writing."""


# --------------------------------------------------------------------------- dispatch


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
    model = session.get(Model, model_id)
    if model is None or model.status != ModelStatus.READY or model.head_version is None:
        return None
    if _live_lineage_job(session, model_id):
        return None  # the unique index is the guarantee; this only avoids the noise
    unlearner = get_unlearner(model.unlearner["name"], model.unlearner["params"])
    if unlearner.requires_artifacts and not _has_artifacts(session, model, model.head_version):
        job = new_job(session, model, JobKind.CACHE)
        session.commit()
        return job.id
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
        or len(requests) >= model.batching["max_requests"]
        or age >= model.batching["max_wait_seconds"]
    )
    if not due:
        session.rollback()
        return None
    job = new_job(session, model, JobKind.UNLEARN, requests=requests)
    for request in requests:
        request.job_id = job.id
        move_request(session, request, RequestStatus.BATCHED, detail=f"job {job.id}")
        log_received(session, request)
    model.flush_requested_at = None
    session.commit()
    metrics.BATCH_SIZE.observe(len(requests))
    metrics.BATCH_SAMPLES.observe(job.sample_count)
    return job.id


def new_job(
    session: Session,
    model: Model,
    kind: JobKind,
    *,
    requests: list[DeletionRequest] = (),  # type: ignore[assignment]
    version: int | None = None,
    params: dict[str, Any] | None = None,
) -> Job:
    """A queued job (enqueued once the caller commits); ``version`` defaults to the head."""
    job = Job(
        tenant_id=model.tenant_id,
        model_id=model.id,
        kind=kind,
        status=JobStatus.QUEUED,
        base_version=model.head_version if version is None else version,
        unlearner=model.unlearner,
        params=params or {},
        request_ids=[r.id for r in requests],
        sample_count=sum(r.sample_count for r in requests),
    )
    session.add(job)
    session.flush()  # the partial unique index speaks here
    on_commit(session, lambda: queue.enqueue_job(job.id, kind))
    return job


def _live_lineage_job(session: Session, model_id: str) -> bool:
    from service.enums import LINEAGE_JOB_KINDS, LIVE_JOB_STATUSES

    return (
        session.scalar(
            select(Job.id).where(
                Job.model_id == model_id,
                Job.status.in_(list(LIVE_JOB_STATUSES)),
                Job.kind.in_(list(LINEAGE_JOB_KINDS)),
            )
        )
        is not None
    )


def _has_artifacts(session: Session, model: Model, number: int) -> bool:
    version_id = session.scalar(
        select(ModelVersion.id).where(
            ModelVersion.model_id == model.id, ModelVersion.number == number
        )
    )
    return (
        session.scalar(select(VersionArtifact.id).where(VersionArtifact.version_id == version_id))
        is not None
    )


# --------------------------------------------------------------------------- claim + lease


@dataclass
class Claim:
    job_id: str
    attempt: int
    kind: str
    model_id: str
    base_version: int | None
    unlearner: dict[str, Any] | None
    request_ids: list[str]
    started: float = field(default_factory=time.monotonic)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _claim(job_id: str) -> Claim | None:
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
        move_job(session, job, JobStatus.RUNNING, detail=f"attempt {job.attempts} on {job.worker}")
        for request in _requests(session, job.request_ids):
            if request.status == RequestStatus.BATCHED:
                move_request(session, request, RequestStatus.UNLEARNING)
        return Claim(
            job.id,
            job.attempts,
            job.kind,
            job.model_id,
            job.base_version,
            job.unlearner,
            list(job.request_ids),
        )


def _requests(session: Session, ids: Sequence[str]) -> list[DeletionRequest]:
    if not ids:
        return []
    return list(
        session.scalars(
            select(DeletionRequest)
            .where(DeletionRequest.id.in_(ids))
            .order_by(DeletionRequest.id)
            .with_for_update()
        )
    )


def owned(session: Session, claim: Claim) -> Job:
    """The job row, locked, if this attempt still owns it (the fencing check)."""
    job = session.scalar(select(Job).where(Job.id == claim.job_id).with_for_update())
    if (
        job is None
        or job.attempts != claim.attempt
        or job.status not in (JobStatus.RUNNING, JobStatus.AUDITING)
    ):
        raise LeaseLost(claim.job_id)
    return job


class Heartbeat:
    """Renews the job's lease while it runs; ``lost`` once another attempt owns it."""

    def __init__(self, claim: Claim) -> None:
        self.claim = claim
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
                        Job.status.in_([JobStatus.RUNNING, JobStatus.AUDITING]),
                    )
                    .values(**values)
                )
                if result.rowcount == 0:  # type: ignore[attr-defined]
                    self.lost.set()
        except Exception:
            log.exception("heartbeat for job %s failed; retrying", self.claim.job_id)


# --------------------------------------------------------------------------- run


def run_job(job_id: str) -> None:
    """The body of the ``run_job`` task."""
    claim = _claim(job_id)
    if claim is None:
        return
    unlearner_name = (
        (claim.unlearner or {}).get("name", "-") if claim.kind != JobKind.TRAIN else "-"
    )
    outcome = "succeeded"
    with Heartbeat(claim) as heartbeat:
        try:
            runners()[claim.kind](claim, heartbeat)
        except LeaseLost:
            outcome = "lease_lost"
            log.warning("job %s attempt %s lost its lease; stopping", job_id, claim.attempt)
        except Exception as error:
            outcome = "failed"
            log.exception("job %s attempt %s failed", job_id, claim.attempt)
            metrics.JOB_FAILURES.labels(claim.kind, type(error).__name__).inc()
            _release(claim, f"{type(error).__name__}: {error}")
    metrics.JOB_DURATION.labels(claim.kind, unlearner_name, outcome).observe(
        time.monotonic() - claim.started
    )


def _release(claim: Claim, reason: str) -> None:
    try:
        with session_scope() as session:
            job = owned(session, claim)
            requeue_or_fail(session, job, reason)
    except LeaseLost:
        pass


def requeue_or_fail(session: Session, job: Job, reason: str) -> None:
    """After a failed attempt: back to the queue, or ``failed`` once attempts are spent."""
    requests = _requests(session, job.request_ids)
    job.lease_expires_at = None
    if job.attempts >= get_settings().job_max_attempts:
        job.error = reason
        move_job(session, job, JobStatus.FAILED, detail=reason)
        for request in requests:
            if request.status in (
                RequestStatus.BATCHED,
                RequestStatus.UNLEARNING,
                RequestStatus.AUDITING,
            ):
                request.error = f"job {job.id} failed after {job.attempts} attempts: {reason}"
                move_request(session, request, RequestStatus.FAILED, detail=reason)
        if job.kind == JobKind.TRAIN:
            model = session.get(Model, job.model_id)
            if model is not None:
                model.status = ModelStatus.FAILED
        return
    move_job(session, job, JobStatus.QUEUED, detail=f"requeued: {reason}")
    for request in requests:
        if request.status in (RequestStatus.UNLEARNING, RequestStatus.AUDITING):
            move_request(session, request, RequestStatus.BATCHED, detail="requeued")
    on_commit(session, lambda: queue.enqueue_job(job.id, job.kind))


# --------------------------------------------------------------------------- data for a job


@dataclass
class JobData:
    model: Model
    dataset: Dataset
    adapter: Any
    forget: SampleSet
    forget_owner: dict[int, str]  # sample id -> the request that forgets it
    forget_ids: np.ndarray
    retain: SampleSet  # every active training sample outside the forget set
    holdout: SampleSet
    test: SampleSet
    class_labels: list[int] | None  # classes this batch deletes
    masked_classes: list[int]  # every class this model has forgotten, this batch included


def load_data(
    session: Session,
    model: Model,
    *,
    request_ids: Sequence[str] = (),
    version: int | None = None,
) -> JobData:
    """The sample sets of a job. The forget set is either what ``request_ids`` still ask the
    model to forget (an unlearning batch) or what ``version`` forgot (its audit)."""
    dataset = session.get(Dataset, model.dataset_id)
    assert dataset is not None
    adapter = open_source(dataset.source, get_settings().data_root)
    rows = session.execute(
        select(Sample.id, Sample.key, Sample.position, Sample.split, Sample.label, Sample.state)
        .where(Sample.dataset_id == dataset.id)
        .order_by(Sample.position)
    ).all()
    ids = np.array([r.id for r in rows], dtype=np.int64)
    keys = [r.key for r in rows]
    positions = np.array([r.position for r in rows], dtype=np.int64)
    labels = np.array([r.label for r in rows], dtype=np.int64)
    splits = np.array([r.split for r in rows])
    active = np.array([r.state == SampleState.ACTIVE for r in rows])
    if version is None:
        owner, class_labels = _batch_forget_set(
            session, model, request_ids, ids, keys, labels, splits
        )
    else:
        owner = dict(
            session.execute(
                select(Tombstone.sample_id, Tombstone.request_id).where(
                    Tombstone.model_id == model.id, Tombstone.version_number == version
                )
            ).all()
        )
        class_labels = {
            label
            for request in session.scalars(
                select(DeletionRequest).where(
                    DeletionRequest.result_version == version, DeletionRequest.model_id == model.id
                )
            )
            for label in request.class_labels or []
        }
    forget_mask = np.isin(ids, np.fromiter(owner, dtype=np.int64))
    train_mask = splits == Split.TRAIN

    def subset(mask: np.ndarray) -> SampleSet:
        chosen = np.flatnonzero(mask)
        return SampleSet(adapter, positions[chosen], labels[chosen], [keys[i] for i in chosen])

    return JobData(
        model=model,
        dataset=dataset,
        adapter=adapter,
        forget=subset(forget_mask),
        forget_owner=owner,
        forget_ids=ids[forget_mask],
        retain=subset(train_mask & active & ~forget_mask),
        holdout=subset(splits == Split.HOLDOUT),
        test=subset(splits == Split.TEST),
        class_labels=sorted(class_labels) or None,
        masked_classes=sorted(class_labels | _forgotten_classes(session, model.id, version)),
    )


def _batch_forget_set(
    session: Session,
    model: Model,
    request_ids: Sequence[str],
    ids: np.ndarray,
    keys: list[str],
    labels: np.ndarray,
    splits: np.ndarray,
) -> tuple[dict[int, str], set[int]]:
    """{sample id: the request that forgets it} over what the model still knows, and the
    classes the batch deletes."""
    tombstoned = np.fromiter(
        session.scalars(select(Tombstone.sample_id).where(Tombstone.model_id == model.id)),
        dtype=np.int64,
    )
    known_by_model = ~np.isin(ids, tombstoned)
    row_of_key = {key: i for i, key in enumerate(keys)}
    owner: dict[int, str] = {}
    class_labels: set[int] = set()
    for request in _requests(session, request_ids):
        if request.class_labels:
            class_labels |= set(request.class_labels)
            chosen = np.flatnonzero((splits == Split.TRAIN) & np.isin(labels, request.class_labels))
        else:
            chosen = np.array([row_of_key[k] for k in request.sample_keys or []], dtype=np.int64)
        for i in chosen:
            if known_by_model[i]:
                owner.setdefault(int(ids[i]), request.id)
    return owner, class_labels


def _forgotten_classes(session: Session, model_id: str, up_to: int | None = None) -> set[int]:
    """Every class the model forgot (up to version ``up_to``)."""
    statement = select(DeletionRequest.class_labels).where(
        DeletionRequest.model_id == model_id,
        DeletionRequest.status == RequestStatus.COMPLETED,
        DeletionRequest.class_labels.is_not(None),
    )
    if up_to is not None:
        statement = statement.where(DeletionRequest.result_version <= up_to)
    return {label for labels in session.scalars(statement) for label in labels or []}


def load_weights(
    model_row: Model, dataset: Dataset, sha256: str, device: torch.device
) -> nn.Module:
    network = new_network(model_row, dataset)
    network.load_state_dict(store().get_tensors(sha256))
    return network.to(device).eval()


def new_network(model_row: Model, dataset: Dataset) -> nn.Module:
    return build_model(
        model_row.architecture["name"],
        model_row.architecture["params"],
        dataset.input_shape,
        dataset.num_classes,
    )


def version_metrics(
    network: nn.Module, data: JobData, device: torch.device
) -> dict[str, float | None]:
    """UA, RA (fixed sample of D_r), TA (test, or holdout when the source has no test split;
    for class deletion only the remaining classes)."""
    test = data.test if len(data.test) else data.holdout
    if data.masked_classes:
        test = test.without_classes(data.masked_classes)
    forget_accuracy = accuracy(network, data.forget, device=device)
    return {
        "ua": None if forget_accuracy is None else 1.0 - forget_accuracy,
        "ra": accuracy(network, data.retain.subset(RETAIN_EVAL_SIZE), device=device),
        "ta": accuracy(network, test, device=device),
    }


def _context(
    claim: Claim,
    heartbeat: Heartbeat,
    data: JobData,
    network: nn.Module,
    device: torch.device,
) -> UnlearnContext:
    model_row, dataset = data.model, data.dataset

    def artifact(name: str) -> Artifact | None:
        with session_scope() as session:
            row = session.scalar(
                select(VersionArtifact)
                .join(ModelVersion, VersionArtifact.version_id == ModelVersion.id)
                .where(
                    ModelVersion.model_id == model_row.id,
                    ModelVersion.number == claim.base_version,
                    VersionArtifact.name == name,
                )
            )
            if row is None:
                return None
            return Artifact(store().get_tensors(row.sha256), dict(row.meta))

    def load_version(number: int) -> nn.Module:
        with session_scope() as session:
            sha256 = _version_sha(session, model_row.id, number)
        return load_weights(model_row, dataset, sha256, device)

    training = TrainingConfig.model_validate(model_row.training or {})
    return UnlearnContext(
        model=network,
        build_model=lambda: new_network(model_row, dataset),
        forget=data.forget,
        retain=data.retain,
        holdout=data.holdout,
        training=training,
        device=device,
        base_version=claim.base_version or 0,
        class_labels=data.class_labels,
        artifacts=artifact,
        progress=heartbeat.report,
        seed=training.seed + claim.attempt,
        load_version=load_version,
    )


# --------------------------------------------------------------------------- runners


def _run_train(claim: Claim, heartbeat: Heartbeat) -> None:
    device = pick_device(get_settings().device)
    with session_scope() as session:
        model_row = session.get(Model, claim.model_id)
        assert model_row is not None
        data = load_data(session, model_row)
    training = TrainingConfig.model_validate(model_row.training or {})
    started = time.monotonic()
    network = train(
        new_network(model_row, data.dataset),
        data.retain,
        training,
        device=device,
        progress=heartbeat.report,
    )
    seconds = time.monotonic() - started
    _to_auditing(claim)
    result_metrics = version_metrics(network, data, device)
    result = UnlearnResult(state_dict=state_dict_of(network))
    _publish(claim, data, result, result_metrics, seconds, kind=VersionKind.TRAINED)


@dataclass
class JobInputs:
    unlearner: Unlearner
    data: JobData
    base_sha256: str
    device: torch.device

    def base_model(self) -> nn.Module:
        return load_weights(self.data.model, self.data.dataset, self.base_sha256, self.device)


def _job_inputs(claim: Claim) -> JobInputs:
    """The configured unlearner, the job's sample sets and the base version's weights."""
    assert claim.unlearner is not None
    with session_scope() as session:
        model_row = session.get(Model, claim.model_id)
        assert model_row is not None
        data = load_data(session, model_row, request_ids=claim.request_ids)
        base_sha = _version_sha(session, model_row.id, claim.base_version)
    unlearner = get_unlearner(claim.unlearner["name"], claim.unlearner["params"])
    return JobInputs(unlearner, data, base_sha, pick_device(get_settings().device))


def _run_unlearn(claim: Claim, heartbeat: Heartbeat) -> None:
    inputs = _job_inputs(claim)
    unlearner, data, device = inputs.unlearner, inputs.data, inputs.device
    if not len(data.forget):  # every sample was forgotten before: complete without a version
        _to_auditing(claim)
        _publish(claim, data, None, {}, 0.0, kind=VersionKind.UNLEARNED)
        return
    network = inputs.base_model()
    started = time.monotonic()
    result = unlearner.unlearn(_context(claim, heartbeat, data, network, device))
    seconds = time.monotonic() - started
    for stage, value in result.info.items():
        if stage.endswith("_seconds") and isinstance(value, int | float):
            metrics.JOB_STAGE_SECONDS.labels(
                stage.removesuffix("_seconds"), unlearner.name
            ).observe(value)
    _to_auditing(claim)
    network.load_state_dict(result.state_dict)
    if data.masked_classes:  # class deletion's guarantee, whatever the method did
        mask_classes(network, data.masked_classes)
        result.state_dict = state_dict_of(network)
    result_metrics = version_metrics(network.to(device), data, device)
    _publish(claim, data, result, result_metrics, seconds, kind=VersionKind.UNLEARNED)


def _run_cache(claim: Claim, heartbeat: Heartbeat) -> None:
    """Build the configured unlearner's per-version artifacts over every active training
    sample, with the base version's forward passes (PGU's cache basis)."""
    inputs = _job_inputs(claim)  # a cache job names no requests: D_r is every active sample
    unlearner, data, device = inputs.unlearner, inputs.data, inputs.device
    network = inputs.base_model()
    started = time.monotonic()
    artifacts = unlearner.prepare(_context(claim, heartbeat, data, network, device))
    seconds = time.monotonic() - started
    shas = {name: store().put_tensors(a.tensors) for name, a in artifacts.items()}
    with session_scope() as session:
        job = owned(session, claim)
        version_id = session.scalar(
            select(ModelVersion.id).where(
                ModelVersion.model_id == claim.model_id, ModelVersion.number == claim.base_version
            )
        )
        for name, artifact in artifacts.items():
            session.add(
                VersionArtifact(
                    version_id=version_id, name=name, sha256=shas[name], meta=artifact.meta
                )
            )
        job.result_version = claim.base_version
        job.timings = {**job.timings, "cache": seconds}
        move_job(session, job, JobStatus.SUCCEEDED)
        on_commit(session, lambda: queue.enqueue_dispatch(claim.model_id))


RUNNERS: dict[str, Callable[[Claim, Heartbeat], None]] = {
    JobKind.TRAIN: _run_train,
    JobKind.UNLEARN: _run_unlearn,
    JobKind.CACHE: _run_cache,
}


def runners() -> dict[str, Callable[[Claim, Heartbeat], None]]:
    """Every job kind's runner; the audit's lives in its own module, which builds on this one."""
    from workers.audit_job import run_audit

    return {**RUNNERS, JobKind.AUDIT: run_audit}


def _version_sha(session: Session, model_id: str, number: int | None) -> str:
    sha = session.scalar(
        select(ModelVersion.artifact_sha256).where(
            ModelVersion.model_id == model_id, ModelVersion.number == number
        )
    )
    if sha is None:
        raise LookupError(f"model {model_id} has no version {number}")
    return sha


def _to_auditing(claim: Claim) -> None:
    with session_scope() as session:
        job = owned(session, claim)
        move_job(session, job, JobStatus.AUDITING)
        for request in _requests(session, job.request_ids):
            if request.status == RequestStatus.UNLEARNING:
                move_request(session, request, RequestStatus.AUDITING)


# --------------------------------------------------------------------------- publish


def _publish(
    claim: Claim,
    data: JobData,
    result: UnlearnResult | None,
    result_metrics: dict[str, Any],
    seconds: float,
    *,
    kind: VersionKind,
) -> None:
    """Artifacts first (content-addressed), then one transaction for everything else."""
    weights_sha = store().put_tensors(result.state_dict) if result else None
    artifact_shas = {
        name: store().put_tensors(a.tensors)
        for name, a in (result.artifacts if result else {}).items()
    }
    completed_requests: list[DeletionRequest] = []
    with session_scope() as session:
        job = owned(session, claim)
        model = session.scalar(select(Model).where(Model.id == claim.model_id).with_for_update())
        assert model is not None
        if model.head_version != claim.base_version:
            raise RuntimeError(
                f"head moved from {claim.base_version} to {model.head_version} during the job"
            )
        number = model.head_version
        if weights_sha is not None:
            version = new_version(
                session,
                model=model,
                kind=kind,
                sha256=weights_sha,
                metrics=result_metrics,
                job=job,
                forgotten=len(data.forget),
                seconds=seconds,
            )
            for name, sha in artifact_shas.items():
                assert result is not None
                session.add(
                    VersionArtifact(
                        version_id=version.id,
                        name=name,
                        sha256=sha,
                        meta=result.artifacts[name].meta,
                    )
                )
            number = version.number
            _tombstone(session, model, data, number)
        for request in _requests(session, job.request_ids):
            request.result_version = number
            move_request(session, request, RequestStatus.COMPLETED, detail=f"version {number}")
            completed_requests.append(request)
            log_request(
                session,
                request,
                "completed",
                model_id=request.model_id,
                version=number,
                job_id=job.id,
            )
        job.result_version = number
        stages = {  # the method's own timings, e.g. PGU's cache update
            name.removesuffix("_seconds"): value
            for name, value in (result.info if result else {}).items()
            if name.endswith("_seconds")
        }
        job.timings = {
            **job.timings,
            **stages,
            "unlearning": seconds,
            "auditing": time.monotonic() - claim.started - seconds,
        }
        if kind == VersionKind.TRAINED:
            model.status = ModelStatus.READY
        move_job(session, job, JobStatus.SUCCEEDED)
        session.flush()  # the job leaves the live set before a follow-up job may enter it
        if weights_sha is not None:
            _after_new_version(session, model, version)
    for request in completed_requests:
        metrics.REQUEST_END_TO_END.observe((utcnow() - request.created_at).total_seconds())


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


def _tombstone(session: Session, model: Model, data: JobData, number: int) -> None:
    if not data.forget_owner:
        return
    session.execute(
        insert(Tombstone),
        [
            {
                "model_id": model.id,
                "sample_id": sample_id,
                "request_id": request_id,
                "version_number": number,
                "created_at": utcnow(),
            }
            for sample_id, request_id in data.forget_owner.items()
        ],
    )
    ids = [int(i) for i in data.forget_ids]
    for start in range(0, len(ids), 5000):
        session.execute(
            update(Sample)
            .where(Sample.id.in_(ids[start : start + 5000]))
            .values(state=SampleState.FORGOTTEN)
        )


def _after_new_version(session: Session, model: Model, version: ModelVersion) -> None:
    """Follow-ups of a new head: build the unlearner's artifacts if it needs them, audit a
    version that forgot something, and look at what became pending meanwhile."""
    unlearner: Unlearner = get_unlearner(model.unlearner["name"], model.unlearner["params"])
    if unlearner.requires_artifacts and not _has_artifacts(session, model, version.number):
        new_job(session, model, JobKind.CACHE)
    if version.forgotten_samples:
        every = (model.audit_policy or {}).get("reference_every", 0)
        reference = "retrain" if every and version.number % every == 0 else "none"
        new_job(
            session, model, JobKind.AUDIT, version=version.number, params={"reference": reference}
        )
    model_id = model.id
    on_commit(session, lambda: queue.enqueue_dispatch(model_id))


def publish_uploaded(
    session: Session, *, model: Model, state_dict: dict[str, torch.Tensor]
) -> ModelVersion:
    """An uploaded version, published in the caller's transaction (model row locked)."""
    sha256 = store().put_tensors(state_dict)
    version = new_version(
        session,
        model=model,
        kind=VersionKind.UPLOADED,
        sha256=sha256,
        metrics={},
        job=None,
        forgotten=0,
        seconds=None,
    )
    model.status = ModelStatus.READY
    _after_new_version(session, model, version)
    return version


# --------------------------------------------------------------------------- sweeper


def sweep() -> dict[str, int]:
    """Requeue (or fail, past the attempt cap) jobs whose lease expired; re-send queued jobs
    whose message was lost."""
    settings = get_settings()
    now = utcnow()
    requeued = failed = resent = 0
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
            requeue_or_fail(session, job, "lease expired: the worker stopped heartbeating")
            metrics.JOB_FAILURES.labels(job.kind, "lease_expired").inc()
            failed += job.status == JobStatus.FAILED
            requeued += job.status == JobStatus.QUEUED
        stale = now - timedelta(seconds=settings.job_lease_seconds)
        lost = session.scalars(
            select(Job.id).where(
                Job.status == JobStatus.QUEUED,
                or_(Job.enqueued_at.is_(None), Job.enqueued_at < stale),
                Job.created_at < stale,
            )
        ).all()
    for job_id in lost:
        kind = None
        with session_scope() as session:
            kind = session.scalar(select(Job.kind).where(Job.id == job_id))
        queue.enqueue_job(job_id, kind or JobKind.UNLEARN)
        resent += 1
    return {"requeued": requeued, "failed": failed, "resent": resent}
