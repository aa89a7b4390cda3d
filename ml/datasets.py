"""Dataset adapters: where samples come from, with stable keys and a seeded holdout split.

An adapter indexes its source once (keys, labels, native split) and reads images by
position on demand, so a caller that never asks for a sample never reads it (PGU's
promise that it reads no retained data is tested by an adapter that fails on such reads).
This module holds the sources kept in memory (digits, the MNIST family, npz) and is the
one door to every kind (``index_source``, ``open_source``); the interface is
``ml.sources``, the sources read from files as they go ``ml.file_sources``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import zipfile
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml import file_sources as file_sources
from ml.sources import (
    MAX_CLASSES,
    MAX_KEY_CHARS,
    DatasetAdapter,
    InvalidSource,
    Progress,
    SourceChanged,
    SourceIndex,
    _reason,
    adapters,
    check_unchanged,
    storable_key,
)

__all__ = [
    "DatasetAdapter",
    "SourceIndex",
    "InvalidSource",
    "SourceChanged",
    "adapters",
    "open_source",
    "index_source",
    "count_samples",
    "clear_cache",
    "check_unchanged",
    "changed_samples",
]


class InMemoryAdapter(DatasetAdapter):
    """Sources small enough to hold as one tensor (digits, the MNIST family, npz files)."""

    def __init__(self, source: dict[str, Any], data_root: Path) -> None:
        super().__init__(source, data_root)
        self._inputs, self._index = self.load()

    @abstractmethod
    def load(self) -> tuple[torch.Tensor, SourceIndex]: ...

    def index(self) -> SourceIndex:
        return self._index

    def raw(self, positions: np.ndarray) -> torch.Tensor:
        return self._inputs[torch.as_tensor(positions, dtype=torch.long)]

    def read(self, positions: np.ndarray) -> torch.Tensor:
        return self.normalised(self.raw(positions))

    @property
    def nbytes(self) -> int:
        return self._inputs.element_size() * self._inputs.nelement()

    def erase(self, positions: np.ndarray) -> None:
        self._held(self._inputs, positions)


def _train_test_keys(is_test: np.ndarray) -> tuple[list[str], list[str]]:
    keys, splits, counters = [], [], {"train": 0, "test": 0}
    for test in is_test:
        split = "test" if test else "train"
        keys.append(f"{split}/{counters[split]:05d}")
        splits.append(split)
        counters[split] += 1
    return keys, splits


@adapters.register("builtin")
class BuiltinAdapter(InMemoryAdapter):
    """Datasets shipped inside installed packages: ``sklearn-digits`` (1,797 8x8 images)."""

    TEST_FRACTION = 0.2

    def load(self) -> tuple[torch.Tensor, SourceIndex]:
        if self.source.get("name") != "sklearn-digits":
            raise InvalidSource(f"unknown builtin dataset {self.source.get('name')!r}")
        from sklearn.datasets import load_digits

        digits = load_digits()
        inputs = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
        # A fixed test split (seed 0), so keys are the same on every machine.
        rng = np.random.default_rng(0)
        is_test = rng.random(len(inputs)) < self.TEST_FRACTION
        keys, splits = _train_test_keys(is_test)
        labels = np.asarray(digits.target, dtype=np.int64)
        return inputs, SourceIndex(keys, labels, splits, 10, [1, 8, 8])


@adapters.register("torchvision")
class TorchvisionAdapter(InMemoryAdapter):
    """MNIST-family sets from local IDX files (``<root>/<Name>/raw``); never downloads."""

    NAMES = ("FashionMNIST", "MNIST", "KMNIST")

    def load(self) -> tuple[torch.Tensor, SourceIndex]:
        import torchvision.datasets as tv

        name = self.source.get("name")
        if name not in self.NAMES:
            raise InvalidSource(f"torchvision dataset must be one of {', '.join(self.NAMES)}")
        given = str(self.source.get("root", "."))
        root = self.confined(given, directory=True)
        try:
            train = getattr(tv, name)(str(root), train=True, download=False)
            test = getattr(tv, name)(str(root), train=False, download=False)
        except RuntimeError:  # torchvision's message suggests a download, which never happens
            raise InvalidSource(
                f"{name} files not found under {given!r}: expected the IDX files in "
                f"{name}/raw/ there"
            ) from None
        inputs = torch.cat([train.data, test.data]).float().div_(255.0).unsqueeze(1)
        labels = torch.cat([train.targets, test.targets]).numpy().astype(np.int64)
        keys = [f"train/{i:05d}" for i in range(len(train.data))]
        keys += [f"test/{i:05d}" for i in range(len(test.data))]
        splits = ["train"] * len(train.data) + ["test"] * len(test.data)
        num_classes = len(train.classes)
        return inputs, SourceIndex(keys, labels, splits, num_classes, list(inputs.shape[1:]))


@adapters.register("npz")
class NpzAdapter(InMemoryAdapter):
    """A ``.npz`` file with numeric ``x`` (N, ...), integer ``y`` (N,) in ``0..MAX_CLASSES-1``,
    string ``keys`` (N,), and an optional ``split`` (N,) of ``train``/``test`` (absent:
    everything is training data). Anything else is an InvalidSource, never a crash."""

    MAX_CLASSES = MAX_CLASSES
    MAX_KEY_CHARS = MAX_KEY_CHARS
    NPY_MAGIC = b"\x93NUMPY"

    def load(self) -> tuple[torch.Tensor, SourceIndex]:
        path = self.confined(str(self.source.get("path", "")))
        try:
            with open(path, "rb") as head:
                magic = head.read(len(self.NPY_MAGIC))
        except OSError as error:
            raise InvalidSource(f"unreadable npz file: {_reason(error)}") from None
        if magic == self.NPY_MAGIC:  # np.load would read the whole array to say so
            raise InvalidSource(
                "the file is a single .npy array, not an npz archive: save x, y and keys "
                "together with numpy.savez"
            )
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):  # replaced since its magic was read
                raise ValueError("not an npz archive")
            with loaded as file:
                x, y, keys = file["x"], file["y"], file["keys"]
                split = file["split"] if "split" in file.files else None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise InvalidSource(f"unreadable npz file: {_reason(error)}") from None
        if x.ndim < 2 or y.ndim != 1 or keys.ndim != 1:
            raise InvalidSource("x must be (N, ...) with N >= 1, y and keys (N,)")
        n = len(x)
        if len(y) != n or len(keys) != n or (split is not None and len(split) != n):
            raise InvalidSource("x, y, keys (and split) must have the same first dimension")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
            raise InvalidSource("x must hold real numbers")
        if n and not np.isfinite(x).all():
            raise InvalidSource("x holds NaN or infinite values")
        if not np.issubdtype(y.dtype, np.integer) or (
            n and not 0 <= int(y.min()) <= int(y.max()) < self.MAX_CLASSES
        ):
            raise InvalidSource(f"y must hold class labels in 0..{self.MAX_CLASSES - 1}")
        if keys.dtype.kind not in "US" or (split is not None and split.dtype.kind not in "US"):
            raise InvalidSource("keys (and split) must be string arrays")
        key_list = [k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k) for k in keys]
        if len(set(key_list)) != n:
            raise InvalidSource("keys must be unique")
        if not all(storable_key(k) for k in key_list):
            raise InvalidSource(
                f"keys must be 1 to {self.MAX_KEY_CHARS} characters of valid Unicode, without NUL"
            )
        splits = [
            s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s)
            for s in (split if split is not None else ["train"] * n)
        ]
        if not set(splits) <= {"train", "test"}:
            raise InvalidSource("split values must be 'train' or 'test'")
        inputs = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
        if inputs.ndim == 3:  # (N, H, W) images get their channel axis
            inputs = inputs.unsqueeze(1)
        num_classes = int(y.max()) + 1 if n else 0
        return inputs, SourceIndex(
            key_list,
            y.astype(np.int64),
            splits,
            num_classes,
            list(inputs.shape[1:]),
            _row_digests(inputs, y, splits),
        )


def _row_digests(inputs: torch.Tensor, labels: np.ndarray, splits: list[str]) -> list[str | None]:
    """Each row's fingerprint: a digest of its inputs (as read), label and split."""
    rows = inputs.reshape(len(inputs), -1).numpy()
    return [
        "data=" + hashlib.sha256(row.tobytes() + f"|{int(label)}|{split}".encode()).hexdigest()[:32]
        for row, label, split in zip(rows, labels, splits, strict=True)
    ]


