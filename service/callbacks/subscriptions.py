"""Webhook subscriptions: a tenant's standing orders to POST some event types (of one
model, or of all) to a URL, each signed with the subscription's own secret. Their
deliveries go through the same rows, attempts and retries as a request's callbacks
(``service.callbacks.service``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import audit_log, lookup
from service.callbacks.schemas import SecretRead, WebhookCreate, WebhookUpdate
from service.callbacks.signing import SECRET_GRACE, new_secret
from service.enums import WebhookEvent
from service.pagination import paginate
from service.tables import Model, WebhookSubscription, utcnow

__all__ = [
    "create",
    "get_or_raise",
    "list_page",
    "update",
    "delete",
    "secret_of",
    "rotate_secret",
    "matching",
]


def get_or_raise(
    session: Session, *, tenant_id: str, subscription_id: str, lock: bool = False
) -> WebhookSubscription:
    return lookup.get_or_raise(
        session,
        WebhookSubscription,
        subscription_id,
        tenant_id=tenant_id,
        what="webhook subscription",
        lock=lock,
    )


def _check_model(session: Session, tenant_id: str, model_id: str | None) -> None:
    if model_id is not None:
        lookup.get_or_raise(session, Model, model_id, tenant_id=tenant_id, what="model")


def _log(session: Session, subscription: WebhookSubscription, action: str) -> None:
    audit_log.append(
        session,
        tenant_id=subscription.tenant_id,
        action=f"webhook_subscription.{action}",
        subject_type="webhook_subscription",
        subject_id=subscription.id,
        payload={"events": list(subscription.events), "model_id": subscription.model_id},
    )


def create(session: Session, *, tenant_id: str, spec: WebhookCreate) -> WebhookSubscription:
    _check_model(session, tenant_id, spec.model_id)
    subscription = WebhookSubscription(
        tenant_id=tenant_id,
        url=str(spec.url),
        events=[event.value for event in spec.events],
        model_id=spec.model_id,
        description=spec.description,
        secret=new_secret(),
        created_at=utcnow(),
    )
    session.add(subscription)
    session.flush()
    _log(session, subscription, "created")
    session.commit()
    return subscription


def list_page(
    session: Session, *, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[WebhookSubscription], str | None]:
    statement = select(WebhookSubscription).where(WebhookSubscription.tenant_id == tenant_id)
    order = (WebhookSubscription.created_at, WebhookSubscription.id)
    return paginate(session, statement, order=order, limit=limit, cursor=cursor)


def update(
    session: Session, *, tenant_id: str, subscription_id: str, spec: WebhookUpdate
) -> WebhookSubscription:
    """Change what ``spec`` names; a ``model_id`` given as null widens it to every model."""
    subscription = get_or_raise(
        session, tenant_id=tenant_id, subscription_id=subscription_id, lock=True
    )
    given = spec.model_fields_set
    if spec.url is not None:
        subscription.url = str(spec.url)  # pending deliveries follow it (callbacks.claim)
    if spec.events is not None:
        subscription.events = [event.value for event in spec.events]
    if "model_id" in given:
        _check_model(session, tenant_id, spec.model_id)
        subscription.model_id = spec.model_id
    if spec.description is not None:
        subscription.description = spec.description
    _log(session, subscription, "updated")
    session.commit()
    return subscription


def delete(session: Session, *, tenant_id: str, subscription_id: str) -> None:
    """The subscription and its deliveries (pending ones are not sent any more)."""
    subscription = get_or_raise(
        session, tenant_id=tenant_id, subscription_id=subscription_id, lock=True
    )
    _log(session, subscription, "deleted")
    session.delete(subscription)
    session.commit()


def secret_of(session: Session, *, tenant_id: str, subscription_id: str) -> SecretRead:
    subscription = get_or_raise(session, tenant_id=tenant_id, subscription_id=subscription_id)
    return _secret_read(subscription)


def rotate_secret(session: Session, *, tenant_id: str, subscription_id: str) -> SecretRead:
    """A new secret; the old one also signs for SECRET_GRACE, so the receiver can switch
    without refusing deliveries."""
    subscription = get_or_raise(
        session, tenant_id=tenant_id, subscription_id=subscription_id, lock=True
    )
    subscription.previous_secret = subscription.secret
    subscription.previous_secret_until = utcnow() + SECRET_GRACE
    subscription.secret = new_secret()
    _log(session, subscription, "secret_rotated")
    session.commit()
    return _secret_read(subscription)


def _secret_read(subscription: WebhookSubscription) -> SecretRead:
    return SecretRead.of(
        subscription.secret, subscription.previous_secret, subscription.previous_secret_until
    )


_CACHE = "webhook_subscriptions"


def matching(
    session: Session, *, tenant_id: str, model_id: str, event: WebhookEvent
) -> list[WebhookSubscription]:
    """The tenant's subscriptions that want ``event`` of ``model_id``. They are read once
    per transaction: a batch moves many requests, each move an event."""
    transaction = session.get_transaction()
    held = session.info.get(_CACHE)
    if held is None or held[0] is not transaction:
        held = session.info[_CACHE] = (transaction, {})
    by_tenant: dict[str, list[WebhookSubscription]] = held[1]
    if tenant_id not in by_tenant:
        by_tenant[tenant_id] = list(
            session.scalars(
                select(WebhookSubscription)
                .where(WebhookSubscription.tenant_id == tenant_id)
                .order_by(WebhookSubscription.created_at, WebhookSubscription.id)
            )
        )
    return [
        s
        for s in by_tenant[tenant_id]
        if event.value in s.events and (s.model_id is None or s.model_id == model_id)
    ]
