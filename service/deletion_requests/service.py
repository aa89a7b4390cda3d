"""Deletion requests: validated against the model's dataset, idempotent, cancellable."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import audit_log, lookup
from service.deletion_requests.schemas import (
    BulkRejection,
    BulkResult,
    DeletionRequestCreate,
    DeletionRequestRead,
    HistoryEntry,
)
from service.enums import RequestStatus, Split
from service.errors import Conflict, DomainError, InvalidInput, TooLarge, client_error
from service.pagination import paginate
from service.settings import get_settings
from service.states import move_request
from service.tables import (
    Dataset,
    DeletionRequest,
    IdempotencyKey,
    Model,
    RequestEvent,
    Sample,
    Tombstone,
    new_id,
    utcnow,
)

__all__ = [
    "create",
    "create_many",
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
MAX_BULK_KEY = MAX_IDEMPOTENCY_KEY - 4  # room for "#<index>"


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def body_digest(spec: DeletionRequestCreate) -> str:
    return digest(json.dumps(spec.model_dump(mode="json"), sort_keys=True))


def create(
    session: Session,
    *,
    tenant_id: str,
    spec: DeletionRequestCreate,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Create a request and answer its JSON; a repeated idempotency key answers the first."""
    if idempotency_key is not None:
        if not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise InvalidInput(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
        previous = _idempotent_answer(session, tenant_id, idempotency_key, body_digest(spec))
        if previous is not None:
            return previous
    model = lookup.get_or_raise(session, Model, spec.model_id, tenant_id=tenant_id, what="model")
    if spec.sample_keys is not None:
        keys, already, count = _checked_keys(session, model, spec.sample_keys)
    else:
        keys, already, count = None, [], _checked_classes(session, model, spec.class_labels or [])
    now = utcnow()
    request = DeletionRequest(
        id=new_id(),
        tenant_id=tenant_id,
        model_id=model.id,
        subject_id=spec.subject_id,
        sample_keys=keys,
        class_labels=spec.class_labels,
        already_forgotten=already,
        sample_count=count,
        callback_url=str(spec.callback_url) if spec.callback_url else None,
        status=RequestStatus.PENDING,
        created_at=now,
        updated_at=now,
        due_at=now + timedelta(days=get_settings().request_deadline_days),
    )
    session.add(request)
    history = [RequestEvent(request_id=request.id, status=RequestStatus.PENDING, at=now)]
    session.add(history[0])
    if keys is not None and len(already) == len(keys):
        # Every key was forgotten by earlier requests: nothing left to do.
        request.result_version = model.head_version
        log_received(session, request)
        history.append(
            move_request(
                session, request, RequestStatus.COMPLETED, detail="already forgotten", at=now
            )
        )
    answer = to_read(request, history).model_dump(mode="json")
    if idempotency_key is not None:
        session.add(
            IdempotencyKey(
                tenant_id=tenant_id,
                key=idempotency_key,
                body_sha256=body_digest(spec),
                request_id=request.id,
                response=answer,
            )
        )
    try:
        session.commit()
    except IntegrityError:
        # A concurrent call with the same idempotency key won: answer as it did.
        session.rollback()
        if idempotency_key is None:
            raise
        previous = _idempotent_answer(session, tenant_id, idempotency_key, body_digest(spec))
        if previous is None:
            raise
        return previous
    # The subject as a digest only: logs never carry personal data (service.logs).
    log.info(
        "deletion request accepted",
        extra={
            "deletion_request_id": request.id,
            "model_id": model.id,
            "subject_sha256": digest(spec.subject_id),
            "sample_count": count,
        },
    )
    return answer


def create_many(
    session: Session,
    *,
    tenant_id: str,
    items: list[dict[str, Any]],
    idempotency_key: str | None = None,
) -> BulkResult:
    """``:bulk``: each item validated and created in its own transaction; the answer lists
    what was accepted and, by index, the problem of each item that was not. Once an item
    is stored the call answers 200 whatever later items do, so the answer always says
    what was stored. With an ``Idempotency-Key``, item ``i`` is idempotent under
    ``<key>#<i>``: retrying the whole call stores nothing twice."""
    limit = get_settings().bulk_max_requests
    if len(items) > limit:
        raise TooLarge(f"{len(items)} requests; at most {limit} per bulk call")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_BULK_KEY:
        raise InvalidInput(f"Idempotency-Key must be 1 to {MAX_BULK_KEY} characters on :bulk")
    accepted, rejected = [], []
    for index, raw in enumerate(items):
        try:
            try:
                spec = DeletionRequestCreate.model_validate(raw)
            except ValidationError as error:
                raise InvalidInput.from_errors(error.errors()) from None
            item_key = f"{idempotency_key}#{index}" if idempotency_key is not None else None
            answer = create(session, tenant_id=tenant_id, spec=spec, idempotency_key=item_key)
            accepted.append(DeletionRequestRead.model_validate(answer))
        except Exception as error:
            session.rollback()
            problem = error if isinstance(error, DomainError) else client_error(error)
            if problem is None:
                raise
            rejected.append(BulkRejection(index=index, problem=problem.problem()))
    return BulkResult(accepted=accepted, rejected=rejected)


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
        subject_sha256=digest(request.subject_id),
        keys_sha256=digest("\n".join(sorted(keys))) if keys is not None else None,
        class_labels=request.class_labels,
        sample_count=request.sample_count,
    )


