"""The one interface every unlearning method implements.

A worker builds an :class:`UnlearnContext` (the base model, the forget set, the sets the
method declared in ``needs``, the base version's artifacts), runs it through
:func:`run_unlearner` and publishes the :class:`UnlearnResult`. It never knows which method
ran. A set the method did not declare is withheld: reading it fails loudly, so ``needs``
is a promise the tests can hold a method to (PGU reads no retained data).
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ml.class_masking import mask_classes
from ml.samples import SampleSet
from ml.training import TrainingConfig

__all__ = [
    "Need",
    "NoParams",
    "Unlearner",
    "UnlearnContext",
    "UnlearnResult",
    "Artifact",
    "raise_if_diverged",
    "run_unlearner",
    "state_dict_of",
    "unchanged",
]

Tensors = dict[str, torch.Tensor]


class Need(StrEnum):
    """What a method reads besides the forget set; a worker gives it only these."""

    RETAIN = "retain"  # the retained training samples D_r
    VALIDATION = "validation"  # the validation set D_v: held-out samples the stop rules read
    SHADOW = "shadow"  # other held-out samples, for a method's own models (attackers): never
    # the stop rules' D_v nor the audit's non-members
    CACHE = "cache"  # per-version artifacts built by ``prepare`` (PGU's SVD cache): a
    # version without them gets a ``cache`` job before its first deletion batch


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


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
    validation: SampleSet  # D_v: never trained on; the stop rules read it
    shadow: SampleSet  # held out too, disjoint from D_v: what a method fits its attackers on
    training: TrainingConfig  # the model's training recipe (for retraining and fine-tuning)
    device: torch.device
    base_version: int
    class_labels: list[int] | None = None  # set when the batch deletes whole classes
    artifacts: Callable[[str], Artifact | None] = lambda name: None  # base version's
    progress: Callable[[str, int, int], None] = lambda stage, step, total: None
    seed: int = 0
    # Version N of this model, loaded, on ``device`` (PGU needs the cache's basis version).
    load_version: Callable[[int], nn.Module] = _no_version_loader
    # Every class the model has forgotten before this batch (masked in the base weights).
    masked_classes: list[int] = field(default_factory=list)


@dataclass
class UnlearnResult:
    state_dict: Tensors
    artifacts: dict[str, Artifact] = field(default_factory=dict)  # kept with the new version
    # What the method did, for the job's report: steps, stopped_by, the stop rule's checks,
    # the kept check, its own measurements, and its stages' ``*_seconds``.
    info: dict[str, Any] = field(default_factory=dict)
    # The recipe the method trained the new weights with, as run (``retrain``'s, the
    # fine-tuning of ``finetune`` and ``random_labels``): the version records it. None for
    # a method whose own loop makes the weights.
    training: TrainingConfig | None = None

    def report(self) -> dict[str, Any]:
        """``info`` as plain JSON (NumPy and torch scalars and arrays become numbers and
        lists; anything else its text)."""
        return {str(key): _plain(value) for key, value in self.info.items()}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(item) for item in value]
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        return _plain(value.tolist())
    return str(value)


class Unlearner(ABC):
    """A method: declares its needs, validates its params, maps a context to new weights."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    needs: ClassVar[frozenset[Need]] = frozenset()

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params = self.Params.model_validate(params or {})

    @classmethod
    def unsuitable_for(cls, network: nn.Module) -> str | None:
        """Why this method cannot unlearn ``network``, or None when it can (the default).
        The service asks before it stores a model's choice of method, so a mismatch (RFU-SS
        on a network without a bottleneck) answers 422 instead of failing a job later.
        ``network`` may live on the meta device: look at its structure, not its values."""
        return None

    def refuses(self, network: nn.Module) -> str | None:
        """Why this method *with these params* cannot unlearn ``network`` (None: it can):
        the class's :meth:`unsuitable_for`, and any param that names parts of the network
        (PGU's ``layer_gamma``). Asked before a model's choice is stored, so that a
        mismatch answers 422 instead of failing every later batch."""
        return self.unsuitable_for(network)

    def cache_bytes(self, network: nn.Module) -> int:
        """The size of the per-version artifacts :meth:`prepare` keeps for ``network`` (0:
        none), so the service can refuse a network whose cache it is not sized for.
        ``network`` may live on the meta device."""
        return 0

    @abstractmethod
    def unlearn(self, context: UnlearnContext) -> UnlearnResult: ...

    def prepare(self, context: UnlearnContext) -> dict[str, Artifact]:
        """Artifacts for the version in ``context.model`` (run as a ``cache`` job)."""
        return {}


def run_unlearner(
    unlearner: Unlearner, context: UnlearnContext, *, masked_classes: Iterable[int] = ()
) -> UnlearnResult:
    """Run ``unlearner`` on ``context`` and keep class deletion's guarantee: every class in
    ``masked_classes`` (the model's forgotten classes, this batch's ``class_labels``
    included) is masked in the returned weights, whichever method ran. This is the one
    place where masking happens; methods never mask. The sets the method did not declare
    in ``needs`` are withheld from it. Returned weights or buffers that are not finite
    fail the run, whichever method produced them. ``context.model`` holds the returned
    weights afterwards."""
    withheld = {
        name: getattr(context, name).withheld(f"{unlearner.name} did not declare Need.{need.name}")
        for need, name in (
            (Need.RETAIN, "retain"),
            (Need.VALIDATION, "validation"),
            (Need.SHADOW, "shadow"),
        )
        if need not in unlearner.needs
    }
    result = unlearner.unlearn(dataclasses.replace(context, **withheld))
    broken = [name for name, t in result.state_dict.items() if not torch.isfinite(t).all()]
    if broken:  # weights or statistics (BatchNorm's running ones) that no one should serve
        raise RuntimeError(
            f"{unlearner.name} produced non-finite values in {', '.join(broken[:3])}"
            f"{' and others' if len(broken) > 3 else ''}; nothing is published"
        )
    context.model.load_state_dict(result.state_dict)
    classes = sorted({*masked_classes, *(context.class_labels or [])})
    if classes:
        mask_classes(context.model, classes)
        result.state_dict = state_dict_of(context.model)
    return result


def unchanged(model: nn.Module, started: float, why: str) -> UnlearnResult:
    """The base weights as they are: nothing to do (``why`` goes to the job row)."""
    info = {"unlearning_seconds": time.perf_counter() - started, "steps": 0, "stopped_by": why}
    return UnlearnResult(state_dict_of(model), info=info)


def raise_if_diverged(model: nn.Module, method: str, *, lr: float) -> None:
    """Fail the job instead of publishing weights that turned non-finite (``method`` names
    the method in the message, ``lr`` is its step size: the usual remedy is a lower one)."""
    if not all(torch.isfinite(t).all() for t in model.state_dict().values()):
        raise RuntimeError(f"{method} diverged (non-finite weights); lower lr (now {lr})")


def state_dict_of(model: nn.Module) -> Tensors:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
