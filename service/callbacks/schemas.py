from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AttemptRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    number: int
    at: datetime
    response_status: int | None = Field(description="the receiver's HTTP status, if it answered")
    error: str | None
    seconds: float


class DeliveryRead(BaseModel):
    id: str = Field(description="sent as delivery_id: a receiver drops repeats by it")
    status: Literal["pending", "delivered", "failed"]
    event_status: str = Field(description="the request status this delivery announces")
    url: str
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    attempts: list[AttemptRead]


class DeliveryList(BaseModel):
    items: list[DeliveryRead]


class SecretRead(BaseModel):
    secret: str = Field(description="the HMAC-SHA256 key of X-Unlearn-Signature")
    previous_valid_until: datetime | None = Field(
        description="after a rotation, the previous secret also signs until then"
    )
