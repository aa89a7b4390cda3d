"""Datasets: registering a source indexes every sample once, with its split, state and
fingerprint (what a job checks before it reads the sample).

A small source is registered in the request (``ready`` at once); a large file source, or
any source when the caller prefers it, by a ``register`` job (``registering`` until the
job has written its samples, or ``failed`` with the reason). Both index and store through
the same two functions, :func:`_read_source` and :func:`_store`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ml.datasets import InvalidSource, SourceIndex, count_samples, holdout_mask, index_source
from service import audit_log, lookup, subjects
from service.datasets.schemas import DatasetCreate, DatasetRead
from service.db import session_scope
from service.enums import DatasetStatus
from service.errors import Conflict, InvalidInput, NotFound
from service.jobs import lifecycle
from service.jobs.lease import Attempt, fenced
from service.pagination import paginate
from service.settings import get_settings
from service.tables import Dataset, Job, Sample, Tombstone

__all__ = [
    "register",
    "register_in_job",
    "to_read",
    "require_ready",
    "indexed_shape",
    "get_or_raise",
    "list_page",
    "samples_page",
    "get_sample_or_raise",
]


@dataclass(frozen=True)
class _Indexed:
    """A source as indexed and split: what a registration stores."""

    source: dict[str, Any]  # as stored: a computed normalization as its numbers
    index: SourceIndex
    splits: np.ndarray  # each sample's split, holdout drawn
    counts: dict[str, int]


def _read_source(
    source: dict[str, Any],
    holdout_fraction: float,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> _Indexed:
    """Index a source (every sample validated) and draw its holdout; InvalidSource says
    why the source is refused."""
    index = index_source(source, get_settings().data_root, progress=progress)
    stored = dict(source)
    if index.normalization is not None:  # a computed one is stored as its numbers
        stored["normalization"] = index.normalization
    if not index.keys:
        raise InvalidSource("the dataset has no samples")
    holdout = holdout_mask(index.splits, holdout_fraction, seed)
    splits = np.where(holdout, "holdout", np.asarray(index.splits))
    counts = {split: int((splits == split).sum()) for split in ("train", "holdout", "test")}
    if counts["train"] == 0:
        raise InvalidSource("the dataset has no training samples")
    return _Indexed(stored, index, splits, counts)


def _store(session: Session, dataset: Dataset, indexed: _Indexed) -> None:
    """Write an indexed source into its dataset (a new row, or a registering one locked by
    the caller): what indexing found, every sample, ``ready``, and the audit-log entry."""
    index = indexed.index
    dataset.source = indexed.source
    dataset.num_classes = index.num_classes
    dataset.input_shape = index.input_shape
    dataset.counts = indexed.counts
    dataset.status, dataset.error = DatasetStatus.READY, None
    session.flush()
    digests = subject_digests(session, dataset.tenant_id, index.subjects)
    session.execute(
        insert(Sample),
        [
            {
                "dataset_id": dataset.id,
                "key": key,
                "position": position,
                "split": str(indexed.splits[position]),
                "label": int(index.labels[position]),
                "state": "active",
                "fingerprint": index.fingerprints[position] if index.fingerprints else None,
                "subject_digest": digests[position] if digests else None,
            }
            for position, key in enumerate(index.keys)
        ],
    )
    audit_log.append(
        session,
        tenant_id=dataset.tenant_id,
        action="dataset.registered",
        subject_type="dataset",
        subject_id=dataset.id,
        payload={"name": dataset.name, "source": indexed.source, "counts": indexed.counts},
    )


def _refused(error: InvalidSource) -> InvalidInput:
    return InvalidInput(str(error), [{"loc": ["body", "source"], "msg": str(error)}])


def _check_name(session: Session, tenant_id: str, name: str) -> None:
    """409 if the name is taken by a dataset that is registering or ready; a failed
    registration's name is free (:func:`_drop_failed` removes its row when the new one is
    stored). Only read here: nothing is locked while the source is indexed."""
    status = session.scalar(
        select(Dataset.status).where(Dataset.tenant_id == tenant_id, Dataset.name == name)
    )
    if status is not None and status != DatasetStatus.FAILED:
        registering = " (it is registering)" if status != DatasetStatus.READY else ""
        raise Conflict(f"a dataset named {name!r} already exists{registering}")


def _drop_failed(session: Session, tenant_id: str, name: str) -> None:
    """Remove a failed registration of this name (no samples, no model uses it; its job and
    the job's events go with it by the keys' cascade). A concurrent registration that
    removed it first leaves nothing to remove; the name's unique key decides who wins."""
    session.execute(
        delete(Dataset).where(
            Dataset.tenant_id == tenant_id,
            Dataset.name == name,
            Dataset.status == DatasetStatus.FAILED,
        )
    )