def count_samples(source: dict[str, Any], data_root: Path) -> int | None:
    """How many samples a file source has, counted cheaply (a manifest's rows, a tree's
    image files; nothing decoded), after the checks that need no sample; None for the
    other kinds (their size is fixed or known only once loaded)."""
    counters = {
        "manifest": file_sources.count_manifest_rows,
        "imagefolder": file_sources.count_tree_images,
    }
    counter = counters.get(str(source.get("kind", "")))
    if counter is None:
        return None
    with _client_facing(data_root):
        return counter(source, data_root)


def index_source(
    source: dict[str, Any],
    data_root: Path,
    *,
    known: Collection[str] | None = None,
    progress: Progress | None = None,
) -> SourceIndex:
    """A source's index, read once and nothing kept: the API process registers datasets
    and must not hold their arrays (a registration of three spellings of one 400 MB file
    once pinned 1.2 GB in it for good). ``known``: the keys a dataset already has (a
    refresh), whose samples are not validated again (a forgotten one's file may be gone;
    a changed one is the caller's to report). ``progress``: told how many samples are
    validated, every few hundred."""
    with _client_facing(data_root):
        adapter = adapters.get(source.get("kind", ""))(source, data_root)
        if known is None:
            adapter.validate(progress=progress)
        else:
            keys = adapter.keys()
            adapter.validate(np.array([i for i, k in enumerate(keys) if k not in known], int))
        index = adapter.index()
        normalization = adapter.normalization
        if normalization is not None and len(normalization["mean"]) != index.input_shape[0]:
            raise InvalidSource(
                f"normalization needs {index.input_shape[0]} values (one per channel or "
                f"feature), not {len(normalization['mean'])}"
            )
        return dataclasses.replace(index, normalization=normalization)


