from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
    evidence: str | None = Field(None, description="what the audit shows, in plain words")
    failed_gates: list[dict[str, Any]]
    uninformative_gates: list[str] = Field(
        default_factory=list, description="gates the parent (the control) passes too"
    )
    control: dict[str, Any] | None = Field(
        None, description="the parent version audited on the same samples: version, verdict"
    )
    membership_signal: dict[str, Any] | None = Field(
        None, description="the forget set's loss-attack AUC before and after, with intervals"
    )
    frm_loss_auc: float | None = None
    unchanged: bool = False
    unlearning_seconds: float | None
    speedup_vs_reference: float | None
    job_id: str | None
    created_at: datetime


class LogEntry(BaseModel):
    """An audit log entry as stored: with its hash's inputs, so anyone can recompute it, and
    its signature, which `unlearnd audit verify --public-key K --certificate F` checks."""

    id: int
    at: datetime
    tenant_id: str | None
    action: str
    subject_type: str
    subject_id: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str
    signature: str | None
    key_id: str | None


class ChainBreakRead(BaseModel):
    entry_id: int | None = Field(description="null: an entry of another tenant")
    reason: str


class ChainHead(BaseModel):
    entry_id: int
    hash: str
    signature: str | None


class ChainVerification(BaseModel):
    """The audit log walked by the service (one chain across tenants: every link and hash,
    and every signature with the configured signing key), told to one tenant: whether it
    is intact, and where it breaks when that is one of the tenant's entries. An auditor who
    does not trust the service runs `unlearnd audit verify --public-key K` on a copy of
    the database instead."""

    intact: bool
    signatures_checked: bool = Field(description="false: no signing key is configured")
    entries: int = Field(description="this tenant's entries in the log")
    broken: ChainBreakRead | None = Field(description="the first break, when there is one")
    head: ChainHead | None = Field(description="this tenant's latest entry")
    verified_at: datetime = Field(description="when the chain was walked (at most a minute ago)")


class SigningKey(BaseModel):
    """The public key that verifies the audit log's signatures."""

    algorithm: str
    public_key: str  # 32 bytes, base64 (URL-safe, no padding)
    key_id: str


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
