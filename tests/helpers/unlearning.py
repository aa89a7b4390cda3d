"""A small trained setting on scikit-learn's digits for the unlearner tests.

A small_cnn trained on only 300 training samples memorises them: its accuracy on a forget
set drawn from them exceeds its accuracy on the held-out rest of the training split by
several points, the gap that unlearning must close. Built once per test session.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ml.architectures import build_model
from ml.datasets import DatasetAdapter, open_source
from ml.samples import SampleSet
from ml.training import TrainingConfig, accuracy, train
from ml.unlearners.base import Artifact, UnlearnContext

__all__ = ["DigitsSetup", "digits_setup", "context_for", "accuracy_of", "RetainGuard"]

DEVICE = torch.device("cpu")
TRAIN_SIZE, FORGET_SIZE, SHADOW_SIZE = 300, 50, 200
ARCHITECTURE = {"channels": [16, 32], "hidden": 64}
RECIPE = TrainingConfig(epochs=60, batch_size=32, lr=1e-3, seed=0)


@dataclass(frozen=True)
class DigitsSetup:
    adapter: DatasetAdapter
    train: SampleSet  # D: what the model was trained on
    forget: SampleSet  # D_f, drawn from D
    retain: SampleSet  # D \ D_f
    holdout: SampleSet  # the rest of the training split, never trained on: D_v in the tests
    shadow: SampleSet  # never trained on, disjoint from ``holdout``: attackers' non-members
    test: SampleSet  # the source's test split
    state_dict: dict[str, torch.Tensor]

    def build(self) -> nn.Module:
        return build_model("small_cnn", ARCHITECTURE, [1, 8, 8], 10)

    def model(self) -> nn.Module:
        model = self.build()
        model.load_state_dict(copy.deepcopy(self.state_dict))
        return model.eval()


def _samples(adapter: DatasetAdapter, positions: np.ndarray) -> SampleSet:
    index = adapter.index()
    positions = np.sort(positions)
    return SampleSet(
        adapter, positions, index.labels[positions], [index.keys[p] for p in positions]
    )


@lru_cache(maxsize=1)
def digits_setup() -> DigitsSetup:
    torch.set_num_threads(1)  # the test machine's cores are shared
    adapter = open_source({"kind": "builtin", "name": "sklearn-digits"}, Path("."))
    splits = np.asarray(adapter.index().splits)
    training = np.random.default_rng(0).permutation(np.flatnonzero(splits == "train"))
    train_set = _samples(adapter, training[:TRAIN_SIZE])
    tested = np.flatnonzero(splits == "test")
    forget_rows = np.sort(np.random.default_rng(1).choice(TRAIN_SIZE, FORGET_SIZE, replace=False))
    torch.manual_seed(RECIPE.seed)  # the initial weights too, whatever ran before
    model = build_model("small_cnn", ARCHITECTURE, [1, 8, 8], 10)
    train(model, train_set, RECIPE, device=DEVICE)
    return DigitsSetup(
        adapter=adapter,
        train=train_set,
        forget=train_set.take(forget_rows),
        retain=train_set.take(np.setdiff1d(np.arange(TRAIN_SIZE), forget_rows)),
        holdout=_samples(adapter, training[TRAIN_SIZE:]),
        # Part of the test split: TA reads it too, which does not matter to these tests.
        shadow=_samples(adapter, tested[:SHADOW_SIZE]),
        test=_samples(adapter, tested),
        state_dict={k: v.clone() for k, v in model.state_dict().items()},
    )


def context_for(
    setup: DigitsSetup,
    model: nn.Module,
    *,
    forget: SampleSet,
    retain: SampleSet,
    validation: SampleSet | None = None,
    shadow: SampleSet | None = None,
    base_version: int = 1,
    artifacts: dict[str, Artifact] | None = None,
    **extra,
) -> UnlearnContext:
    """An UnlearnContext the way a worker builds one (``workers.workload``)."""
    found = artifacts or {}
    return UnlearnContext(
        model=model,
        build_model=setup.build,
        forget=forget,
        retain=retain,
        validation=setup.holdout if validation is None else validation,
        shadow=setup.shadow if shadow is None else shadow,
        training=RECIPE,
        device=DEVICE,
        base_version=base_version,
        artifacts=found.get,
        **extra,
    )


def accuracy_of(model: nn.Module, samples: SampleSet) -> float:
    result = accuracy(model, samples, device=DEVICE)
    assert result is not None
    return result


class RetainGuard(DatasetAdapter):
    """The dataset, except that reading any of the ``forbidden`` positions fails the test."""

    def __init__(self, inner: DatasetAdapter, forbidden: np.ndarray) -> None:
        super().__init__(inner.source, inner.data_root)
        self.inner, self.forbidden = inner, set(forbidden.tolist())
        self.reads = 0

    def index(self):
        return self.inner.index()

    def read(self, positions: np.ndarray) -> torch.Tensor:
        touched = self.forbidden.intersection(positions.tolist())
        assert not touched, f"read {len(touched)} samples it must not read"
        self.reads += 1
        return self.inner.read(positions)

    def wrap(self, samples: SampleSet) -> SampleSet:
        """The same samples, read through this guard."""
        return SampleSet(self, samples.positions, samples.labels, samples.keys)
