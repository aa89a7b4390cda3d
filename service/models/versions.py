"""A model's versions: the one lookup, new versions (the lineage's and the audit's retrained
references), their artifacts and when those are collected, and the tombstones a version
leaves (docs/architecture.md, rules 4 and 7).

Every function works in the caller's transaction and commits nothing itself. A new head
moves only with the model row locked (:func:`lock_model`); what follows a new version
(its cache, evaluation and audit jobs) is ``service.jobs.lifecycle``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from service import audit_log, lookup
from service.artifacts import StoredArtifact, store
from service.datasets import erasure
from service.db import on_commit
from service.enums import LIVE_JOB_STATUSES, RequestStatus, SampleState, VersionKind
from service.errors import NotFound
from service.models.schemas import ArtifactRead, VersionRead
from service.pagination import paginate
from service.settings import get_settings
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
    "get",
    "get_or_raise",
    "lock_model",
    "new_version",
    "references_of",
    "new_references",
    "has_artifacts",
    "add_artifacts",
    "artifact",
    "collect_artifacts",
    "tombstone",
    "forgotten_classes",
    "page",
    "to_read",
    "weights_file",
    "weights_url",
]

_TOMBSTONE_CHUNK = 5000


def get(
    session: Session, model_id: str, number: int | None, *, lock: bool = False
) -> ModelVersion | None:
    """Version ``number`` of the model, or None (also when ``number`` is None)."""
    if number is None:
        return None
    statement = select(ModelVersion).where(
        ModelVersion.model_id == model_id, ModelVersion.number == number
    )
    if lock:
        statement = statement.with_for_update()
    return session.scalar(statement)


def get_or_raise(
    session: Session,
    *,
    model_id: str,
    number: int | None,
    tenant_id: str | None = None,
    lock: bool = False,
) -> ModelVersion:
    """Version ``number`` of the model; NotFound when there is none. With ``tenant_id``,
    a model of another tenant is as unknown as a missing one (the API's lookup)."""
    if tenant_id is not None:
        lookup.get_or_raise(session, Model, model_id, tenant_id=tenant_id, what="model")
    version = get(session, model_id, number, lock=lock)
    if version is None:
        raise NotFound("version", number)
    return version


def lock_model(session: Session, model_id: str) -> Model:
    """The model row, locked: the head moves under this lock only."""
    model = session.scalar(select(Model).where(Model.id == model_id).with_for_update())
    if model is None:
        raise NotFound("model", model_id)
    return model


def new_version(
    session: Session,
    *,
    model: Model,
    kind: VersionKind,
    sha256: str,
    accuracies: dict[str, Any],
    job: Job | None,
    forgotten: int,
    seconds: float | None,
    training: Mapping[str, Any] | None = None,
    reference_of: int | None = None,
    unchanged_reason: str | None = None,
    generation: int | None = None,
) -> ModelVersion:
    """A new version, in the caller's transaction with the model row locked. It becomes the
    head, unless it is a retrained audit reference of version ``reference_of`` (kept outside
    the lineage, its parent the audited version). ``accuracies`` is its UA / RA / TA (the
    API's ``metrics``); ``training`` the recipe the service trained it with, as run (None:
    it was not trained with one); ``unchanged_reason``, set when its weights are its
    parent's, marks it unchanged. ``generation`` is the dataset generation it was trained on
    (None: its parent's, as an unlearned version or a retrained reference knows no more)."""
    parent = model.head_version if reference_of is None else reference_of
    previous = get(session, model.id, parent)
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
        metrics=accuracies,
        training=dict(training) if training is not None else None,
        seconds=seconds,
        unchanged=unchanged_reason is not None,
        unchanged_reason=unchanged_reason,
        generation=generation or (previous.generation if previous else 1),
        # What it may have learned: its job's view (none recorded: it counts as having
        # learned everything), or, uploaded, the dataset's now.
        forget_seq=erasure.forget_seq(session, model.id)
        if kind == VersionKind.UPLOADED
        else (job.forget_seq if job is not None else None),
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
            "unchanged": version.unchanged,
            "generation": version.generation,
        },
    )
    return version


def references_of(session: Session, model_id: str, number: int) -> list[ModelVersion]:
    """The retrained references of version ``number`` kept so far, oldest first."""
    return list(
        session.scalars(
            select(ModelVersion)
            .where(
                ModelVersion.model_id == model_id,
                ModelVersion.parent == number,
                ModelVersion.kind == VersionKind.RETRAINED,
            )
            .order_by(ModelVersion.number)
        )
    )


def new_references(
    session: Session,
    *,
    model_id: str,
    reference_of: int,
    shas: list[str],
    trainings: list[dict[str, Any]],
    seconds_each: float,
) -> list[int]:
    """New ``retrained`` versions (weights already stored, each trained with the recipe at
    its place in ``trainings``) outside the lineage, children of the audited version;
    returns their numbers."""
    model = lock_model(session, model_id)
    return [
        new_version(
            session,
            model=model,
            kind=VersionKind.RETRAINED,
            sha256=sha,
            accuracies={},
            job=None,
            forgotten=0,
            seconds=seconds_each,
            training=training,
            reference_of=reference_of,
        ).number
        for sha, training in zip(shas, trainings, strict=True)
    ]


