from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, Strict, model_validator

from service.callbacks.schemas import checked_url
from service.enums import RequestStatus
from service.schemas import Text, schema_ref

MAX_CLASS_LABEL = 99_999  # a dataset has at most 100,000 classes (ml.datasets)


class DeletionRequestCreate(BaseModel):
    """At most one of ``sample_keys`` and ``class_labels``. With neither, the request
    forgets every active training sample of ``subject_id`` in the model's dataset (one
    registered with a ``subject`` column); a subject with none completes at once."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model_id: Text = Field(max_length=64)
    subject_id: Text = Field(min_length=1, max_length=200)
    sample_keys: list[Annotated[Text, Field(max_length=200)]] | None = Field(
        None, description="training sample keys to forget (limit: UNLEARN_MAX_KEYS_PER_REQUEST)"
    )
    class_labels: list[Annotated[int, Field(ge=0, le=MAX_CLASS_LABEL)]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_CLASS_LABEL + 1,
        description="forget every training sample of these classes",
    )
    callback_url: Annotated[AnyHttpUrl, Strict(False)] | None = Field(
        None, description="status changes are POSTed here"
    )

    @model_validator(mode="after")
    def _one_target(self) -> DeletionRequestCreate:
        if self.sample_keys is not None and self.class_labels is not None:
            raise ValueError(
                "give at most one of sample_keys and class_labels (neither: every training "
                "sample of subject_id)"
            )
        if self.sample_keys is not None and not self.sample_keys:
            raise ValueError("sample_keys must not be empty")
        if self.callback_url is not None:
            checked_url(self.callback_url, "callback_url")
        return self


class HistoryEntry(BaseModel):
    status: RequestStatus
    at: datetime
    detail: str | None = None


class DeletionRequestRead(BaseModel):
    id: str
    model_id: str
    subject_digest: str = Field(
        description="HMAC-SHA256 of the request's subject_id under the tenant's subject key: "
        "the service keeps no subject in clear"
    )
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
    source_erasable: bool = Field(
        description="the request is completed and nothing the service does later reads its "
        "samples' raw data: their rows or files may be deleted from the dataset's source"
    )
    history: list[HistoryEntry]


class BulkRejection(BaseModel):
    index: int
    problem: dict[str, Any] = Field(json_schema_extra=schema_ref("Problem"))


class BulkResult(BaseModel):
    accepted: list[DeletionRequestRead]
    rejected: list[BulkRejection]
