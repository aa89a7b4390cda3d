"""Deliveries: one row per event to announce to one URL, written in the transaction of the
event (so an event is never announced unless it committed, and never lost if it did),
nudged to a worker after the commit, and re-sent by the sweeper while it is due
(docs/architecture.md, rule 1). Two kinds of URL receive them through this one mechanism:
a request's ``callback_url`` (its status changes, signed with the tenant's secret) and the
tenant's webhook subscriptions (the event types they chose, signed with their own secret).

Each attempt is recorded; a failed one is retried with exponential backoff
(``UNLEARN_CALLBACK_RETRY_SECONDS`` doubled per attempt, at most ``MAX_BACKOFF_SECONDS``,
+-20% jitter) until ``UNLEARN_CALLBACK_RETRY_HOURS`` after the event (72 by default: the
last attempt is made at the end of that window) or ``UNLEARN_CALLBACK_MAX_ATTEMPTS``,
whichever comes first. Receivers get at-least-once delivery and drop repeats by
``webhook-id``.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service import audit_log, lookup, outbox
from service.callbacks import subscriptions
from service.callbacks.schemas import AttemptRead, DeliveryRead, SecretRead
from service.callbacks.signing import SECRET_GRACE, in_use, new_secret
from service.datasets import erasure
from service.db import on_commit, session_scope
from service.enums import RequestStatus, WebhookEvent
from service.pagination import paginate
from service.settings import get_settings
from service.tables import (
    CallbackAttempt,
    CallbackDelivery,
    DeletionRequest,
    Tenant,
    WebhookSubscription,
    new_id,
    utcnow,
)

__all__ = [
    "schedule",
    "emit",
    "deliveries_of",
    "deliveries_of_subscription",
    "redeliver",
    "secret_of",
    "rotate_secret",
    "claim",
    "record",
    "resend_due",
    "retry_delays",
    "message_id",
]

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
# What an attempt's outcome is counted as (service.metrics.CALLBACK_ATTEMPTS).
OUTCOME_DELIVERED, OUTCOME_RETRYING = "delivered", "retrying"
OUTCOME_GAVE_UP, OUTCOME_REFUSED = "gave_up", "refused"
CLAIM_SECONDS = 120  # an attempt in flight is not re-sent by the sweeper meanwhile
MAX_BACKOFF_SECONDS = 6 * 3600


def _deliver_later(
    session: Session,
    *,
    tenant_id: str,
    url: str,
    event: WebhookEvent,
    fields: dict[str, Any],
    at: datetime,
    request_id: str | None = None,
    subscription_id: str | None = None,
) -> None:
    delivery = CallbackDelivery(
        id=new_id(),
        tenant_id=tenant_id,
        request_id=request_id,
        subscription_id=subscription_id,
        event=event.value,
        url=url,
        status=PENDING,
        attempts=0,
        next_attempt_at=at,
        created_at=at,
    )
    delivery.payload = {
        "event": event.value,
        "delivery_id": delivery.id,
        "at": at.isoformat(),
        **fields,
    }
    session.add(delivery)
    delivery_id = delivery.id
    on_commit(session, lambda: outbox.enqueue_callback(delivery_id))


def schedule(session: Session, request: DeletionRequest, status: str, at: datetime) -> None:
    """The deliveries of a request's status change, in the caller's transaction: to its
    ``callback_url`` and to the subscriptions that asked for request events. Nothing is
    computed for a request nobody listens to (a batch moves many)."""
    event = WebhookEvent.REQUEST_STATUS_CHANGED
    listened = request.callback_url or subscriptions.matching(
        session, tenant_id=request.tenant_id, model_id=request.model_id, event=event
    )
    if not listened:
        return
    fields = {
        "request_id": request.id,
        "model_id": request.model_id,
        "status": status,
        "result_version": request.result_version,
        "error": request.error,
        "source_erasable": status == RequestStatus.COMPLETED
        and bool(erasure.erasable_requests(session, [request])),
    }
    if request.callback_url:
        _deliver_later(
            session,
            tenant_id=request.tenant_id,
            url=request.callback_url,
            event=event,
            fields=fields,
            at=at,
            request_id=request.id,
        )
    emit(
        session,
        tenant_id=request.tenant_id,
        model_id=request.model_id,
        event=event,
        fields=fields,
        at=at,
        request_id=request.id,
    )


def emit(
    session: Session,
    *,
    tenant_id: str,
    model_id: str,
    event: WebhookEvent,
    fields: dict[str, Any],
    at: datetime | None = None,
    request_id: str | None = None,
) -> int:
    """A delivery of ``event`` (about ``model_id``) to every subscription of the tenant that
    asked for it, in the caller's transaction; returns how many."""
    at = at or utcnow()
    matching = subscriptions.matching(session, tenant_id=tenant_id, model_id=model_id, event=event)
    for subscription in matching:
        _deliver_later(
            session,
            tenant_id=tenant_id,
            url=subscription.url,
            event=event,
            fields={"model_id": model_id, **fields},
            at=at,
            request_id=request_id,
            subscription_id=subscription.id,
        )
    return len(matching)


