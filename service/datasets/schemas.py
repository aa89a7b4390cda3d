from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.enums import DatasetStatus, SampleState, Split
from service.schemas import Text


class BuiltinSource(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["builtin"]
    name: Literal["sklearn-digits"]


class TorchvisionSource(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["torchvision"]
    name: Literal["FashionMNIST", "MNIST", "KMNIST"]
    root: Text = Field(".", max_length=1000, description="folder under the data root")


class Normalization(BaseModel):
    """(x - mean) / std, one value per channel (images) or feature (rows)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    mean: list[float] = Field(min_length=1, max_length=100_000)
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, max_length=100_000)

    @model_validator(mode="after")
    def _one_std_per_mean(self) -> Normalization:
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std need one value each per channel or feature")
        return self


NormalizationSpec = Annotated[
    Literal["computed"] | Normalization | None,
    Field(
        description="given mean and std, `computed` over the training samples when the "
        "dataset is registered (stored as numbers), or none"
    ),
]


class NpzSource(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["npz"]
    path: Text = Field(max_length=1000, description="file under the data root")
    normalization: NormalizationSpec = None


class ManifestSource(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["manifest"]
    path: Text = Field(
        max_length=1000, description="a CSV or Parquet (`.parquet`) file under the data root"
    )
    num_classes: int | None = Field(
        None, ge=1, le=100_000, description="labels must be below it (absent: highest + 1)"
    )
    normalization: NormalizationSpec = None


class ImageFolderSource(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["imagefolder"]
    root: Text = Field(max_length=1000, description="folder under the data root")
    normalization: NormalizationSpec = None


Source = Annotated[
    BuiltinSource | TorchvisionSource | NpzSource | ManifestSource | ImageFolderSource,
    Field(discriminator="kind"),
]


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Text = Field(min_length=1, max_length=200)
    source: Source
    holdout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seeds the holdout split")


class SplitCounts(BaseModel):
    train: int
    holdout: int
    test: int


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    source: dict[str, object]
    holdout_fraction: float
    seed: int
    status: DatasetStatus = Field(
        description="`registering` while its register job indexes the source (no samples "
        "yet), `ready`, or `failed` (see `error`; the name is free for a new registration)"
    )
    error: str | None = Field(None, description="why the registration failed; null otherwise")
    job_id: str | None = Field(
        None, description="the register job, for a dataset registered by one (`GET /v1/jobs/{id}`)"
    )
    num_classes: int | None = Field(description="null until the source is indexed")
    input_shape: list[int] | None = Field(description="null until the source is indexed")
    counts: SplitCounts | None = Field(description="null until the source is indexed")
    generation: int = Field(
        description="1 at registration, one more for each refresh that added samples"
    )
    created_at: datetime


class SampleRead(BaseModel):
    key: str
    split: Split
    label: int
    state: SampleState
    generation: int = Field(description="the dataset generation that added it (1: registration)")
    forgotten_by: list[ForgottenBy] = Field(
        default_factory=list, description="the requests and model versions that forgot it"
    )


class ForgottenBy(BaseModel):
    model_id: str
    request_id: str
    version: int
    at: datetime


class SourceDifference(BaseModel):
    key: str
    reason: str


class RefreshRead(BaseModel):
    """What a refresh found in the source: the new keys it added (as a new generation),
    and the active samples that changed or vanished, reported and not taken."""

    dataset: DatasetRead
    added: SplitCounts = Field(description="new samples, by the split they were given")
    changed: list[SourceDifference] = Field(
        description="active samples whose row, file or label differs from the registered "
        "one (the first 100)"
    )
    changed_count: int
    vanished: list[str] = Field(description="active samples no longer in the source (first 100)")
    vanished_count: int


SampleRead.model_rebuild()
