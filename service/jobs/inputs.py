"""What a job reads from the database: its model's settings, its sample sets, and the
weights and artifacts of the versions it loads.

The sample sets come from the ``samples`` table and the dataset's adapter; each sample is
found in the source by its key and checked against its registered fingerprint
(``ml.sources.check_unchanged``), and images are read when a runner asks
(``ml.samples.SampleSet``). The forget
set is what the job's requests still ask the model to forget (an unlearning batch) or what
the job's version forgot (its audit); the retain set is every active training sample
outside it, so tombstoned samples never come back (docs/architecture.md, rule 7). A job on
a version reads the dataset as of the version's generation (a training job: the newest),
so samples a refresh added join a model only through a version trained on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from ml.datasets import DatasetAdapter, check_unchanged, open_source
from ml.samples import SampleSet, split_holdout
from ml.unlearners import Artifact
from service.artifacts import store
from service.datasets import erasure
from service.datasets import service as datasets
from service.db import session_scope
from service.enums import JobKind, SampleState, Split
from service.errors import NotFound
from service.jobs.lease import Attempt
from service.models import versions
from service.models.settings import ModelSettings
from service.settings import get_settings
from service.tables import Dataset, DeletionRequest, Model, Sample, Tombstone

__all__ = [
    "SampleSets",
    "JobInputs",
    "load_inputs",
    "release",
    "version_weights",
    "version_artifact",
]


@dataclass(frozen=True)
class SampleSets:
    """The sample sets of one job."""

    forget: SampleSet  # D_f
    forgotten: dict[int, str]  # D_f's sample ids -> the request that forgets each
    retain: SampleSet  # D_r: every active training sample outside D_f
    validation: SampleSet  # D_v: held out, never trained on; the methods' stop rules read it
    shadow: SampleSet  # held out, disjoint from D_v: what a method fits its attackers on
    audit_nonmembers: SampleSet  # the rest of the held-out samples, never read by a method
    test: SampleSet  # D_t
    class_labels: list[int] | None  # the classes this batch (or audited version) deletes
    masked_classes: list[int]  # every class the model has forgotten, these included


@dataclass(frozen=True)
class JobInputs:
    """What a claimed job reads from the database, loaded once when it starts: its model's
    settings, its dataset's shape and its sample sets (networks and the device are the
    worker's, ``workers.workload``)."""

    model_id: str
    dataset_id: str
    settings: ModelSettings
    input_shape: list[int]
    num_classes: int
    generation: int  # the dataset generation the job reads (its version's, or the newest)
    sets: SampleSets


def version_weights(model_id: str, number: int | None) -> dict[str, torch.Tensor]:
    """Version ``number``'s weights, read from the store."""
    with session_scope() as session:
        sha256 = versions.get_or_raise(session, model_id=model_id, number=number).artifact_sha256
    return store().get_tensors(sha256)


def version_artifact(model_id: str, number: int | None, name: str) -> Artifact | None:
    """Version ``number``'s artifact ``name`` (PGU's cache), read from the store."""
    with session_scope() as session:
        stored = versions.artifact(session, model_id, number, name)
    if stored is None:
        return None
    return Artifact(store().get_tensors(stored.sha256), stored.meta)


def load_inputs(attempt: Attempt) -> JobInputs:
    """The inputs of a claimed job. An audit's forget set is what its version forgot; any
    other job's is what its requests still ask (none for training and cache jobs)."""
    with session_scope() as session:
        model = session.get(Model, attempt.model)
        if model is None:
            raise NotFound("model", attempt.model)
        dataset = session.get(Dataset, model.dataset_id)
        assert dataset is not None
        shape, classes = datasets.indexed_shape(dataset)
        generation = dataset.generation
        if attempt.base_version is not None:  # what its version was trained on, no more
            generation = versions.get_or_raise(
                session, model_id=model.id, number=attempt.base_version
            ).generation
        if attempt.kind == JobKind.AUDIT:
            sets = _sample_sets(
                session, model, dataset, generation=generation, version=attempt.base_version
            )
        else:
            sets = _sample_sets(
                session, model, dataset, generation=generation, request_ids=attempt.request_ids
            )
        return JobInputs(
            model_id=model.id,
            dataset_id=dataset.id,
            settings=ModelSettings.of(model),
            input_shape=shape,
            num_classes=classes,
            generation=generation,
            sets=sets,
        )