def _reads(session: Session, deliveries: list[CallbackDelivery]) -> list[DeliveryRead]:
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
            event=d.event,
            status=d.status,
            event_status=d.payload.get("status"),
            url=d.url,
            request_id=d.request_id,
            subscription_id=d.subscription_id,
            redelivery_of=d.redelivery_of,
            created_at=d.created_at,
            attempts=attempts[d.id],
            next_attempt_at=d.next_attempt_at if d.status == PENDING else None,
            finished_at=d.finished_at,
        )
        for d in deliveries
    ]


def deliveries_of(session: Session, *, tenant_id: str, request_id: str) -> list[DeliveryRead]:
    """A request's deliveries to its ``callback_url``, oldest first, each with its attempts."""
    lookup.get_or_raise(
        session, DeletionRequest, request_id, tenant_id=tenant_id, what="deletion request"
    )
    deliveries = session.scalars(
        select(CallbackDelivery)
        .where(
            CallbackDelivery.request_id == request_id, CallbackDelivery.subscription_id.is_(None)
        )
        .order_by(CallbackDelivery.created_at, CallbackDelivery.id)
    ).all()
    return _reads(session, list(deliveries))


def deliveries_of_subscription(
    session: Session, *, tenant_id: str, subscription_id: str, limit: int, cursor: str | None
) -> tuple[list[DeliveryRead], str | None]:
    """A page of a subscription's deliveries, newest first, each with its attempts."""
    subscriptions.get_or_raise(session, tenant_id=tenant_id, subscription_id=subscription_id)
    statement = select(CallbackDelivery).where(CallbackDelivery.subscription_id == subscription_id)
    order = (CallbackDelivery.created_at, CallbackDelivery.id)
    rows, next_cursor = paginate(session, statement, order=order, limit=limit, cursor=cursor)
    return _reads(session, rows), next_cursor