def changed_samples(
    source: dict[str, Any], data_root: Path, keys: Sequence[str], registered: Sequence[str | None]
) -> dict[str, str]:
    """Which of these samples the source no longer has as registered (key -> why), read
    through an adapter that is not kept (the API process holds no arrays)."""
    with _client_facing(data_root):
        adapter = adapters.get(source.get("kind", ""))(source, data_root)
        try:
            check_unchanged(adapter, keys, registered)
        except SourceChanged as error:
            return error.changes
        return {}


def open_source(
    source: dict[str, Any],
    data_root: Path,
    *,
    cache_bytes: int = 4 << 30,
    loader_workers: int = 0,
    fresh: bool = False,
) -> DatasetAdapter:
    """The adapter for a source, kept for the next job: one entry per file (however its
    path is spelled) as it is now (a replaced file is read again), the least recently used
    dropped first while the cached inputs pass ``cache_bytes``. A source read as it goes
    is read by ``loader_workers`` DataLoader worker processes (0: in the caller). ``fresh``
    reads the source again (the kept adapter erased samples the caller reads)."""
    with _client_facing(data_root):
        identity, place = _identity(source, data_root)
        adapter = None if fresh else _CACHE.get(identity)
        if adapter is None:
            adapter = adapters.get(source.get("kind", ""))(source, data_root)
            _CACHE.put(identity, adapter, cache_bytes, place=place)
        adapter.loader_workers = loader_workers
        return adapter


def clear_cache() -> None:
    _CACHE.clear()