def register(
    session: Session, *, tenant_id: str, spec: DatasetCreate, in_job: bool = False
) -> Dataset:
    """Register a dataset: here (``ready``), or by a ``register`` job (``registering``)
    when ``in_job`` (the caller prefers it) or the source is a file source of more than
    ``dataset_sync_max_samples`` samples. What needs no sample is checked here either way
    (the name, the path, the manifest's header): a 409 or 422 now, not a failed job."""
    _check_name(session, tenant_id, spec.name)
    source = spec.source.model_dump(mode="json", exclude_none=True)
    settings = get_settings()
    indexed = None
    try:
        count = count_samples(source, settings.data_root)
        in_job = in_job or (count is not None and count > settings.dataset_sync_max_samples)
        if not in_job:
            indexed = _read_source(source, spec.holdout_fraction, spec.seed)
    except InvalidSource as error:
        raise _refused(error) from None
    dataset = Dataset(
        tenant_id=tenant_id,
        name=spec.name,
        source=source,
        holdout_fraction=spec.holdout_fraction,
        seed=spec.seed,
        status=DatasetStatus.REGISTERING,
    )
    _drop_failed(session, tenant_id, spec.name)
    session.add(dataset)
    try:
        session.flush()
    except IntegrityError:  # another request registered the name since _check_name looked
        session.rollback()
        raise Conflict(f"a dataset named {spec.name!r} already exists") from None
    if indexed is None:
        lifecycle.new_register_job(session, dataset)
        session.commit()
        return dataset
    _store(session, dataset, indexed)
    session.commit()
    refresh_planner_statistics(session)
    return dataset


def register_in_job(attempt: Attempt, report: Callable[[str, int, int], None]) -> None:
    """A ``register`` job: index the dataset's source (``report`` hears how far validation
    is), then store it like a registration in the request, in a transaction fenced by the
    job's lease (a stale attempt writes nothing). A source refused fails the dataset and
    the job at once with the message a registration in the request gives (retrying would
    read the same files); any other error propagates, and the job is retried like any."""
    started = time.monotonic()
    with session_scope() as session:
        dataset = session.get(Dataset, attempt.dataset_id)
        if dataset is None:
            raise NotFound("dataset", str(attempt.dataset_id))
        source, fraction, seed = dict(dataset.source), dataset.holdout_fraction, dataset.seed
    report("validating", 0, 0)
    try:
        indexed = _read_source(
            source, fraction, seed, progress=lambda done, total: report("validating", done, total)
        )
    except InvalidSource as error:
        with fenced(attempt) as (session, job):
            lifecycle.fail_registration(session, job=job, reason=str(error))
        return
    report("storing", 0, len(indexed.index.keys))
    with fenced(attempt) as (session, job):
        dataset = session.get(Dataset, attempt.dataset_id, with_for_update=True)
        if dataset is None:
            raise NotFound("dataset", str(attempt.dataset_id))
        _store(session, dataset, indexed)
        lifecycle.finish_registration(session, job=job, seconds=time.monotonic() - started)
    with session_scope() as session:
        refresh_planner_statistics(session)


