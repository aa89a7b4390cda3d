"""When a forgotten sample's raw data may be erased from its source (docs/datasets.md,
"Erasing forgotten samples' raw data").

A forgotten sample is out of every retain set, retrain, retrained reference, cache rebuild
and audit member set (docs/architecture.md, rule 7); what may still read it is the work
that forgets it. So its raw data is still needed while:

- a request that forgets it is not completed (its version's audit measures on it, and
  requests complete when that audit is stored);
- another model of the dataset learned it and has not forgotten it: that model's own
  request will have to read it. A model learned it when one of its lineage versions was
  trained on a generation that holds it by a job that began before it was first forgotten
  (a job reads its sets when it begins and never takes a forgotten sample, so a model made
  later never saw it);
- a job that began before it was first forgotten still runs: it may read it as an active
  sample (a long audit of an earlier version, a training).

"Before" is not a comparison of clocks: each dataset counts the publishes that forgot
samples (``Dataset.forget_seq``, incremented under its row's lock, so they commit in that
order). A tombstone carries its publish's number, a job the number committed when it was
first claimed (it reads its sets after that, so it saw every sample those publishes forgot
as forgotten), a version its job's. A job began before a sample was first forgotten when
its number is below the sample's first tombstone's (migration 0014).

A request is ``source_erasable`` once it is completed and none of its samples (those it
forgot, and those it found already forgotten by its model) is needed. An audit of the
version that forgot them asked again later (an admin's) needs them again: it is refused
(409) when they are gone from the source (``check_forget_set_present``), and fails naming
them if they go while it waits. Only a request's change (its own, or another model's)
turns a request's answer from true to false, so the ETag of its polled read never keeps a
stale true; the end of a running job may turn it true unannounced (read it again).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import CompoundSelect, Select, exists, func, select, union, update
from sqlalchemy.orm import Session, aliased

from ml.datasets import InvalidSource, changed_samples
from service.enums import JobStatus, RequestStatus, SampleState
from service.errors import Conflict
from service.settings import get_settings
from service.tables import (
    Dataset,
    DeletionRequest,
    Job,
    Model,
    ModelVersion,
    Sample,
    Tombstone,
)

__all__ = [
    "forget_seq",
    "next_forget_seq",
    "erasable_requests",
    "unneeded_forgotten",
    "never_learned",
    "check_forget_set_present",
]


def _dataset_of(model_id: str) -> Any:
    return select(Model.dataset_id).where(Model.id == model_id).scalar_subquery()


def forget_seq(session: Session, model_id: str) -> int:
    """How many publishes have forgotten samples of the model's dataset, as committed now:
    a job that reads its sets after this saw every sample they forgot as forgotten."""
    return (
        session.scalar(select(Dataset.forget_seq).where(Dataset.id == _dataset_of(model_id))) or 0
    )


def next_forget_seq(session: Session, model_id: str) -> int:
    """Count a publish that forgets samples of the model's dataset and return its number.
    The update locks the dataset's row until the caller commits, so publishes commit in
    the order of their numbers: a reader that sees number n sees every publish up to n."""
    return session.execute(
        update(Dataset)
        .where(Dataset.id == _dataset_of(model_id))
        .values(forget_seq=Dataset.forget_seq + 1)
        .returning(Dataset.forget_seq)
    ).scalar_one()


def _first_forgotten() -> Any:
    """The correlated ``Sample``'s first forgetting publish (``Dataset.forget_seq``)."""
    return (
        select(func.min(Tombstone.forget_seq))
        .where(Tombstone.sample_id == Sample.id)
        .scalar_subquery()
    )


def _learned(model_id: Any) -> Select[Any]:
    """The versions of the model ``model_id`` (a column or a value) that learned the
    correlated ``Sample``: in its lineage, of a generation that holds it, trained by a job
    that began before the sample was first forgotten (its ``forget_seq`` below the
    sample's first tombstone's; a version without one counts as having learned it)."""
    return select(ModelVersion.id).where(
        ModelVersion.model_id == model_id,
        ModelVersion.in_lineage.is_(True),
        ModelVersion.generation >= Sample.generation,
        func.coalesce(ModelVersion.forget_seq, -1) < _first_forgotten(),
    )


def never_learned(session: Session, *, model_id: str, dataset_id: str) -> set[int]:
    """Ids of the dataset's forgotten samples this model never learned (forgotten before
    it trained on them) and has no tombstone for: nothing of it to forget, and their raw
    data may already be erased, so a batch of this model never reads them."""
    mine = aliased(Tombstone)
    return set(
        session.scalars(
            select(Sample.id).where(
                Sample.dataset_id == dataset_id,
                Sample.state == SampleState.FORGOTTEN,
                ~exists().where(mine.model_id == model_id, mine.sample_id == Sample.id),
                ~exists(_learned(model_id)),
            )
        )
    )


