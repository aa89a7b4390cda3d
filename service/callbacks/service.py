"""Callback deliveries: one row per status change of a request that has a ``callback_url``,
written in the transaction that changes the status (so a change is never announced
unless it committed, and never lost if it did), nudged to a worker after the commit, and
re-sent by the sweeper while it is due (docs/architecture.md, rule 1). Each attempt is
recorded; a failed one is retried with exponential backoff until
``UNLEARN_CALLBACK_MAX_ATTEMPTS``. Receivers get at-least-once delivery and can drop
repeats by ``delivery_id``.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service import audit_log, lookup, outbox
from service.callbacks.schemas import AttemptRead, DeliveryRead, SecretRead
from service.callbacks.signing import new_secret
from service.db import on_commit, session_scope
from service.settings import get_settings
from service.tables import (
    CallbackAttempt,
    CallbackDelivery,
    DeletionRequest,
    Tenant,
    new_id,
    utcnow,
)

__all__ = [
    "schedule",
    "deliveries_of",
    "secret_of",
    "rotate_secret",
    "signing_secrets",
    "claim",
    "record",
    "resend_due",
]

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
EVENT = "deletion_request.status_changed"
CLAIM_SECONDS = 120  # an attempt in flight is not re-sent by the sweeper meanwhile
MAX_BACKOFF_SECONDS = 3600
SECRET_GRACE = timedelta(hours=24)


def schedule(session: Session, request: DeletionRequest, status: str, at: datetime) -> None:
    """A delivery of this status change, in the caller's transaction."""
    if not request.callback_url:
        return
    delivery = CallbackDelivery(
        id=new_id(),
        tenant_id=request.tenant_id,
        request_id=request.id,
        url=request.callback_url,
        status=PENDING,
        attempts=0,
        next_attempt_at=at,
        created_at=at,
        payload={},
    )
    delivery.payload = {
        "event": EVENT,
        "delivery_id": delivery.id,
        "request_id": request.id,
        "model_id": request.model_id,
        "status": status,
        "at": at.isoformat(),
        "result_version": request.result_version,
        "error": request.error,
    }
    session.add(delivery)
    delivery_id = delivery.id
    on_commit(session, lambda: outbox.enqueue_callback(delivery_id))


def deliveries_of(session: Session, *, tenant_id: str, request_id: str) -> list[DeliveryRead]:
    """A request's deliveries, oldest first, each with its attempts."""
    lookup.get_or_raise(
        session, DeletionRequest, request_id, tenant_id=tenant_id, what="deletion request"
    )
    deliveries = session.scalars(
        select(CallbackDelivery)
        .where(CallbackDelivery.request_id == request_id)
        .order_by(CallbackDelivery.created_at, CallbackDelivery.id)
    ).all()
    attempts: dict[str, list[AttemptRead]] = {d.id: [] for d in deliveries}
    for attempt in session.scalars(
        select(CallbackAttempt)
        .where(CallbackAttempt.delivery_id.in_(list(attempts)))
        .order_by(CallbackAttempt.id)
    ):
        attempts[attempt.delivery_id].append(AttemptRead.model_validate(attempt))
    return [
        DeliveryRead(
            id=d.id,
            status=d.status,
            event_status=d.payload.get("status", ""),
            url=d.url,
            created_at=d.created_at,
            attempts=attempts[d.id],
            next_attempt_at=d.next_attempt_at if d.status == PENDING else None,
            finished_at=d.finished_at,
        )
        for d in deliveries
    ]


def _tenant(session: Session, tenant_id: str, *, lock: bool = False) -> Tenant:
    statement = select(Tenant).where(Tenant.id == tenant_id)
    tenant = session.scalar(statement.with_for_update() if lock else statement)
    if tenant is None:
        raise LookupError(f"tenant {tenant_id} is gone")
    return tenant


def _secret_read(tenant: Tenant) -> SecretRead:
    assert tenant.callback_secret is not None
    return SecretRead(
        secret=tenant.callback_secret,
        previous_valid_until=tenant.previous_callback_secret_until
        if tenant.previous_callback_secret
        else None,
    )


