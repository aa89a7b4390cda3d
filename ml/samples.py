"""A set of samples of one dataset, read from its adapter only when asked."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ml.datasets import DatasetAdapter, SourceIndex

__all__ = ["SampleSet", "Withheld", "validation_and_audit"]

# Share of the held-out samples that the methods' stop rules read (D_v); the audit's
# non-members come from the rest, so a method never tunes itself on the audit's own data.
VALIDATION_SHARE = 0.5


class Withheld(RuntimeError):
    """A set was read by code that was not given it (an unlearner's undeclared need)."""


class _WithheldAdapter(DatasetAdapter):
    def __init__(self, inner: DatasetAdapter, reason: str) -> None:
        super().__init__(inner.source, inner.data_root)
        self.reason = reason

    def index(self) -> SourceIndex:
        raise Withheld(self.reason)

    def read(self, positions: np.ndarray) -> torch.Tensor:
        raise Withheld(self.reason)


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

    def withheld(self, reason: str) -> SampleSet:
        """An empty stand-in for this set whose every read raises :class:`Withheld`."""
        empty = np.empty(0, dtype=np.int64)
        return SampleSet(_WithheldAdapter(self.adapter, reason), empty, empty, [])

    def split_by_key(self, share: float, *, salt: str) -> tuple[SampleSet, SampleSet]:
        """(the samples whose key hashes below ``share``, the others): the same split for
        the same keys on every machine and in every process, whatever the set's order."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"Invalid share: {share}")
        cut = int(share * 2**32)
        below = np.array(
            [
                int.from_bytes(hashlib.sha256(f"{salt}:{key}".encode()).digest()[:4], "big") < cut
                for key in self.keys
            ],
            dtype=bool,
        )
        return self.take(np.flatnonzero(below)), self.take(np.flatnonzero(~below))

    def without_classes(self, classes: list[int]) -> SampleSet:
        return self.take(np.flatnonzero(~np.isin(self.labels, classes)))


def validation_and_audit(holdout: SampleSet) -> tuple[SampleSet, SampleSet]:
    """The held-out samples split in two disjoint, stable parts: (D_v, which the methods'
    stop rules read, the audit's non-member pool)."""
    return holdout.split_by_key(VALIDATION_SHARE, salt="validation")
