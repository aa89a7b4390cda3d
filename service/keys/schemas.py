from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict

from service.enums import Scope
from service.schemas import Text


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Text = Field("", max_length=200)
    scopes: list[Annotated[Scope, Strict(False)]] = Field(min_length=1)
    expires_at: Annotated[datetime, Strict(False)] | None = Field(
        None, description="none: the key never expires"
    )


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    grace_seconds: int = Field(
        3600, ge=0, le=30 * 86400, description="how long the old key keeps working"
    )


class KeyRead(BaseModel):
    """A key without its secret."""

    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    prefix: str
    scopes: list[str]
    status: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    replaced_by: str | None = Field(description="the key a rotation created from this one")


class KeyCreated(KeyRead):
    key: str = Field(description="the key itself: shown once, stored only as a hash")