def has_artifacts(session: Session, model_id: str, number: int) -> bool:
    """Whether version ``number`` has the per-version artifacts of an unlearner (a cache)."""
    version = get(session, model_id, number)
    return version is not None and (
        session.scalar(select(VersionArtifact.id).where(VersionArtifact.version_id == version.id))
        is not None
    )


def add_artifacts(
    session: Session, version: ModelVersion, artifacts: Mapping[str, StoredArtifact]
) -> None:
    """Artifacts already in the store join ``version``."""
    for name, stored in artifacts.items():
        session.add(
            VersionArtifact(
                version_id=version.id, name=name, sha256=stored.sha256, meta=stored.meta
            )
        )


def artifact(
    session: Session, model_id: str, number: int | None, name: str
) -> StoredArtifact | None:
    """Version ``number``'s artifact called ``name`` (its content address and metadata)."""
    row = session.scalar(
        select(VersionArtifact)
        .join(ModelVersion, VersionArtifact.version_id == ModelVersion.id)
        .where(
            ModelVersion.model_id == model_id,
            ModelVersion.number == number,
            VersionArtifact.name == name,
        )
    )
    return None if row is None else StoredArtifact(row.sha256, dict(row.meta))


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


def tombstone(session: Session, model_id: str, forgotten: Mapping[int, str], number: int) -> None:
    """Version ``number`` forgot these samples (sample id -> the request that asked): their
    tombstones, and their dataset-wide state becomes ``forgotten`` (rule 7)."""
    if not forgotten:
        return
    now, publish = utcnow(), erasure.next_forget_seq(session, model_id)
    session.execute(
        insert(Tombstone),
        [
            {
                "model_id": model_id,
                "sample_id": sample_id,
                "request_id": request_id,
                "version_number": number,
                "forget_seq": publish,
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


def forgotten_classes(session: Session, model_id: str, up_to: int | None = None) -> set[int]:
    """Every class the model forgot in a published version (up to version ``up_to``)."""
    statement = select(DeletionRequest.class_labels).where(
        DeletionRequest.model_id == model_id,
        DeletionRequest.status.in_([RequestStatus.AUDITING, RequestStatus.COMPLETED]),
        DeletionRequest.result_version.is_not(None),
        DeletionRequest.class_labels.is_not(None),
    )
    if up_to is not None:
        statement = statement.where(DeletionRequest.result_version <= up_to)
    return {label for labels in session.scalars(statement) for label in labels or []}


def page(
    session: Session, *, tenant_id: str, model_id: str, limit: int, cursor: str | None
) -> tuple[list[VersionRead], str | None]:
    lookup.get_or_raise(session, Model, model_id, tenant_id=tenant_id, what="model")
    statement = select(ModelVersion).where(ModelVersion.model_id == model_id)
    rows, next_cursor = paginate(
        session,
        statement,
        order=(ModelVersion.number, ModelVersion.id),
        limit=limit,
        cursor=cursor,
    )
    return [to_read(session, row) for row in rows], next_cursor


def to_read(session: Session, version: ModelVersion) -> VersionRead:
    artifacts = session.scalars(
        select(VersionArtifact).where(VersionArtifact.version_id == version.id)
    ).all()
    return VersionRead(
        number=version.number,
        parent=version.parent,
        kind=VersionKind(version.kind),
        in_lineage=version.in_lineage,
        created_at=version.created_at,
        unlearner=version.unlearner,
        job_id=version.job_id,
        deletion_request_ids=version.deletion_request_ids,
        forgotten_samples=version.forgotten_samples,
        forgotten_total=version.forgotten_total,
        artifact_sha256=version.artifact_sha256,
        metrics=version.metrics,
        training=version.training,
        unchanged=version.unchanged,
        unchanged_reason=version.unchanged_reason,
        generation=version.generation,
        artifacts=[ArtifactRead(name=a.name, sha256=a.sha256, meta=a.meta) for a in artifacts],
    )


def weights_file(
    session: Session, *, tenant_id: str, model_id: str, number: int
) -> tuple[Path, str]:
    """Where a version's safetensors file is, and its sha256 (what the version records;
    the file is content-addressed by it)."""
    version = get_or_raise(session, model_id=model_id, number=number, tenant_id=tenant_id)
    path = store().path(version.artifact_sha256)
    if not path.is_file():
        raise OSError(f"the weights of {model_id} version {number} are missing from the store")
    return path, version.artifact_sha256


def weights_url(model_id: str, number: int) -> str:
    """The download's URL: under ``UNLEARN_PUBLIC_URL`` when set, else the path."""
    return get_settings().link(f"/v1/models/{model_id}/versions/{number}/weights")