class _SourceCache:
    """Adapters by source identity, bounded by the bytes of their inputs and indexes, and
    by count (LRU). An adapter of a file as it was before it changed is dropped when the
    file as it is now is put: it would be read by no one again, and may hold rows the
    product has since erased."""

    MAX_ENTRIES = 8

    def __init__(self) -> None:
        self._entries: OrderedDict[str, DatasetAdapter] = OrderedDict()
        self._places: dict[str, str] = {}  # identity -> the source without its files' stamps
        self._lock = threading.Lock()

    def get(self, identity: str) -> DatasetAdapter | None:
        with self._lock:
            adapter = self._entries.get(identity)
            if adapter is not None:
                self._entries.move_to_end(identity)
            return adapter

    def put(self, identity: str, adapter: DatasetAdapter, budget: int, place: str = "") -> None:
        with self._lock:
            for stale in [i for i, p in self._places.items() if p == place and i != identity]:
                self._entries.pop(stale, None)
                self._places.pop(stale, None)
            self._places[identity] = place
            self._entries[identity] = adapter
            self._entries.move_to_end(identity)
            while len(self._entries) > 1 and (
                self.nbytes > budget or len(self._entries) > self.MAX_ENTRIES
            ):
                self._entries.popitem(last=False)
            if adapter.nbytes > budget:  # larger than the whole budget: used once, not kept
                self._entries.pop(identity, None)

    @property
    def nbytes(self) -> int:
        return sum(adapter.nbytes for adapter in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._places.clear()


_CACHE = _SourceCache()


def _identity(source: dict[str, Any], data_root: Path) -> tuple[str, str]:
    """The source with each path resolved and stamped with its file's identity (device,
    inode, size, modification time): spellings of one file share an entry, and a file
    replaced in place is a new one. A folder (an image-folder tree) is stamped by every
    folder below it too, since adding or removing an image changes only its own folder.
    A path that does not resolve stays as given (the adapter then says what is wrong).
    And its place: the same without the stamps, shared by the file's states over time."""
    stamped = dict(source)
    placed = dict(source)
    root = data_root.resolve()
    for field in ("path", "root"):
        if isinstance(source.get(field), str):
            try:
                path = Path(source[field])
                path = (path if path.is_absolute() else root / path).resolve()
                placed[field] = str(path)
                stat = path.stat()
                stamped[field] = [str(path), stat.st_dev, stat.st_ino, stat.st_size]
                stamped[field] += [stat.st_mtime_ns]
                if path.is_dir():
                    stamped[field].append(_tree_stamp(path))
            except (ValueError, OSError, RuntimeError):
                pass
    suffix = "\0" + str(root)
    return (
        json.dumps(stamped, sort_keys=True, default=str) + suffix,
        json.dumps(placed, sort_keys=True, default=str) + suffix,
    )


def _tree_stamp(root: Path) -> str:
    """A digest of every folder's path and modification time below ``root`` (links not
    followed): it changes when any image is added, removed or renamed."""
    digest = hashlib.sha256()
    for folder, subfolders, _ in os.walk(root):
        subfolders.sort()
        digest.update(f"{folder}\0{os.stat(folder).st_mtime_ns}\0".encode())
    return digest.hexdigest()


@contextmanager
def _client_facing(data_root: Path) -> Iterator[None]:
    """InvalidSource messages never carry the data root's absolute path."""
    try:
        yield
    except InvalidSource as error:
        message = str(error)
        for root in {str(data_root.resolve()), str(data_root.absolute())} - {"/"}:
            message = message.replace(root, "<data root>")
        raise InvalidSource(message) from None


def holdout_mask(splits: list[str], fraction: float, seed: int) -> np.ndarray:
    """Which source training samples become holdout (never trained on), seeded."""
    rng = np.random.default_rng(seed)
    train = np.flatnonzero(np.asarray(splits) == "train")
    chosen = rng.choice(train, size=int(round(fraction * len(train))), replace=False)
    mask = np.zeros(len(splits), dtype=bool)
    mask[chosen] = True
    return mask
