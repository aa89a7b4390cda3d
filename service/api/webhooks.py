from fastapi import APIRouter, Response

from service.api.deps import CurrentCaller, Limit, SessionDep, require
from service.callbacks import service, subscriptions
from service.callbacks.schemas import (
    DeliveryRead,
    SecretRead,
    WebhookCreate,
    WebhookCreated,
    WebhookRead,
    WebhookUpdate,
)
from service.enums import Scope
from service.schemas import Page

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
read = [require(Scope.WEBHOOKS_READ)]
write = [require(Scope.WEBHOOKS_WRITE)]


@router.post("", status_code=201, response_model=WebhookCreated, dependencies=write)
def create_webhook(
    spec: WebhookCreate, session: SessionDep, caller: CurrentCaller
) -> WebhookCreated:
    made = subscriptions.create(session, tenant_id=caller.tenant_id, spec=spec)
    return WebhookCreated.model_validate(made, from_attributes=True)


@router.get("", response_model=Page[WebhookRead], dependencies=read)
def list_webhooks(
    session: SessionDep, caller: CurrentCaller, limit: Limit = 50, cursor: str | None = None
) -> Page[WebhookRead]:
    rows, next_cursor = subscriptions.list_page(
        session, tenant_id=caller.tenant_id, limit=limit, cursor=cursor
    )
    return Page(items=[WebhookRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=DeliveryRead,
    dependencies=write,
)
def redeliver(delivery_id: str, session: SessionDep, caller: CurrentCaller) -> DeliveryRead:
    return service.redeliver(session, tenant_id=caller.tenant_id, delivery_id=delivery_id)


@router.get("/{webhook_id}", response_model=WebhookRead, dependencies=read)
def get_webhook(webhook_id: str, session: SessionDep, caller: CurrentCaller) -> WebhookRead:
    found = subscriptions.get_or_raise(
        session, tenant_id=caller.tenant_id, subscription_id=webhook_id
    )
    return WebhookRead.model_validate(found)


@router.patch("/{webhook_id}", response_model=WebhookRead, dependencies=write)
def update_webhook(
    webhook_id: str, spec: WebhookUpdate, session: SessionDep, caller: CurrentCaller
) -> WebhookRead:
    changed = subscriptions.update(
        session, tenant_id=caller.tenant_id, subscription_id=webhook_id, spec=spec
    )
    return WebhookRead.model_validate(changed)


@router.delete("/{webhook_id}", status_code=204, response_class=Response, dependencies=write)
def delete_webhook(webhook_id: str, session: SessionDep, caller: CurrentCaller) -> Response:
    subscriptions.delete(session, tenant_id=caller.tenant_id, subscription_id=webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/secret", response_model=SecretRead, dependencies=write)
def get_secret(webhook_id: str, session: SessionDep, caller: CurrentCaller) -> SecretRead:
    return subscriptions.secret_of(session, tenant_id=caller.tenant_id, subscription_id=webhook_id)


@router.post("/{webhook_id}/secret/rotate", response_model=SecretRead, dependencies=write)
def rotate_secret(webhook_id: str, session: SessionDep, caller: CurrentCaller) -> SecretRead:
    return subscriptions.rotate_secret(
        session, tenant_id=caller.tenant_id, subscription_id=webhook_id
    )


@router.get("/{webhook_id}/deliveries", response_model=Page[DeliveryRead], dependencies=read)
def list_deliveries(
    webhook_id: str,
    session: SessionDep,
    caller: CurrentCaller,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[DeliveryRead]:
    items, next_cursor = service.deliveries_of_subscription(
        session, tenant_id=caller.tenant_id, subscription_id=webhook_id, limit=limit, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)
