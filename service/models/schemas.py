"""The API's model and version schemas (a model's settings are ``service.models.settings``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ml.training import TrainingConfig
from service.enums import ModelStatus, VersionKind
from service.models.settings import ArchitectureSpec, AuditPolicy, Batching, UnlearnerSpec
from service.schemas import Text


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Text = Field(min_length=1, max_length=200)
    dataset_id: Text = Field(max_length=64)
    architecture: ArchitectureSpec
    unlearner: UnlearnerSpec = Field(default_factory=lambda: UnlearnerSpec(name="finetune"))
    batching: Batching = Field(default_factory=Batching)
    training: TrainingConfig | None = Field(
        default_factory=TrainingConfig,
        description="how the service trains version 1; null to upload weights instead",
    )
    audit: AuditPolicy = Field(default_factory=AuditPolicy)


class ModelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    unlearner: UnlearnerSpec | None = None
    batching: Batching | None = None
    audit: AuditPolicy | None = None


class ModelRead(BaseModel):
    id: str
    name: str
    dataset_id: str
    architecture: dict[str, Any]
    unlearner: dict[str, Any]
    batching: dict[str, Any]
    training: dict[str, Any] | None
    audit: dict[str, Any]
    status: ModelStatus
    head_version: int | None
    pending_requests: int
    created_at: datetime
    updated_at: datetime


class ArtifactRead(BaseModel):
    name: str
    sha256: str
    meta: dict[str, Any]


class VersionRead(BaseModel):
    number: int
    parent: int | None
    kind: VersionKind
    in_lineage: bool = Field(description="false for retrained audit references")
    created_at: datetime
    unlearner: dict[str, Any] | None
    job_id: str | None
    deletion_request_ids: list[str]
    forgotten_samples: int
    forgotten_total: int
    artifact_sha256: str
    metrics: dict[str, Any]
    unchanged: bool = Field(
        description="its weights are its parent's, as they were (unchanged_reason says why)"
    )
    unchanged_reason: str | None
    artifacts: list[ArtifactRead]


class FlushRead(BaseModel):
    model_id: str
    pending_requests: int
