"""What the service answers, as pydantic models.

Fields the service adds later are kept (``extra="allow"``) rather than refused, so an older
client keeps working against a newer service.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = [
    "BulkRejection",
    "BulkResult",
    "Caller",
    "Certificate",
    "Dataset",
    "DeletionRequest",
    "HistoryEntry",
    "Job",
    "JobProgress",
    "Model",
    "Page",
    "RequestStatus",
    "Sample",
    "TERMINAL_STATUSES",
    "Version",
]

RequestStatus = Literal[
    "pending", "batched", "unlearning", "auditing", "completed", "cancelled", "failed"
]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "cancelled", "failed"})


class Resource(BaseModel):
    model_config = ConfigDict(extra="allow")


class Caller(Resource):
    tenant: str
    scopes: list[str]


class Webhook(Resource):
    """A subscription (``/v1/webhooks``); ``secret`` only in the answer that made it."""

    id: str
    url: str
    events: list[str]
    model_id: str | None
    description: str
    created_at: datetime
    secret: str | None = None  # whsec_...: verify deliveries with it (verify_webhook)


class Dataset(Resource):
    id: str
    name: str
    source: dict[str, Any]
    # registering (its register job indexes the source), ready, or failed (see error)
    status: str = "ready"
    error: str | None = None
    job_id: str | None = None  # the register job, for a dataset registered by one
    # Known once the source is indexed: None while registering, or if it failed.
    num_classes: int | None = None
    input_shape: list[int] | None = None
    counts: dict[str, int] | None = None
    generation: int = 1  # one more for each refresh that added samples
    created_at: datetime

    @property
    def done(self) -> bool:
        """Its registration is over: ready, or failed."""
        return self.status != "registering"


class Refresh(Resource):
    """What a refresh found: the samples it ``added`` (per split, as the dataset's next
    generation) and the active ones that ``changed`` or ``vanished`` (not taken)."""

    dataset: Dataset
    added: dict[str, int]
    changed: list[dict[str, str]]
    changed_count: int
    vanished: list[str]
    vanished_count: int


class Sample(Resource):
    key: str
    split: Literal["train", "holdout", "test"]
    label: int
    state: Literal["active", "forgotten"]
    generation: int = 1
    forgotten_by: list[dict[str, Any]] = []


class Model(Resource):
    id: str
    name: str
    dataset_id: str
    architecture: dict[str, Any]
    unlearner: dict[str, Any]
    batching: dict[str, Any]
    status: str
    head_version: int | None
    pending_requests: int
    created_at: datetime


class Version(Resource):
    number: int
    parent: int | None
    kind: str
    created_at: datetime
    job_id: str | None
    deletion_request_ids: list[str]
    forgotten_samples: int
    forgotten_total: int
    metrics: dict[str, Any]
    generation: int = 1  # the dataset generation it was trained on


class HistoryEntry(Resource):
    status: RequestStatus
    at: datetime
    detail: str | None = None


class DeletionRequest(Resource):
    id: str
    model_id: str
    # HMAC-SHA256 of the subject_id asked with, under the tenant's key: the service keeps
    # no subject in clear (keep your own mapping from ``id`` if you need the id back).
    subject_digest: str
    status: RequestStatus
    sample_count: int
    sample_keys: list[str] | None
    class_labels: list[int] | None
    already_forgotten: list[str]
    callback_url: str | None
    created_at: datetime
    due_at: datetime
    completed_at: datetime | None
    job_id: str | None
    result_version: int | None
    error: str | None
    # Completed, and nothing the service does later reads its samples' raw data: their rows
    # or files may be deleted from the dataset's source.
    source_erasable: bool = False
    history: list[HistoryEntry]

    @property
    def done(self) -> bool:
        """The request reached a status it never leaves by itself."""
        return self.status in TERMINAL_STATUSES


class BulkRejection(Resource):
    index: int
    problem: dict[str, Any]


class BulkResult(Resource):
    accepted: list[DeletionRequest]
    rejected: list[BulkRejection]


class JobProgress(Resource):
    stage: str | None = None
    step: int | None = None
    total: int | None = None


class Job(Resource):
    id: str
    kind: str
    status: str
    model_id: str | None  # None for a register job, which has its dataset_id instead
    dataset_id: str | None = None
    base_version: int | None
    result_version: int | None
    request_ids: list[str]
    sample_count: int
    attempts: int
    progress: JobProgress
    timings: dict[str, Any]
    error: str | None
    created_at: datetime


class Certificate(Resource):
    evidence: str
    request: dict[str, Any]
    sample_key_digests: list[str]
    job: dict[str, Any] | None
    version_before: dict[str, Any] | None
    version_after: dict[str, Any] | None
    audit: dict[str, Any] | None
    audit_log: list[dict[str, Any]]
    audit_log_entries_consistent: bool
    issued_at: datetime


Item = TypeVar("Item", bound=BaseModel)


class Page(BaseModel, Generic[Item]):
    """One page of a list: pass ``next_cursor`` back for the next (None on the last)."""

    items: list[Item]
    next_cursor: str | None
