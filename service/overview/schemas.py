from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from service.enums import JobStatus, RequestStatus


class ModelBacklog(BaseModel):
    model_id: str
    name: str
    pending: int
    oldest_pending_at: datetime
    nearest_due_at: datetime


class Overview(BaseModel):
    """One tenant at a glance: what is owed, how old it is, and what the workers do."""

    requests: dict[RequestStatus, int] = Field(description="requests by status (every status)")
    oldest_pending_at: datetime | None
    oldest_pending_age_seconds: float | None = Field(
        description="as of `as_of`; a 304 keeps the earlier body, so compute a live age from "
        "`oldest_pending_at`"
    )
    nearest_due_at: datetime | None = Field(
        description="the earliest deadline of a request whose data is still in the model "
        "(pending, batched, unlearning or failed)"
    )
    pending_by_model: list[ModelBacklog] = Field(description="models with pending requests")
    jobs: dict[JobStatus, int] = Field(description="jobs by status (every status)")
    as_of: datetime
