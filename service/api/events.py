"""The events the service POSTs to receivers, documented under the OpenAPI document's
``webhooks`` (documentation only: nothing is served here). Each is sent to the
subscriptions that asked for it (``/v1/webhooks``) and a request's status change also to
its ``callback_url``; every body is signed as Standard Webhooks (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``). The models forbid extra fields, and the
tests validate what a receiver really gets against them, so the document cannot drift
from what is sent."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from service.api.openapi import operation_id
from service.enums import RequestStatus, WebhookEvent

__all__ = ["AuditCompleted", "DeletionRequestStatusChanged", "VersionPublished", "webhooks"]

webhooks = APIRouter(tags=["callbacks"], generate_unique_id_function=operation_id)

_ACK = "Any 2xx answer acknowledges it; anything else is retried with backoff for 3 days."


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    delivery_id: str = Field(description="the same for every attempt: drop repeats by it")
    at: datetime = Field(description="when it happened")
    model_id: str


class DeletionRequestStatusChanged(_Event):
    event: Literal["deletion_request.status_changed"]
    request_id: str
    status: RequestStatus = Field(description="the status the request moved to")
    result_version: int | None = Field(description="the version that forgot it, once known")
    error: str | None = Field(description="why it failed, when it did")
    source_erasable: bool = Field(
        description="completed, and nothing the service does later reads the request's "
        "samples' raw data: their rows or files may be deleted from the source"
    )


class VersionPublished(_Event):
    event: Literal["model.version_published"]
    version: int = Field(description="the model's new head version")
    parent: int | None = Field(description="the version it was made from")
    kind: str = Field(description="trained, unlearned or uploaded")
    deletion_request_ids: list[str] = Field(description="the requests it forgot")
    weights_sha256: str = Field(description="the weights' digest, and the download's ETag")
    weights_url: str = Field(description="the safetensors download (scope models:read)")


class AuditCompleted(_Event):
    event: Literal["audit.completed"]
    version: int
    verdict: str | None = Field(description="pass, fail, inconclusive or no_reference")
    job_id: str
    reference: bool = Field(description="whether the audit had retrained references")
    audit_url: str = Field(description="the report (scope audit:read)")


@webhooks.post(WebhookEvent.REQUEST_STATUS_CHANGED.value, status_code=200)
def deletion_request_status_changed(body: DeletionRequestStatusChanged) -> None:
    """A deletion request changed status: POSTed to its `callback_url` and to the
    subscriptions that asked for request events."""


@webhooks.post(WebhookEvent.VERSION_PUBLISHED.value, status_code=200)
def model_version_published(body: VersionPublished) -> None:
    """A model has a new head version (trained, uploaded or unlearned): serve it."""


@webhooks.post(WebhookEvent.AUDIT_COMPLETED.value, status_code=200)
def audit_completed(body: AuditCompleted) -> None:
    """A version's audit finished, with its verdict."""


for _route in webhooks.routes:
    _route.description = f"{_route.description} {_ACK}"  # type: ignore[attr-defined]
