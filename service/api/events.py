"""The events the service POSTs to receivers, documented under the OpenAPI document's
``webhooks`` (documentation only: nothing is served here). Today that is a deletion
request's status change, sent to the request's ``callback_url``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from service.api.openapi import operation_id
from service.callbacks.service import EVENT
from service.enums import RequestStatus

__all__ = ["DeletionRequestStatusChanged", "webhooks"]

webhooks = APIRouter(tags=["callbacks"], generate_unique_id_function=operation_id)


class DeletionRequestStatusChanged(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: Literal["deletion_request.status_changed"]
    delivery_id: str = Field(description="the same for every attempt: drop repeats by it")
    request_id: str
    model_id: str
    status: RequestStatus = Field(description="the status the request moved to")
    at: datetime = Field(description="when it moved")
    result_version: int | None = Field(description="the version that forgot it, once known")
    error: str | None = Field(description="why it failed, when it did")


@webhooks.post(EVENT, status_code=200)
def deletion_request_status_changed(body: DeletionRequestStatusChanged) -> None:
    """A deletion request with a `callback_url` changed status: POSTed there by a worker,
    at least once, signed (docs/api.md in the repository, "Callbacks"). Any 2xx answer
    acknowledges it; anything else is retried with backoff."""