def to_read(session: Session, datasets: list[Dataset]) -> list[DatasetRead]:
    """The datasets as read, each with its register job if a job registered it (one
    query for them all)."""
    jobs: dict[str | None, str] = {}
    if datasets:
        rows = session.execute(
            select(Job.dataset_id, Job.id)
            .where(Job.dataset_id.in_([dataset.id for dataset in datasets]))
            .order_by(Job.created_at, Job.id)
        ).all()
        jobs = {dataset_id: job_id for dataset_id, job_id in rows}  # the latest wins
    return [
        DatasetRead.model_validate(dataset).model_copy(update={"job_id": jobs.get(dataset.id)})
        for dataset in datasets
    ]


def indexed_shape(dataset: Dataset) -> tuple[list[int], int]:
    """A ready dataset's input shape and class count (a model is only made on one)."""
    if dataset.input_shape is None or dataset.num_classes is None:
        require_ready(dataset, "a model")
        raise Conflict(f"dataset {dataset.id} has no shape")  # ready yet unindexed: none such
    return list(dataset.input_shape), dataset.num_classes


def require_ready(dataset: Dataset, doing: str) -> None:
    """409 unless the dataset is ``ready``: ``doing`` needs its samples."""
    if dataset.status != DatasetStatus.READY:
        raise Conflict(
            f"dataset {dataset.id} is {dataset.status}, not ready: {doing} needs its samples"
            + (f" (its registration failed: {dataset.error})" if dataset.error else "")
        )


def subject_digests(
    session: Session, tenant_id: str, given: list[str | None] | None
) -> list[str | None] | None:
    """Each sample's subject as the tenant's keyed digest (``service.subjects``): the
    source's subjects are read at registration and never stored as given."""
    if given is None:
        return None
    key = subjects.tenant_key(session, tenant_id)
    return [subjects.subject_digest(key, subject) if subject else None for subject in given]


def refresh_planner_statistics(session: Session) -> None:
    """A registration can multiply the samples table, and Postgres's autovacuum analyzes it
    only later: until then a request naming 10,000 keys was planned as if the table were
    nearly empty (16-77 s measured on 100k samples; 0.1-1.6 s once analyzed)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE samples"))
        session.commit()


def get_or_raise(session: Session, *, tenant_id: str, dataset_id: str) -> Dataset:
    return lookup.get_or_raise(session, Dataset, dataset_id, tenant_id=tenant_id, what="dataset")


def list_page(
    session: Session, *, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[Dataset], str | None]:
    statement = select(Dataset).where(Dataset.tenant_id == tenant_id)
    return paginate(
        session, statement, order=(Dataset.created_at, Dataset.id), limit=limit, cursor=cursor
    )


def samples_page(
    session: Session,
    *,
    tenant_id: str,
    dataset_id: str,
    split: str | None,
    state: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Sample], str | None]:
    """Samples in dataset order (they have no creation time of their own); none while the
    dataset registers (its samples are written all at once when it is ready)."""
    dataset = get_or_raise(session, tenant_id=tenant_id, dataset_id=dataset_id)
    if dataset.status != DatasetStatus.READY:
        return [], None
    statement = select(Sample).where(Sample.dataset_id == dataset_id)
    if split:
        statement = statement.where(Sample.split == split)
    if state:
        statement = statement.where(Sample.state == state)
    return paginate(
        session,
        statement,
        order=(Sample.position, Sample.id),
        limit=limit,
        cursor=cursor,
        descending=False,
    )


def get_sample_or_raise(
    session: Session, *, tenant_id: str, dataset_id: str, key: str
) -> tuple[Sample, list[Tombstone]]:
    get_or_raise(session, tenant_id=tenant_id, dataset_id=dataset_id)
    sample = session.scalar(
        select(Sample).where(Sample.dataset_id == dataset_id, Sample.key == key)
    )
    if sample is None:
        raise NotFound("sample", key)
    tombstones = session.scalars(
        select(Tombstone).where(Tombstone.sample_id == sample.id).order_by(Tombstone.id)
    ).all()
    return sample, list(tombstones)
