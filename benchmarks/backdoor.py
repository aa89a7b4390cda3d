"""The RFU-SS paper's backdoor protocol: a trigger patch stamped on some training images,
which are relabelled to one target class; a model trained with them learns to answer the
target class whenever it sees the trigger. Forgetting those samples should bring the
backdoor's success rate (triggered test images of other classes classified as the target)
down to what a model retrained without them shows.

``poison`` returns the training set with the chosen samples triggered and relabelled, read
through :class:`TriggeredAdapter`, so every method, reference and audit reads the poisoned
samples exactly as the model was trained on them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ml.datasets import DatasetAdapter, SourceIndex
from ml.samples import SampleSet
from ml.training import predict

__all__ = ["TRIGGER_SIZE", "TriggeredAdapter", "poison", "stamp", "success_rate"]

TRIGGER_SIZE = 3  # a white square in the bottom-right corner, one pixel from the edge


def stamp(inputs: torch.Tensor) -> torch.Tensor:
    """``inputs`` (N, C, H, W) with the trigger patch (a copy)."""
    triggered = inputs.clone()
    triggered[..., -TRIGGER_SIZE - 1 : -1, -TRIGGER_SIZE - 1 : -1] = 1.0
    return triggered


class TriggeredAdapter(DatasetAdapter):
    """The dataset, with the trigger on the images at ``positions``."""

    def __init__(self, inner: DatasetAdapter, positions: np.ndarray) -> None:
        super().__init__(inner.source, inner.data_root)
        self.inner, self.triggered = inner, np.sort(positions)

    def index(self) -> SourceIndex:
        return self.inner.index()

    def read(self, positions: np.ndarray) -> torch.Tensor:
        inputs = self.inner.read(positions).clone()
        hit = torch.as_tensor(np.isin(positions, self.triggered))
        inputs[hit] = stamp(inputs[hit])
        return inputs


def poison(train: SampleSet, rows: np.ndarray, target: int) -> SampleSet:
    """``train`` with the samples at ``rows`` triggered and relabelled ``target``."""
    labels = train.labels.copy()
    labels[rows] = target
    adapter = TriggeredAdapter(train.adapter, train.positions[rows])
    return SampleSet(adapter, train.positions, labels, train.keys)


def success_rate(model: nn.Module, test: SampleSet, target: int, *, device: torch.device) -> float:
    """Share of triggered test images of the other classes that ``model`` calls ``target``."""
    others = test.take(np.flatnonzero(test.labels != target))
    inputs, _ = others.tensors()
    predictions = predict(model, stamp(inputs), device=device).argmax(1)
    return float((predictions == target).float().mean())
