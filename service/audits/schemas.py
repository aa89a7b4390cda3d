from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class AuditCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reference: Literal["retrain", "none"] = "none"


class AuditRead(BaseModel):
    """A version's latest audit; the contract's fields and extra detail beside them."""

    model_config = ConfigDict(extra="allow")
    version: int
    forget_set_size: int
    metrics: dict[str, Any]
    roc: list[list[float]]
    reference: dict[str, Any] | None
    frm: float | None
    avg_disparity: float | None
    verdict: Literal["pass", "fail", "inconclusive", "no_reference"]
    failed_gates: list[dict[str, Any]]
    unlearning_seconds: float | None
    speedup_vs_reference: float | None
    job_id: str | None
    created_at: datetime


class LogEntry(BaseModel):
    id: int
    at: datetime
    action: str
    subject_type: str
    subject_id: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class Certificate(BaseModel):
    """Evidence that a deletion request was honoured."""

    evidence: str  # what the evidence shows, in plain words
    request: dict[str, Any]
    sample_key_digests: list[str]
    job: dict[str, Any] | None
    version_before: dict[str, Any] | None
    version_after: dict[str, Any] | None
    audit: dict[str, Any] | None
    audit_log: list[LogEntry]
    audit_log_entries_consistent: bool
    issued_at: datetime
