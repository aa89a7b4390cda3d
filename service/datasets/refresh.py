"""A dataset that grows: ``refresh`` indexes its source again and adds the keys it did
not have as the next generation; an active sample whose row, file or label changed, or
that vanished, is reported and not taken (docs/datasets.md, "Datasets that grow").

New samples get their split as registration gives it (the source's ``train``/``test``, then
a seeded ``holdout_fraction`` of the new training samples), so the holdout keeps its share;
the seed is the dataset's and the generation's, so a refresh is reproducible."""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from ml.datasets import InvalidSource, holdout_mask, index_source
from ml.sources import SourceIndex, describe_change
from service import audit_log, lookup
from service.datasets.schemas import RefreshRead, SourceDifference, SplitCounts
from service.datasets.service import (
    indexed_shape,
    refresh_planner_statistics,
    require_ready,
    subject_digests,
    to_read,
)
from service.enums import SampleState
from service.errors import InvalidInput
from service.settings import get_settings
from service.tables import Dataset, Sample

__all__ = ["refresh"]

LISTED = 100  # differences a refresh lists (the counts are whole)


def refresh(session: Session, *, tenant_id: str, dataset_id: str) -> RefreshRead:
    dataset = lookup.get_or_raise(
        session, Dataset, dataset_id, tenant_id=tenant_id, what="dataset", lock=True
    )
    require_ready(dataset, "a refresh")
    shape, classes = indexed_shape(dataset)
    registered = session.execute(
        select(Sample.key, Sample.state, Sample.label, Sample.fingerprint).where(
            Sample.dataset_id == dataset.id
        )
    ).all()
    known = {row.key for row in registered}
    try:
        index = index_source(dataset.source, get_settings().data_root, known=known)
    except InvalidSource as error:
        raise InvalidInput(str(error), [{"loc": ["source"], "msg": str(error)}]) from None
    if index.input_shape != shape:
        raise _refused(
            f"the source's samples are now {index.input_shape}, the dataset's "
            f"{dataset.input_shape}: register the changed data as a new dataset"
        )
    position_of = {key: i for i, key in enumerate(index.keys)}
    changed: dict[str, str] = {}
    vanished: list[str] = []
    for row in registered:
        if row.state != SampleState.ACTIVE:
            continue  # a forgotten sample's row or file may go, or stay as it was
        where = position_of.get(row.key)
        if where is None:
            vanished.append(row.key)
            continue
        now = index.fingerprints[where] if index.fingerprints else None
        why = describe_change(row.fingerprint, now)
        if int(index.labels[where]) != row.label:
            why = "label changed" if why is None else f"{why}; label changed"
        if why:
            changed[row.key] = why
    new = np.array([i for i, key in enumerate(index.keys) if key not in known], dtype=np.int64)
    added = {"train": 0, "holdout": 0, "test": 0}
    if len(new):
        out_of_range = [index.keys[i] for i in new if int(index.labels[i]) >= classes]
        if out_of_range:
            raise _refused(
                f"{len(out_of_range)} new sample(s) have a label outside the dataset's "
                f"{classes} classes, first {out_of_range[0]!r}: a refresh "
                "cannot add classes"
            )
        _add(session, dataset, index, new, added)
    audit_log.append(
        session,
        tenant_id=tenant_id,
        action="dataset.refreshed",
        subject_type="dataset",
        subject_id=dataset.id,
        payload={
            "generation": dataset.generation,
            "added": added,
            "changed": len(changed),
            "vanished": len(vanished),
        },
    )
    session.commit()
    if len(new):
        refresh_planner_statistics(session)
    return RefreshRead(
        dataset=to_read(session, [dataset])[0],
        added=SplitCounts(**added),
        changed=[
            SourceDifference(key=key, reason=why) for key, why in list(changed.items())[:LISTED]
        ],
        changed_count=len(changed),
        vanished=vanished[:LISTED],
        vanished_count=len(vanished),
    )


def _add(
    session: Session, dataset: Dataset, index: SourceIndex, new: np.ndarray, added: dict[str, int]
) -> None:
    """The samples at positions ``new`` of the index join the dataset as the next
    generation, after every sample it has."""
    generation = dataset.generation + 1
    source_splits = [index.splits[i] for i in new]
    holdout = holdout_mask(source_splits, dataset.holdout_fraction, dataset.seed + generation)
    splits = np.where(holdout, "holdout", np.asarray(source_splits))
    after = session.scalar(select(func.max(Sample.position)).where(Sample.dataset_id == dataset.id))
    first = (after if after is not None else -1) + 1
    given = [index.subjects[i] for i in new] if index.subjects else None
    digests = subject_digests(session, dataset.tenant_id, given)
    session.execute(
        insert(Sample),
        [
            {
                "dataset_id": dataset.id,
                "key": index.keys[i],
                "position": first + n,
                "split": str(splits[n]),
                "label": int(index.labels[i]),
                "state": SampleState.ACTIVE,
                "fingerprint": index.fingerprints[i] if index.fingerprints else None,
                "generation": generation,
                "subject_digest": digests[n] if digests else None,
            }
            for n, i in enumerate(new)
        ],
    )
    for split in added:
        added[split] = int((splits == split).sum())
    counts = dataset.counts or {}  # a ready dataset's, never None
    dataset.counts = {split: counts.get(split, 0) + added[split] for split in added}
    dataset.generation = generation


def _refused(message: str) -> InvalidInput:
    return InvalidInput(message, [{"loc": ["source"], "msg": message}])
