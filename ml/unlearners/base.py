"""The one interface every unlearning method implements.

The pipeline builds an :class:`UnlearnContext` (the head model, the forget set, lazy
retained and holdout sets, the base version's artifacts), calls ``unlearn`` and publishes
the :class:`UnlearnResult`. It never knows which method ran.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ml.samples import SampleSet
from ml.training import TrainingConfig

__all__ = [
    "Need",
    "NoParams",
    "Unlearner",
    "UnlearnContext",
    "UnlearnResult",
    "Artifact",
]

Tensors = dict[str, torch.Tensor]


class Need(StrEnum):
    """What a method reads besides the forget set; the pipeline prepares only these."""

    RETAIN = "retain"  # the retained training samples D_r
    HOLDOUT = "holdout"  # held-out samples never trained on (validation)
    CACHE = "cache"  # per-version artifacts built by ``prepare`` (PGU's SVD cache)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class Artifact:
    """Tensors an unlearner keeps with a version, plus JSON metadata."""

    tensors: Tensors
    meta: dict[str, Any] = field(default_factory=dict)


def _no_version_loader(number: int) -> nn.Module:
    raise NotImplementedError(f"this context cannot load version {number}")


@dataclass
class UnlearnContext:
    model: nn.Module  # the base version, loaded, on ``device``
    build_model: Callable[[], nn.Module]  # a freshly initialised model of the architecture
    forget: SampleSet  # D_f: the samples of this batch that the base version still knows
    retain: SampleSet  # D_r: every active training sample not in D_f (read lazily)
    holdout: SampleSet  # D_v: never trained on
    training: TrainingConfig  # the model's training recipe (for retraining and fine-tuning)
    device: torch.device
    base_version: int
    class_labels: list[int] | None = None  # set when the batch deletes whole classes
    artifacts: Callable[[str], Artifact | None] = lambda name: None  # base version's
    progress: Callable[[str, int, int], None] = lambda stage, step, total: None
    seed: int = 0
    # Version N of this model, loaded, on ``device`` (PGU needs the cache's basis version).
    load_version: Callable[[int], nn.Module] = _no_version_loader


@dataclass
class UnlearnResult:
    state_dict: Tensors
    artifacts: dict[str, Artifact] = field(default_factory=dict)  # kept with the new version
    info: dict[str, Any] = field(default_factory=dict)  # timings and facts for the job row


class Unlearner(ABC):
    """A method: declares its needs, validates its params, maps a context to new weights."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    needs: ClassVar[frozenset[Need]] = frozenset()
    # When true, a version without this method's artifacts gets a ``cache`` job first.
    requires_artifacts: ClassVar[bool] = False

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params = self.Params.model_validate(params or {})

    @abstractmethod
    def unlearn(self, context: UnlearnContext) -> UnlearnResult: ...

    def prepare(self, context: UnlearnContext) -> dict[str, Artifact]:
        """Artifacts for the version in ``context.model`` (run as a ``cache`` job)."""
        return {}


def state_dict_of(model: nn.Module) -> Tensors:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