def secret_of(session: Session, *, tenant_id: str) -> SecretRead:
    """The tenant's signing secret, made on first use."""
    tenant = _tenant(session, tenant_id, lock=True)
    if tenant.callback_secret is None:
        tenant.callback_secret = new_secret()
        session.commit()
    return _secret_read(tenant)


def rotate_secret(session: Session, *, tenant_id: str) -> SecretRead:
    """A new signing secret; the old one also signs for SECRET_GRACE so receivers can
    switch without refusing deliveries."""
    tenant = _tenant(session, tenant_id, lock=True)
    if tenant.callback_secret is not None:
        tenant.previous_callback_secret = tenant.callback_secret
        tenant.previous_callback_secret_until = utcnow() + SECRET_GRACE
    tenant.callback_secret = new_secret()
    audit_log.append(
        session,
        tenant_id=tenant_id,
        action="callback_secret.rotated",
        subject_type="tenant",
        subject_id=tenant_id,
        payload={},
    )
    session.commit()
    return _secret_read(tenant)


def signing_secrets(session: Session, tenant_id: str) -> list[str]:
    """The secrets a delivery is signed with now (the current one first)."""
    tenant = _tenant(session, tenant_id)
    if tenant.callback_secret is None:  # the first delivery of this tenant makes it
        tenant = _tenant(session, tenant_id, lock=True)
        tenant.callback_secret = tenant.callback_secret or new_secret()
    secrets_in_use = [tenant.callback_secret]
    until = tenant.previous_callback_secret_until
    if tenant.previous_callback_secret and until is not None and until > utcnow():
        secrets_in_use.append(tenant.previous_callback_secret)
    return secrets_in_use


def claim(delivery_id: str) -> tuple[CallbackDelivery, list[str]] | None:
    """Take a due delivery for one attempt: (the delivery, its signing secrets), or None
    when it is not due (delivered, given up, or another attempt is in flight)."""
    with session_scope() as session:
        delivery = session.scalar(
            select(CallbackDelivery)
            .where(CallbackDelivery.id == delivery_id)
            .with_for_update(skip_locked=True)
        )
        now = utcnow()
        if delivery is None or delivery.status != PENDING or delivery.next_attempt_at > now:
            return None
        delivery.attempts += 1
        delivery.next_attempt_at = now + timedelta(seconds=CLAIM_SECONDS)
        secrets_in_use = signing_secrets(session, delivery.tenant_id)
        session.flush()
        session.expunge(delivery)
        return delivery, secrets_in_use


def record(
    delivery: CallbackDelivery,
    *,
    response_status: int | None,
    error: str | None,
    seconds: float,
    final: bool = False,
) -> str:
    """Record an attempt; the delivery is delivered (2xx), retried later, or given up
    (attempts spent, or ``final``: a target that policy refuses). Returns its status."""
    settings = get_settings()
    now = utcnow()
    ok = response_status is not None and 200 <= response_status < 300
    if ok:
        status = DELIVERED
    elif final or delivery.attempts >= settings.callback_max_attempts:
        status = FAILED
    else:
        status = PENDING
    backoff = min(
        settings.callback_retry_seconds * 2 ** (delivery.attempts - 1), MAX_BACKOFF_SECONDS
    )
    values: dict[str, Any] = {"status": status}
    if status == PENDING:
        values["next_attempt_at"] = now + timedelta(seconds=backoff * random.uniform(0.8, 1.2))
    else:
        values["finished_at"] = now
    with session_scope() as session:
        session.add(
            CallbackAttempt(
                delivery_id=delivery.id,
                number=delivery.attempts,
                at=now,
                response_status=response_status,
                error=error,
                seconds=seconds,
            )
        )
        session.execute(
            update(CallbackDelivery).where(CallbackDelivery.id == delivery.id).values(**values)
        )
    return status


def resend_due(limit: int = 1000) -> int:
    """Nudge every pending delivery whose next attempt is due (the sweeper's part)."""
    with session_scope() as session:
        due = session.scalars(
            select(CallbackDelivery.id)
            .where(CallbackDelivery.status == PENDING, CallbackDelivery.next_attempt_at <= utcnow())
            .order_by(CallbackDelivery.next_attempt_at)
            .limit(limit)
        ).all()
    for delivery_id in due:
        outbox.enqueue_callback(delivery_id)
    return len(due)
