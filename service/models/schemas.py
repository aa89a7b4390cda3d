"""The API's model and version schemas (a model's settings are ``service.models.settings``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
        description="the model's training recipe: how the service trains version 1 (unless "
        "`weights` is `upload`), and how it retrains (`retrain`, retrained audit references) "
        "and fine-tunes; null for none (upload weights; no reference audits)",
    )
    weights: Literal["train", "upload"] | None = Field(
        None,
        description="where version 1 comes from: `train` (the service trains it with "
        "`training`) or `upload` (POST /v1/models/{id}/versions; `training` then declares "
        "the recipe the uploaded weights were trained with). Default: `train` with a "
        "recipe, `upload` without",
    )
    audit: AuditPolicy = Field(default_factory=AuditPolicy)

    @model_validator(mode="after")
    def _version_1(self) -> ModelCreate:
        if self.weights == "train" and self.training is None:
            raise ValueError("weights 'train' needs a training recipe (`training`)")
        if self.training is None:
            self.weights = "upload"
        elif self.weights is None:
            self.weights = "train"
        return self


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
    training: dict[str, Any] | None = Field(
        description="the training recipe; null when the model declares none"
    )
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
    training: dict[str, Any] | None = Field(
        description="the training recipe the service trained its weights with, as it ran on "
        "the worker's device (version 1, `retrain`, `finetune` and `random_labels`'s "
        "fine-tuning, retrained references); null for uploaded weights, for methods with "
        "their own loop, and for versions made before versions recorded it"
    )
    unchanged: bool = Field(
        description="its weights are its parent's, as they were (unchanged_reason says why)"
    )
    unchanged_reason: str | None
    generation: int = Field(
        description="the dataset generation it was trained on (uploaded: as declared); its "
        "training set is that generation's samples minus what was forgotten"
    )
    artifacts: list[ArtifactRead]


class FlushRead(BaseModel):
    model_id: str
    pending_requests: int