def _needed(sample_ids: Select[Any]) -> CompoundSelect:
    """Of these samples, the ids some work of the service may still read (module doc)."""
    chosen = sample_ids.scalar_subquery()
    unfinished = (
        select(Tombstone.sample_id)
        .join(DeletionRequest, DeletionRequest.id == Tombstone.request_id)
        .where(Tombstone.sample_id.in_(chosen), DeletionRequest.status != RequestStatus.COMPLETED)
    )
    first_forgotten = _first_forgotten()
    mine = aliased(Tombstone)
    learned = _learned(Model.id)
    still_known = (
        select(Sample.id)
        .join(Model, Model.dataset_id == Sample.dataset_id)
        .where(
            Sample.id.in_(chosen),
            ~exists().where(mine.model_id == Model.id, mine.sample_id == Sample.id),
            exists(learned),
        )
    )
    # A job that began while the sample was active may read it as one (a long audit of an
    # earlier version, a training still running).
    read_by_running = (
        select(Sample.id)
        .join(Model, Model.dataset_id == Sample.dataset_id)
        .join(Job, Job.model_id == Model.id)
        .where(
            Sample.id.in_(chosen),
            Job.status.in_([JobStatus.RUNNING, JobStatus.AUDITING]),
            func.coalesce(Job.forget_seq, -1) < first_forgotten,
        )
    )
    return union(unfinished, still_known, read_by_running)


def erasable_requests(session: Session, requests: Sequence[DeletionRequest]) -> set[str]:
    """The ids of the completed ``requests`` whose samples' raw data nothing needs: their
    own samples, and those they found already forgotten by their model (one query for
    them all, one more per request that found some)."""
    completed = [r for r in requests if r.status == RequestStatus.COMPLETED]
    if not completed:
        return set()
    ids = [r.id for r in completed]
    own = select(Tombstone.sample_id).where(Tombstone.request_id.in_(ids))
    blocked = set(
        session.scalars(
            select(Tombstone.request_id)
            .where(
                Tombstone.request_id.in_(ids),
                Tombstone.sample_id.in_(_needed(own).scalar_subquery()),
            )
            .distinct()
        )
    )
    owned = dict(
        session.execute(
            select(Tombstone.request_id, func.count())
            .where(Tombstone.request_id.in_(ids))
            .group_by(Tombstone.request_id)
        ).all()
    )
    for request in completed:
        # Samples it named but another request's tombstone covers: found already forgotten,
        # or forgotten by a batch-mate that named them too (only one request holds each
        # tombstone). Those are its samples as much as its own tombstones are.
        shared = request.already_forgotten or owned.get(request.id, 0) < request.sample_count
        if request.id in blocked or not shared:
            continue
        named = select(Tombstone.sample_id).join(Sample, Sample.id == Tombstone.sample_id)
        named = named.where(Tombstone.model_id == request.model_id)
        if request.sample_keys is not None:
            named = named.where(Sample.key.in_(list(request.sample_keys)))
        else:
            named = named.where(Sample.label.in_(list(request.class_labels or [])))
        if session.scalar(select(exists(_needed(named)))):
            blocked.add(request.id)
    return set(ids) - blocked


def unneeded_forgotten(session: Session, dataset_id: str) -> set[str]:
    """The keys of the dataset's forgotten samples that nothing needs: what a worker's copy
    of the source drops."""
    forgotten = select(Sample.id).where(
        Sample.dataset_id == dataset_id, Sample.state == SampleState.FORGOTTEN
    )
    unneeded = forgotten.where(Sample.id.not_in(_needed(forgotten).scalar_subquery()))
    return set(session.scalars(unneeded.with_only_columns(Sample.key)))


def check_forget_set_present(session: Session, *, model: Model, number: int) -> None:
    """Conflict naming the samples version ``number`` forgot that its dataset's source no
    longer has as registered: an audit of the version measures on them, so it cannot run
    once their raw data was erased."""
    rows = session.execute(
        select(Sample.key, Sample.fingerprint)
        .join(Tombstone, Tombstone.sample_id == Sample.id)
        .where(Tombstone.model_id == model.id, Tombstone.version_number == number)
        .order_by(Sample.position)
    ).all()
    dataset = session.get(Dataset, model.dataset_id)
    if dataset is None or all(row.fingerprint is None for row in rows):
        return  # nothing forgotten, or shipped data, which cannot change
    keys, registered = [row.key for row in rows], [row.fingerprint for row in rows]
    try:
        gone = changed_samples(dataset.source, get_settings().data_root, keys, registered)
    except InvalidSource as error:
        raise Conflict(
            f"version {number} cannot be audited: its dataset's source is unusable ({error})"
        ) from None
    if gone:
        shown = ", ".join(f"{key!r} ({why})" for key, why in list(gone.items())[:20])
        more = f" and {len(gone) - 20} more" if len(gone) > 20 else ""
        raise Conflict(
            f"version {number} cannot be audited again: {len(gone)} of the {len(keys)} "
            f"sample(s) it forgot are erased from the source, and an audit measures on them: "
            f"{shown}{more}"
        )
