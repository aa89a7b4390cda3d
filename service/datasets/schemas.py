from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.enums import SampleState, Split
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


class NpzSource(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["npz"]
    path: Text = Field(max_length=1000, description="file under the data root")


Source = Annotated[BuiltinSource | TorchvisionSource | NpzSource, Field(discriminator="kind")]


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
    num_classes: int
    input_shape: list[int]
    counts: SplitCounts
    created_at: datetime


class SampleRead(BaseModel):
    key: str
    split: Split
    label: int
    state: SampleState
    forgotten_by: list[ForgottenBy] = Field(
        default_factory=list, description="the requests and model versions that forgot it"
    )


class ForgottenBy(BaseModel):
    model_id: str
    request_id: str
    version: int
    at: datetime


SampleRead.model_rebuild()