def redeliver(session: Session, *, tenant_id: str, delivery_id: str) -> DeliveryRead:
    """A fresh delivery of a delivery's payload to the same URL (a receiver that lost it,
    or one that was down past the retry window). The payload is the same, ``delivery_id``
    included, and so is the ``webhook-id`` header: a receiver that did process it drops it."""
    original = lookup.get_or_raise(
        session, CallbackDelivery, delivery_id, tenant_id=tenant_id, what="delivery"
    )
    subscription = (
        session.get(WebhookSubscription, original.subscription_id)
        if original.subscription_id
        else None
    )
    now = utcnow()
    copy = CallbackDelivery(
        id=new_id(),
        tenant_id=tenant_id,
        request_id=original.request_id,
        subscription_id=original.subscription_id,
        event=original.event,
        redelivery_of=original.redelivery_of or original.id,
        url=subscription.url if subscription else original.url,  # where it points now
        payload=dict(original.payload),
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(copy)
    audit_log.append(
        session,
        tenant_id=tenant_id,
        action="callback_delivery.redelivered",
        subject_type="callback_delivery",
        subject_id=original.id,
        payload={"delivery_id": copy.id, "event": copy.event},
    )
    copy_id = copy.id
    on_commit(session, lambda: outbox.enqueue_callback(copy_id))
    session.commit()
    return _reads(session, [copy])[0]


def message_id(delivery: CallbackDelivery) -> str:
    """The ``webhook-id`` of a delivery: its own id, or the original's for a redelivery."""
    return delivery.redelivery_of or delivery.id


def _tenant(session: Session, tenant_id: str, *, lock: bool = False) -> Tenant:
    statement = select(Tenant).where(Tenant.id == tenant_id)
    tenant = session.scalar(statement.with_for_update() if lock else statement)
    if tenant is None:
        raise LookupError(f"tenant {tenant_id} is gone")
    return tenant


def secret_of(session: Session, *, tenant_id: str) -> SecretRead:
    """The tenant's signing secret (of ``callback_url`` deliveries), made on first use."""
    tenant = _tenant(session, tenant_id, lock=True)
    if tenant.callback_secret is None:
        tenant.callback_secret = new_secret()
        session.commit()
    return SecretRead.of(
        tenant.callback_secret,
        tenant.previous_callback_secret,
        tenant.previous_callback_secret_until,
    )


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
    return SecretRead.of(
        tenant.callback_secret,
        tenant.previous_callback_secret,
        tenant.previous_callback_secret_until,
    )


def _signing_secrets(session: Session, delivery: CallbackDelivery) -> list[str]:
    """The secrets a delivery is signed with now (the current one first): its
    subscription's, or the tenant's for a ``callback_url``."""
    if delivery.subscription_id is not None:
        subscription = session.get(WebhookSubscription, delivery.subscription_id)
        if subscription is None:
            raise LookupError(f"subscription {delivery.subscription_id} is gone")
        return in_use(
            subscription.secret, subscription.previous_secret, subscription.previous_secret_until
        )
    tenant = _tenant(session, delivery.tenant_id)
    if tenant.callback_secret is None:  # the first delivery of this tenant makes it
        tenant = _tenant(session, delivery.tenant_id, lock=True)
        tenant.callback_secret = tenant.callback_secret or new_secret()
    return in_use(
        tenant.callback_secret,
        tenant.previous_callback_secret,
        tenant.previous_callback_secret_until,
    )


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
        if delivery.subscription_id:  # a subscription moved since: where it points now
            moved = session.get(WebhookSubscription, delivery.subscription_id)
            if moved is not None:
                delivery.url = moved.url
        secrets_now = _signing_secrets(session, delivery)
        session.flush()
        session.expunge(delivery)
        return delivery, secrets_now


def _backoff(attempts: int) -> float:
    """The delay after the ``attempts``-th failed attempt, before jitter."""
    first = get_settings().callback_retry_seconds
    return float(min(first * 2 ** min(attempts - 1, 60), MAX_BACKOFF_SECONDS))


def retry_delays() -> list[float]:
    """The schedule without jitter: seconds from the event to each attempt (the first at
    0), as the settings make it. docs/operations.md prints it for the defaults."""
    settings = get_settings()
    window = settings.callback_retry_hours * 3600
    at, times = 0.0, [0.0]
    while len(times) < settings.callback_max_attempts and at < window:
        at = min(at + _backoff(len(times)), window)
        times.append(at)
    return times


def record(
    delivery: CallbackDelivery,
    *,
    response_status: int | None,
    error: str | None,
    seconds: float,
    final: bool = False,
) -> str:
    """Record an attempt; the delivery is delivered (2xx), retried later, or given up
    (attempts or the retry window spent, or ``final``: a target that policy refuses).
    Returns the attempt's outcome: delivered, retrying, gave_up or refused."""
    settings = get_settings()
    now = utcnow()
    deadline = delivery.created_at + timedelta(hours=settings.callback_retry_hours)
    ok = response_status is not None and 200 <= response_status < 300
    if ok:
        status, outcome = DELIVERED, OUTCOME_DELIVERED
    elif final:
        status, outcome = FAILED, OUTCOME_REFUSED
    elif delivery.attempts >= settings.callback_max_attempts or now >= deadline:
        status, outcome = FAILED, OUTCOME_GAVE_UP
    else:
        status, outcome = PENDING, OUTCOME_RETRYING
    values: dict[str, Any] = {"status": status}
    if status == PENDING:
        delay = _backoff(delivery.attempts) * random.uniform(0.8, 1.2)
        values["next_attempt_at"] = min(now + timedelta(seconds=delay), deadline)
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
    return outcome


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
