from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from service.enums import JobKind, JobStatus


class JobProgress(BaseModel):
    """What a running job last reported (its heartbeat records it): ``{}`` until then."""

    stage: str | None = Field(None, description="what the job is doing, e.g. `unlearning`")
    step: int | None = Field(None, description="steps done of this stage")
    total: int | None = Field(None, description="steps the stage will take")

    @model_serializer(mode="wrap")
    # Unannotated: the document's schema stays the fields' (an annotation would replace it).
    def _reported_only(self, handler: SerializerFunctionWrapHandler):
        return {name: value for name, value in handler(self).items() if value is not None}


class JobRead(BaseModel):
    id: str
    kind: JobKind
    status: JobStatus
    model_id: str | None = Field(description="the model; null for a `register` job")
    dataset_id: str | None = Field(None, description="a `register` job's dataset; else null")
    base_version: int | None
    result_version: int | None
    unlearner: dict[str, Any] | None
    request_ids: list[str]
    sample_count: int
    attempts: int
    progress: JobProgress
    timings: dict[str, Any]
    report: dict[str, Any]  # what the job did: steps, stop rule and its checks, ...
    seed: int | None  # every random draw of the job comes from it
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
