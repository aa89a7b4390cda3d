"""A set of samples of one dataset, read from its adapter only when asked: whole
(``tensors``), a batch at a time (``batches``), or through a DataLoader (``loader``) that
reads each batch from the adapter as it goes where the source is not held in memory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from ml.datasets import DatasetAdapter, SourceIndex

__all__ = ["SampleSet", "Withheld", "HeldOut", "split_holdout", "key_hashes"]

# The held-out samples in three parts, by key hash: what a method may fit its own models on
# (the shadow set: DAU's attacker, LTU's membership models), what the stop rules read (D_v),
# and the audit's non-members (the rest). No method tunes itself on what judges it.
SHADOW_SHARE = 0.2
VALIDATION_SHARE = 0.3


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
        inputs = self.adapter.read_kept(self.positions)
        return inputs, torch.as_tensor(self.labels, dtype=torch.long)

    def batches(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs, labels) ``size`` samples at a time, in order: one read per batch."""
        labels = torch.as_tensor(self.labels, dtype=torch.long)
        for start in range(0, len(self), size):
            chunk = self.positions[start : start + size]
            yield self.adapter.read_kept(chunk), labels[start : start + size]

    def loader(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """Batches of (inputs, labels). A source held in memory is indexed as one tensor;
        any other is read a batch at a time, by the adapter's ``loader_workers`` worker
        processes if any, in the same order for the same seed."""
        generator = torch.Generator().manual_seed(seed)
        if self.adapter.in_memory:
            return DataLoader(
                TensorDataset(*self.tensors()),
                batch_size=batch_size,
                shuffle=shuffle,
                generator=generator,
            )
        rows = range(len(self))
        order = RandomSampler(rows, generator=generator) if shuffle else SequentialSampler(rows)
        return DataLoader(
            _Batches(self),
            batch_size=None,
            sampler=BatchSampler(order, batch_size, drop_last=False),
            generator=generator,
            num_workers=self.adapter.loader_workers,
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

    def split_by_key(self, *shares: float, salt: str) -> list[SampleSet]:
        """The samples in ``len(shares) + 1`` parts by where their key's hash falls: the
        first part ``shares[0]`` of the hash range, the next ``shares[1]``, ..., the last
        part the rest. The same split for the same keys on every machine and in every
        process, whatever the set's order."""
        if any(share < 0 for share in shares) or sum(shares) > 1.0:
            raise ValueError(f"Invalid shares: {shares}")
        cuts = np.cumsum(shares) * 2**32
        hashes = np.array(
            [
                int.from_bytes(hashlib.sha256(f"{salt}:{key}".encode()).digest()[:4], "big")
                for key in self.keys
            ],
            dtype=np.int64,
        )
        part = np.searchsorted(cuts, hashes, side="right")
        return [self.take(np.flatnonzero(part == i)) for i in range(len(shares) + 1)]

    def without_classes(self, classes: list[int]) -> SampleSet:
        return self.take(np.flatnonzero(~np.isin(self.labels, classes)))


class _Batches(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A sample set read a batch of rows at a time (what a BatchSampler hands over)."""

    def __init__(self, samples: SampleSet) -> None:
        self.samples = samples
        self.labels = torch.as_tensor(samples.labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        chosen = np.asarray(rows, dtype=np.int64)
        return self.samples.adapter.read_kept(self.samples.positions[chosen]), self.labels[chosen]


def key_hashes(keys: Sequence[str]) -> np.ndarray:
    """A 63-bit hash of each sample key (int64): what a tensor can hold of a key."""
    return np.array(
        [int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1 for key in keys],
        dtype=np.int64,
    )


class HeldOut(NamedTuple):
    shadow: SampleSet  # a method may fit its own models on these (``Need.SHADOW``)
    validation: SampleSet  # D_v: the stop rules read these (``Need.VALIDATION``)
    audit_nonmembers: SampleSet  # the audit's non-members: no method reads them


def split_holdout(holdout: SampleSet) -> HeldOut:
    """The held-out samples in three disjoint, stable parts (the shares above). The audit's
    part is the one it had when the split had two parts (the same salt and cut)."""
    return HeldOut(*holdout.split_by_key(SHADOW_SHARE, VALIDATION_SHARE, salt="validation"))