def _sample_sets(
    session: Session,
    model: Model,
    dataset: Dataset,
    *,
    generation: int,
    request_ids: Sequence[str] = (),
    version: int | None = None,
) -> SampleSets:
    settings = get_settings()
    adapter = open_source(
        dataset.source,
        settings.data_root,
        cache_bytes=settings.dataset_cache_bytes,
        loader_workers=settings.loader_workers,
    )
    rows = session.execute(
        select(
            Sample.id,
            Sample.key,
            Sample.split,
            Sample.label,
            Sample.state,
            Sample.fingerprint,
            Sample.generation,
        )
        .where(Sample.dataset_id == dataset.id)
        .order_by(Sample.position)
    ).all()
    ids = np.array([r.id for r in rows], dtype=np.int64)
    keys = [r.key for r in rows]
    labels = np.array([r.label for r in rows], dtype=np.int64)
    splits = np.array([r.split for r in rows])
    active = np.array([r.state == SampleState.ACTIVE for r in rows])
    # The dataset as the job's version saw it: samples added later are not its to read.
    known = np.array([r.generation <= generation for r in rows], dtype=bool)
    if version is None:
        forgotten, class_labels = _batch_forget_set(
            session, model, request_ids, ids, keys, labels, splits
        )
    else:
        forgotten, class_labels = _version_forget_set(session, model, version)
    forget_mask = np.isin(ids, np.fromiter(forgotten, dtype=np.int64))
    train_mask = splits == Split.TRAIN
    # Reads go by key. What this job may read (all but samples forgotten before it, whose
    # rows and files may be gone) must be what was registered: a changed sample fails it.
    read = forget_mask | (known & (active | ~train_mask))
    positions = np.full(len(rows), -1, dtype=np.int64)
    chosen = [int(i) for i in np.flatnonzero(read)]
    read_keys, registered = [keys[i] for i in chosen], [rows[i].fingerprint for i in chosen]
    positions[read] = check_unchanged(adapter, read_keys, registered)
    if adapter.erased.intersection(positions[read].tolist()):  # dropped from the kept copy
        adapter = open_source(
            dataset.source,
            settings.data_root,
            cache_bytes=settings.dataset_cache_bytes,
            loader_workers=settings.loader_workers,
            fresh=True,
        )
        positions[read] = check_unchanged(adapter, read_keys, registered)
    unneeded = erasure.unneeded_forgotten(session, dataset.id)
    drop_unneeded(adapter, [keys[i] for i in np.flatnonzero(~read) if keys[i] in unneeded])

    def subset(mask: np.ndarray) -> SampleSet:
        chosen = np.flatnonzero(mask)
        return SampleSet(adapter, positions[chosen], labels[chosen], [keys[i] for i in chosen])

    shadow, validation, audit_nonmembers = split_holdout(subset(known & (splits == Split.HOLDOUT)))
    forgotten_before = versions.forgotten_classes(session, model.id, version)
    return SampleSets(
        forget=subset(forget_mask),
        forgotten=forgotten,
        retain=subset(known & train_mask & active & ~forget_mask),
        validation=validation,
        shadow=shadow,
        audit_nonmembers=audit_nonmembers,
        test=subset(known & (splits == Split.TEST)),
        class_labels=sorted(class_labels) or None,
        masked_classes=sorted(class_labels | forgotten_before),
    )


def drop_unneeded(adapter: DatasetAdapter, keys: Sequence[str]) -> None:
    """The kept copy of a source drops the inputs of these samples (forgotten, and needed
    by nothing: ``service.datasets.erasure``), so no copy the service holds outlives the
    product's erasure of them."""
    positions, _ = adapter.positions_of(keys)
    adapter.erase(positions[positions >= 0])


def release(inputs: JobInputs, forget: SampleSet) -> None:
    """After the job that may have been the last to read its forget set (an audit that
    completed its requests): the kept copy drops those of them nothing needs now."""
    with session_scope() as session:
        unneeded = erasure.unneeded_forgotten(session, inputs.dataset_id)
    drop_unneeded(forget.adapter, [key for key in forget.keys if key in unneeded])


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
    # Forgotten dataset-wide before this model trained on them: nothing of them to forget
    # here, and their rows or files may be erased already.
    never = np.fromiter(
        erasure.never_learned(session, model_id=model.id, dataset_id=model.dataset_id),
        dtype=np.int64,
    )
    known_by_model = ~np.isin(ids, tombstoned) & ~np.isin(ids, never)
    row_of_key = {key: i for i, key in enumerate(keys)}
    forgotten: dict[int, str] = {}
    class_labels: set[int] = set()
    requests = session.scalars(
        select(DeletionRequest)
        .where(DeletionRequest.id.in_(list(request_ids)))
        .order_by(DeletionRequest.id)
    )
    for request in requests:
        if request.class_labels:
            class_labels |= set(request.class_labels)
            chosen = np.flatnonzero((splits == Split.TRAIN) & np.isin(labels, request.class_labels))
        else:
            chosen = np.array([row_of_key[k] for k in request.sample_keys or []], dtype=np.int64)
        for i in chosen:
            if known_by_model[i]:
                forgotten.setdefault(int(ids[i]), request.id)
    return forgotten, class_labels


def _version_forget_set(
    session: Session, model: Model, version: int
) -> tuple[dict[int, str], set[int]]:
    """What version ``version`` forgot, and the classes its requests deleted."""
    forgotten = dict(
        session.execute(
            select(Tombstone.sample_id, Tombstone.request_id).where(
                Tombstone.model_id == model.id, Tombstone.version_number == version
            )
        ).all()
    )
    class_labels = {
        label
        for labels in session.scalars(
            select(DeletionRequest.class_labels).where(
                DeletionRequest.model_id == model.id, DeletionRequest.result_version == version
            )
        )
        for label in labels or []
    }
    return forgotten, class_labels
