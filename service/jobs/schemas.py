from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from service.enums import JobKind, JobStatus


class JobRead(BaseModel):
    id: str
    kind: JobKind
    status: JobStatus
    model_id: str
    base_version: int | None
    result_version: int | None
    unlearner: dict[str, Any] | None
    request_ids: list[str]
    sample_count: int
    attempts: int
    progress: dict[str, Any]
    timings: dict[str, Any]
    report: dict[str, Any]  # what the job did: steps, stop rule and its checks, ...
    seed: int | None  # every random draw of the job comes from it
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
