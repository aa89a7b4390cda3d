"""Deletion requests: validated against the model's dataset, idempotent, cancellable."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from service import audit_log, lookup, subjects
from service.datasets import erasure
from service.deletion_requests import storage
from service.deletion_requests.schemas import (
    DeletionRequestCreate,
    DeletionRequestRead,
    HistoryEntry,
)
from service.enums import RequestStatus, Split
from service.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    NotFound,
    TooLarge,
    Unavailable,
)
from service.pagination import paginate
from service.settings import get_settings
from service.states import move_request
from service.tables import (
    DeletionRequest,
    RequestEvent,
    new_id,
    utcnow,
)

__all__ = [
    "Submission",
    "Outcome",
    "submission",
    "bulk_submissions",
    "create_batch",
    "get_or_raise",
    "list_page",
    "cancel",
    "retry",
    "to_read",
    "read_many",
]

log = logging.getLogger(__name__)

MAX_LISTED = 100  # invalid keys listed in a 422
MAX_IDEMPOTENCY_KEY = 200
# A bulk call's item i is idempotent under "<key>\x1f<i>". A client's own key never holds a
# control character (HTTP cannot carry one, and ``checked_key`` refuses it), so no single
# request's key, "k#0" included, can name a bulk item. (Before, items used "<key>#<i>".)
BULK_ITEM_SEPARATOR = "\x1f"
MAX_BULK_KEY = MAX_IDEMPOTENCY_KEY - 4  # room for the separator and the index


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def body_digest(spec: DeletionRequestCreate) -> str:
    return digest(json.dumps(spec.model_dump(mode="json"), sort_keys=True))


@dataclass(frozen=True, slots=True)
class Submission:
    """One request on its way in: its body valid by the schema, not yet checked against the
    database. ``body_sha256`` is set when it carries an idempotency key."""

    tenant_id: str
    spec: DeletionRequestCreate
    idempotency_key: str | None = None
    body_sha256: str = ""


Outcome = dict[str, Any] | DomainError  # the request's JSON, or why it was refused


def submission(
    *,
    tenant_id: str,
    spec: DeletionRequestCreate,
    idempotency_key: str | None = None,
    max_key: int = MAX_IDEMPOTENCY_KEY,
) -> Submission:
    """A submission for the ingest batcher; 422 on a malformed idempotency key."""
    if idempotency_key is None:
        return Submission(tenant_id, spec)
    return Submission(tenant_id, spec, checked_key(idempotency_key, max_key), body_digest(spec))


def checked_key(idempotency_key: str, max_key: int = MAX_IDEMPOTENCY_KEY) -> str:
    """A client's ``Idempotency-Key``: 1 to ``max_key`` characters, no control characters
    but tab (none reach us over HTTP; refusing them keeps bulk items' keys apart)."""
    if not 1 <= len(idempotency_key) <= max_key:
        raise InvalidInput(f"Idempotency-Key must be 1 to {max_key} characters")
    if any((c < " " and c != "\t") or c == "\x7f" for c in idempotency_key):
        raise InvalidInput("Idempotency-Key must not hold control characters")
    return idempotency_key


def bulk_submissions(
    *, tenant_id: str, items: list[dict[str, Any]], idempotency_key: str | None = None
) -> list[Submission | DomainError]:
    """``:bulk``'s items, each a submission or the problem of its body. With an
    ``Idempotency-Key``, item ``i`` is idempotent under ``<key>\x1f<i>``, a key no single
    request can use: retrying the whole call stores nothing twice."""
    limit = get_settings().bulk_max_requests
    if len(items) > limit:
        raise TooLarge(f"{len(items)} requests; at most {limit} per bulk call")
    if idempotency_key is not None:
        try:
            checked_key(idempotency_key, MAX_BULK_KEY)
        except InvalidInput as error:
            raise InvalidInput(f"{error.detail} on :bulk") from None
    answers: list[Submission | DomainError] = []
    for index, raw in enumerate(items):
        try:
            spec = DeletionRequestCreate.model_validate(raw)
        except ValidationError as error:
            answers.append(InvalidInput.from_errors(error.errors()))
            continue
        if idempotency_key is None:
            answers.append(Submission(tenant_id, spec))
            continue
        item_key = f"{idempotency_key}{BULK_ITEM_SEPARATOR}{index}"
        answers.append(Submission(tenant_id, spec, item_key, body_digest(spec)))
    return answers


class IdempotencyRace(Exception):
    """Another transaction committed one of the batch's idempotency keys first."""


RACE_ATTEMPTS = 5


def create_batch(session: Session, items: Sequence[Submission]) -> list[Outcome]:
    """Validate and store many requests in one transaction, and answer each: its JSON (a
    repeated idempotency key with the same body answers the first answer) or its problem.

    A request's problem never touches its batch-mates: every check is made before anything
    is written, and a refused request writes nothing. The database is asked a fixed number
    of set-based questions per batch, whatever its size (earlier answers of the idempotency
    keys, the models, the sample keys: ``storage``), then the requests are inserted and the
    keys claimed with ``INSERT ... ON CONFLICT DO NOTHING``. A key claimed meanwhile by
    another process (its insert waits for that transaction) rolls the batch back and runs
    it again, which then answers that key as a replay. A database error raises: nothing is
    stored.

    Items must carry distinct (tenant, idempotency key) pairs; the batcher
    (``service.deletion_requests.ingest``) holds repeats back for the next batch.
    """
    store = storage.for_session(session)
    for _ in range(RACE_ATTEMPTS):
        try:
            outcomes, created = _stage(store, items)
            session.commit()
        except IdempotencyRace:
            session.rollback()
            continue
        except BaseException:
            session.rollback()
            raise
        for answer in created:
            _log_accepted(answer)
        return outcomes
    raise Unavailable("idempotency keys kept racing with another process; retry")


def _stage(
    store: storage.BatchStorage, items: Sequence[Submission]
) -> tuple[list[Outcome], list[dict[str, Any]]]:
    """Everything :func:`create_batch` does before the commit: each item's outcome, and the
    answers of the requests it added."""
    outcomes: list[Outcome | None] = [None] * len(items)
    keyed = [i for i, item in enumerate(items) if item.idempotency_key is not None]
    if keyed:
        pairs = [(items[i].tenant_id, items[i].idempotency_key or "") for i in keyed]
        store.lock_keys(pairs)
        earlier = store.replays(pairs)
        for i, pair in zip(keyed, pairs, strict=True):
            first = earlier.get(pair)
            if first is not None:
                same = first.body_sha256 == items[i].body_sha256
                outcomes[i] = first.response if same else _reused()
    live = [i for i, outcome in enumerate(outcomes) if outcome is None]
    model_ids = sorted({items[i].spec.model_id for i in live})
    models = store.models(model_ids) if model_ids else {}
    wanted: list[tuple[str, str]] = []
    claimed: dict[str, set[int]] = {}  # model -> classes forgotten, on their way or in `items`
    by_subject: dict[int, list[str]] = {}  # item -> the training keys its subject resolved to
    subject_samples = _subject_samples(store, [items[i] for i in live], models)
    for i in live:
        item = items[i]
        model = models.get(item.spec.model_id)
        try:
            if model is None or model.tenant_id != item.tenant_id:
                raise NotFound("model", item.spec.model_id)
            if item.spec.sample_keys is not None:
                _check_key_list(item.spec.sample_keys)
                wanted += [(model.id, key) for key in item.spec.sample_keys]
            elif item.spec.class_labels is None:
                by_subject[i] = _subject_keys(subject_samples, model, item.spec.subject_id)
                wanted += [(model.id, key) for key in by_subject[i]]
            else:
                labels = item.spec.class_labels or []
                _check_classes(model.num_classes, labels)
                if model.id not in claimed:
                    claimed[model.id] = store.claimed_classes(model.id)
                _check_classes_left(model.num_classes, claimed[model.id], labels)
                claimed[model.id].update(labels)
        except DomainError as error:
            outcomes[i] = error
    found = store.samples(wanted) if wanted else {}
    now = utcnow()
    deadline = now + timedelta(days=get_settings().request_deadline_days)
    claims: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    created: list[dict[str, Any]] = []
    for i in live:
        if outcomes[i] is not None:
            continue
        item, spec = items[i], items[i].spec
        model = models[spec.model_id]
        try:
            if spec.sample_keys is not None or i in by_subject:
                keys = spec.sample_keys if spec.sample_keys is not None else by_subject[i]
                already, count = _checked_keys(model.id, keys, found), len(keys)
            else:
                keys, already = None, []
                count = store.class_count(model.dataset_id, spec.class_labels or [])
        except DomainError as error:
            outcomes[i] = error
            continue
        answer = _stored(store.session, rows, item, model, keys, already, count, now, deadline)
        outcomes[i] = answer
        created.append(answer)
        if item.idempotency_key is not None:
            claims.append(
                {
                    "tenant_id": item.tenant_id,
                    "key": item.idempotency_key,
                    "body_sha256": item.body_sha256,
                    "request_id": answer["id"],
                    "response": answer,
                    "created_at": now,
                }
            )
    claims.sort(key=lambda claim: (claim["tenant_id"], claim["key"]))
    if not store.write(rows, claims):
        raise IdempotencyRace
    assert all(outcome is not None for outcome in outcomes)
    return outcomes, created  # type: ignore[return-value]


@dataclass
class SubjectSamples:
    """What the subjects of a batch's subject-only requests resolve to, read at once."""

    recorded: set[str]  # datasets whose samples name subjects
    keys: dict[tuple[str, str], list[str]]  # (dataset, subject digest) -> training keys


def _subject_samples(
    store: storage.BatchStorage,
    items: Sequence[Submission],
    models: Mapping[str, storage.ModelFacts],
) -> SubjectSamples:
    """The training keys of every subject the items name alone (two queries for the whole
    batch, whatever its size)."""
    wanted: set[tuple[str, str]] = set()
    for item in items:
        model = models.get(item.spec.model_id)
        alone = item.spec.sample_keys is None and item.spec.class_labels is None
        if alone and model is not None and model.tenant_id == item.tenant_id:
            digest = subjects.subject_digest(model.subject_key, item.spec.subject_id)
            wanted.add((model.dataset_id, digest))
    if not wanted:
        return SubjectSamples(set(), {})
    datasets = sorted({dataset_id for dataset_id, _ in wanted})
    return SubjectSamples(store.record_subjects(datasets), store.subject_keys(sorted(wanted)))


def _subject_keys(found: SubjectSamples, model: storage.ModelFacts, subject: str) -> list[str]:
    """The training keys of ``subject`` in the model's dataset (by its keyed digest); 422
    when the dataset records no subjects."""
    if model.dataset_id not in found.recorded:
        message = (
            "this model's dataset records no subjects (register it with a manifest's "
            "'subject' column): name sample_keys or class_labels"
        )
        raise InvalidInput(message, [{"loc": ["body", "sample_keys"], "msg": message}])
    digest = subjects.subject_digest(model.subject_key, subject)
    keys = found.keys.get((model.dataset_id, digest), [])
    limit = get_settings().max_keys_per_request  # the bound of keys named one by one
    if len(keys) > limit:
        raise TooLarge(
            f"the subject has {len(keys)} training samples; at most {limit} per request "
            "(UNLEARN_MAX_KEYS_PER_REQUEST)",
            limit=limit,
        )
    return keys


def _reused() -> InvalidInput:
    return InvalidInput(
        "this Idempotency-Key was used with a different body",
        [{"loc": ["header", "Idempotency-Key"], "msg": "reused with a different body"}],
    )


def _stored(
    session: Session,
    rows: list[dict[str, Any]],
    item: Submission,
    model: storage.ModelFacts,
    keys: list[str] | None,
    already: list[str],
    count: int,
    now: datetime,
    deadline: datetime,
) -> dict[str, Any]:
    """One checked request, its JSON. A pending one becomes a row of ``rows`` (written
    with its batch-mates by the storage); one with nothing left to do (every key forgotten
    by earlier requests) is completed at once through the session (its move, callback and
    audit entry)."""
    spec = item.spec
    row = {
        "id": new_id(),
        "tenant_id": item.tenant_id,
        "model_id": model.id,
        "subject_digest": subjects.subject_digest(model.subject_key, spec.subject_id),
        "sample_keys": keys,
        "class_labels": spec.class_labels,
        "already_forgotten": already,
        "sample_count": count,
        "callback_url": str(spec.callback_url) if spec.callback_url else None,
        "status": RequestStatus.PENDING.value,
        "job_id": None,
        "result_version": None,
        "error": None,
        "created_at": now,
        "updated_at": now,
        "due_at": deadline,
        "completed_at": None,
    }
    if keys is None or len(already) < len(keys):
        rows.append(row)  # its first event is written with it (the storage's write)
        pending = SimpleNamespace(status=RequestStatus.PENDING, at=now, detail=None)
        return to_read(SimpleNamespace(**row), [pending]).model_dump(mode="json")  # type: ignore[arg-type,list-item]
    first = RequestEvent(request_id=row["id"], status=RequestStatus.PENDING, at=now)
    request = DeletionRequest(**row)
    session.add_all([request, first])
    request.result_version = model.head_version
    log_received(session, request)
    detail = "already forgotten" if keys else "nothing to forget: no training sample of the subject"
    done = move_request(session, request, RequestStatus.COMPLETED, detail=detail, at=now)
    erasable = bool(erasure.erasable_requests(session, [request]))
    return to_read(request, [first, done], source_erasable=erasable).model_dump(mode="json")


def _log_accepted(answer: dict[str, Any]) -> None:
    # The subject as its digest only: logs never carry personal data (service.logs).
    log.info(
        "deletion request accepted",
        extra={
            "deletion_request_id": answer["id"],
            "model_id": answer["model_id"],
            "subject_digest": answer["subject_digest"],
            "sample_count": answer["sample_count"],
        },
    )


def log_request(session: Session, request: DeletionRequest, action: str, **payload: Any) -> None:
    """Append ``deletion_request.<action>`` for this request to the audit log."""
    audit_log.append(
        session,
        tenant_id=request.tenant_id,
        action=f"deletion_request.{action}",
        subject_type="deletion_request",
        subject_id=request.id,
        payload=payload,
    )


def log_received(session: Session, request: DeletionRequest) -> None:
    """The request's first entry in the audit log, with digests of what it asked.

    Written when the request is batched (or cancelled, or completed at once), not on
    receipt: appends are serialised on the chain, and keeping them off the ingest path
    lets many requests be accepted at once. The entry carries the receipt time.
    """
    keys = request.sample_keys
    log_request(
        session,
        request,
        "received",
        model_id=request.model_id,
        received_at=request.created_at.isoformat(),
        subject_digest=request.subject_digest,
        keys_sha256=digest("\n".join(sorted(keys))) if keys is not None else None,
        class_labels=request.class_labels,
        sample_count=request.sample_count,
    )


def _check_key_list(keys: list[str]) -> None:
    """413 over the per-request limit, 422 for duplicated keys (no database needed)."""
    limit = get_settings().max_keys_per_request
    if len(keys) > limit:
        raise TooLarge(f"{len(keys)} sample keys; at most {limit} per request", limit=limit)
    duplicated = sorted(key for key, n in Counter(keys).items() if n > 1)
    if duplicated:
        raise _key_problem("duplicated sample keys", "duplicated", duplicated)


def _checked_keys(
    model_id: str, keys: list[str], found: dict[tuple[str, str], storage.SampleFacts]
) -> list[str]:
    """The keys this model already forgot; 422 for unknown or never-trained-on keys."""
    unknown = [key for key in keys if (model_id, key) not in found]
    if unknown:
        raise _key_problem("unknown sample keys", "unknown", unknown)
    not_training = [key for key in keys if found[model_id, key].split != Split.TRAIN]
    if not_training:
        raise _key_problem(
            "sample keys in the holdout or test split (never trained on)",
            "not_training",
            not_training,
        )
    return [key for key in keys if found[model_id, key].forgotten]


def _key_problem(title: str, field: str, keys: list[str]) -> InvalidInput:
    listed = keys[:MAX_LISTED]
    return InvalidInput(
        f"{len(keys)} {title}",
        [{"loc": ["body", "sample_keys"], "msg": f"{title}: {key}"} for key in listed],
        **{field: listed},
    )


def _check_classes(num_classes: int, labels: list[int]) -> None:
    bad = sorted({label for label in labels if not 0 <= label < num_classes})
    if bad:
        raise InvalidInput(
            f"class labels out of range 0..{num_classes - 1}: {bad}",
            [{"loc": ["body", "class_labels"], "msg": f"unknown class {label}"} for label in bad],
        )
    if len(set(labels)) != len(labels):
        raise InvalidInput("duplicated class labels")
    if len(set(labels)) >= num_classes:
        raise InvalidInput("a model cannot forget every class")


def _check_classes_left(num_classes: int, claimed: set[int], labels: list[int]) -> None:
    """A model keeps at least one class: with the classes it forgot and those its accepted
    requests are forgetting, these labels must not cover all of them. (Two submissions
    racing past this check meet the same rule at batch time, where the later one fails
    alone: service.jobs.lifecycle.)"""
    if len(claimed | set(labels)) >= num_classes:
        raise Conflict(
            f"deleting classes {sorted(labels)} would leave the model no class: its other "
            f"requests have forgotten or are forgetting {sorted(claimed)} of {num_classes}"
        )


def get_or_raise(
    session: Session, *, tenant_id: str, request_id: str, lock: bool = False
) -> DeletionRequest:
    return lookup.get_or_raise(
        session,
        DeletionRequest,
        request_id,
        tenant_id=tenant_id,
        what="deletion request",
        lock=lock,
    )


def filtered(
    session: Session,
    *,
    tenant_id: str,
    model_id: str | None,
    status: RequestStatus | None,
    subject_id: str | None,
) -> Select[Any]:
    """The tenant's requests, narrowed by what a list or the register is asked for (a
    subject by its keyed digest)."""
    statement = select(DeletionRequest).where(DeletionRequest.tenant_id == tenant_id)
    if model_id:
        statement = statement.where(DeletionRequest.model_id == model_id)
    if status:
        statement = statement.where(DeletionRequest.status == status)
    if subject_id:
        key = subjects.tenant_key(session, tenant_id)
        statement = statement.where(
            DeletionRequest.subject_digest == subjects.subject_digest(key, subject_id)
        )
    return statement


def list_page(
    session: Session,
    *,
    tenant_id: str,
    model_id: str | None,
    status: RequestStatus | None,
    subject_id: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[DeletionRequestRead], str | None]:
    statement = filtered(
        session, tenant_id=tenant_id, model_id=model_id, status=status, subject_id=subject_id
    )
    rows, next_cursor = paginate(
        session,
        statement,
        order=(DeletionRequest.created_at, DeletionRequest.id),
        limit=limit,
        cursor=cursor,
    )
    return read_many(session, rows), next_cursor


def cancel(session: Session, *, tenant_id: str, request_id: str) -> DeletionRequestRead:
    request = get_or_raise(session, tenant_id=tenant_id, request_id=request_id, lock=True)
    if request.status != RequestStatus.PENDING:
        raise Conflict(f"only pending requests can be cancelled; this one is {request.status}")
    move_request(session, request, RequestStatus.CANCELLED)
    log_received(session, request)
    log_request(session, request, "cancelled")
    session.commit()
    return read_many(session, [request])[0]


def retry(session: Session, *, tenant_id: str, request_id: str) -> DeletionRequestRead:
    request = get_or_raise(session, tenant_id=tenant_id, request_id=request_id, lock=True)
    if request.status != RequestStatus.FAILED:
        raise Conflict(f"only failed requests can be retried; this one is {request.status}")
    request.job_id, request.error = None, None
    move_request(session, request, RequestStatus.PENDING, detail="retried by an admin")
    log_request(session, request, "retried")
    session.commit()
    return read_many(session, [request])[0]


def _history(session: Session, request_ids: list[str]) -> dict[str, list[RequestEvent]]:
    events: dict[str, list[RequestEvent]] = {request_id: [] for request_id in request_ids}
    for event in session.scalars(
        select(RequestEvent)
        .where(RequestEvent.request_id.in_(request_ids))
        .order_by(RequestEvent.id)
    ):
        events[event.request_id].append(event)
    return events


def read_many(session: Session, requests: list[DeletionRequest]) -> list[DeletionRequestRead]:
    history = _history(session, [request.id for request in requests])
    erasable = erasure.erasable_requests(session, requests)
    return [
        to_read(request, history[request.id], source_erasable=request.id in erasable)
        for request in requests
    ]


def to_read(
    request: DeletionRequest, history: list[RequestEvent], *, source_erasable: bool = False
) -> DeletionRequestRead:
    return DeletionRequestRead(
        id=request.id,
        model_id=request.model_id,
        subject_digest=request.subject_digest,
        status=RequestStatus(request.status),
        sample_count=request.sample_count,
        sample_keys=request.sample_keys,
        class_labels=request.class_labels,
        already_forgotten=request.already_forgotten,
        callback_url=request.callback_url,
        created_at=request.created_at,
        due_at=request.due_at,
        completed_at=request.completed_at,
        job_id=request.job_id,
        result_version=request.result_version,
        error=request.error,
        source_erasable=source_erasable,
        history=[
            HistoryEntry(status=RequestStatus(e.status), at=e.at, detail=e.detail) for e in history
        ],
    )
