"""A set of samples of one dataset, read from its adapter only when asked."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ml.datasets import DatasetAdapter

__all__ = ["SampleSet"]


@dataclass
class SampleSet:
    adapter: DatasetAdapter
    positions: np.ndarray  # positions in the adapter's source
    labels: np.ndarray  # int64
    keys: list[str]

    def __len__(self) -> int:
        return len(self.positions)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels); this is the read that touches the data."""
        if not len(self):
            shape = self.adapter.index().input_shape
            return torch.empty((0, *shape)), torch.empty(0, dtype=torch.long)
        return self.adapter.read(self.positions), torch.as_tensor(self.labels, dtype=torch.long)

    def loader(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            TensorDataset(*self.tensors()),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
        )

    def subset(self, size: int, *, seed: int = 0) -> SampleSet:
        """A fixed random subset of at most ``size`` samples (for cheap evaluations)."""
        if len(self) <= size:
            return self
        chosen = np.sort(np.random.default_rng(seed).choice(len(self), size, replace=False))
        return self.take(chosen)

    def take(self, indices: np.ndarray) -> SampleSet:
        return SampleSet(
            self.adapter,
            self.positions[indices],
            self.labels[indices],
            [self.keys[i] for i in indices],
        )

    def without_classes(self, classes: list[int]) -> SampleSet:
        return self.take(np.flatnonzero(~np.isin(self.labels, classes)))
