from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, Strict, model_validator

from service.callbacks.targets import RefusedTarget, check_url
from service.enums import WebhookEvent
from service.schemas import Text

MAX_URL_CHARS = 2000


def checked_url(url: AnyHttpUrl, name: str) -> str:
    """A URL deliveries may go to, as text; ValueError (a 422) saying why not otherwise."""
    text = str(url)
    if len(text) > MAX_URL_CHARS:
        raise ValueError(f"{name} is longer than {MAX_URL_CHARS} characters")
    try:
        check_url(text)
    except RefusedTarget as refused:
        raise ValueError(f"{name}: {refused}") from None
    return text


class AttemptRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    number: int
    at: datetime
    response_status: int | None = Field(description="the receiver's HTTP status, if it answered")
    error: str | None
    seconds: float


class DeliveryRead(BaseModel):
    id: str = Field(
        description="the delivery; its body's delivery_id and webhook-id are the "
        "original's id for a redelivery, its own otherwise"
    )
    event: WebhookEvent
    status: Literal["pending", "delivered", "failed"]
    event_status: str | None = Field(
        description="the request status a deletion_request.status_changed delivery announces"
    )
    url: str
    request_id: str | None
    subscription_id: str | None = Field(description="null: the request's callback_url")
    redelivery_of: str | None = Field(description="the delivery this one sends again")
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    attempts: list[AttemptRead]


class DeliveryList(BaseModel):
    items: list[DeliveryRead]


class SecretRead(BaseModel):
    secret: str = Field(description="whsec_<base64 key>: verify with standardwebhooks")
    previous_valid_until: datetime | None = Field(
        description="after a rotation, the previous secret also signs until then"
    )

    @classmethod
    def of(cls, current: str, previous: str | None, until: datetime | None) -> SecretRead:
        return cls(secret=current, previous_valid_until=until if previous else None)


Events = Annotated[
    list[Annotated[WebhookEvent, Strict(False)]],
    Field(min_length=1, max_length=len(WebhookEvent), description="the event types to send"),
]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    url: Annotated[AnyHttpUrl, Strict(False)] = Field(description="events are POSTed here")
    events: Events
    model_id: Text | None = Field(
        None, max_length=64, description="only this model's events; null: every model's"
    )
    description: Text = Field("", max_length=500)

    @model_validator(mode="after")
    def _checked(self) -> WebhookCreate:
        checked_url(self.url, "url")
        if len(set(self.events)) != len(self.events):
            raise ValueError("events must not repeat")
        return self


class WebhookUpdate(BaseModel):
    """What to change; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid", strict=True)
    url: Annotated[AnyHttpUrl, Strict(False)] | None = None
    events: Events | None = None
    model_id: Text | None = Field(None, max_length=64)
    description: Text | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _checked(self) -> WebhookUpdate:
        if self.url is not None:
            checked_url(self.url, "url")
        if self.events is not None and len(set(self.events)) != len(self.events):
            raise ValueError("events must not repeat")
        return self


class WebhookRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    url: str
    events: list[WebhookEvent]
    model_id: str | None
    description: str
    created_at: datetime


class WebhookCreated(WebhookRead):
    secret: str = Field(description="whsec_<base64 key> signing this subscription's deliveries")