def _idempotent_answer(
    session: Session, tenant_id: str, key: str, body_sha256: str
) -> dict[str, Any] | None:
    record = session.get(IdempotencyKey, (tenant_id, key))
    if record is None:
        return None
    if record.body_sha256 != body_sha256:
        raise InvalidInput(
            "this Idempotency-Key was used with a different body",
            [{"loc": ["header", "Idempotency-Key"], "msg": "reused with a different body"}],
        )
    return record.response


def _checked_keys(
    session: Session, model: Model, keys: list[str]
) -> tuple[list[str], list[str], int]:
    """(keys, the ones this model already forgot, count); 413/422 on bad lists."""
    limit = get_settings().max_keys_per_request
    if len(keys) > limit:
        raise TooLarge(f"{len(keys)} sample keys; at most {limit} per request", limit=limit)
    duplicated = sorted(key for key, n in Counter(keys).items() if n > 1)
    if duplicated:
        raise _key_problem("duplicated sample keys", "duplicated", duplicated)
    rows = session.execute(
        select(Sample.key, Sample.split, Tombstone.id.is_not(None).label("forgotten"))
        .outerjoin(Tombstone, (Tombstone.sample_id == Sample.id) & (Tombstone.model_id == model.id))
        .where(Sample.dataset_id == model.dataset_id, Sample.key.in_(keys))
    ).all()
    found = {row.key: row for row in rows}
    unknown = [key for key in keys if key not in found]
    if unknown:
        raise _key_problem("unknown sample keys", "unknown", unknown)
    not_training = [key for key in keys if found[key].split != Split.TRAIN]
    if not_training:
        raise _key_problem(
            "sample keys in the holdout or test split (never trained on)",
            "not_training",
            not_training,
        )
    already = [key for key in keys if found[key].forgotten]
    return keys, already, len(keys)


def _key_problem(title: str, field: str, keys: list[str]) -> InvalidInput:
    listed = keys[:MAX_LISTED]
    return InvalidInput(
        f"{len(keys)} {title}",
        [{"loc": ["body", "sample_keys"], "msg": f"{title}: {key}"} for key in listed],
        **{field: listed},
    )


def _checked_classes(session: Session, model: Model, labels: list[int]) -> int:
    dataset = session.get(Dataset, model.dataset_id)
    assert dataset is not None
    bad = sorted({label for label in labels if not 0 <= label < dataset.num_classes})
    if bad:
        raise InvalidInput(
            f"class labels out of range 0..{dataset.num_classes - 1}: {bad}",
            [{"loc": ["body", "class_labels"], "msg": f"unknown class {label}"} for label in bad],
        )
    if len(set(labels)) != len(labels):
        raise InvalidInput("duplicated class labels")
    if len(set(labels)) >= dataset.num_classes:
        raise InvalidInput("a model cannot forget every class")
    return int(
        session.scalar(
            select(func.count()).where(
                Sample.dataset_id == model.dataset_id,
                Sample.split == Split.TRAIN,
                Sample.label.in_(labels),
            )
        )
        or 0
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
    statement = select(DeletionRequest).where(DeletionRequest.tenant_id == tenant_id)
    if model_id:
        statement = statement.where(DeletionRequest.model_id == model_id)
    if status:
        statement = statement.where(DeletionRequest.status == status)
    if subject_id:
        statement = statement.where(DeletionRequest.subject_id == subject_id)
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
    return [to_read(request, history[request.id]) for request in requests]


def to_read(request: DeletionRequest, history: list[RequestEvent]) -> DeletionRequestRead:
    return DeletionRequestRead(
        id=request.id,
        model_id=request.model_id,
        subject_id=request.subject_id,
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
        history=[
            HistoryEntry(status=RequestStatus(e.status), at=e.at, detail=e.detail) for e in history
        ],
    )
