"""What every dataset source kind shares: the index it gives, the adapter interface (index
once, read a batch of samples by position), the registry of source kinds, per-sample
fingerprints and per-dataset normalisation.

The kinds live in ``ml.datasets`` (sources held in memory) and ``ml.file_sources`` (a
manifest or an image-folder tree, read image by image); ``ml.datasets`` is the one door to
all of them (``index_source``, ``open_source``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.registry import Registry

__all__ = [
    "DatasetAdapter",
    "SourceIndex",
    "InvalidSource",
    "SourceChanged",
    "adapters",
    "check_unchanged",
    "confine",
    "normalise",
]

MAX_KEY_CHARS = 200  # the samples table's key column
MAX_CLASSES = 100_000
INDEX_BYTES_PER_SAMPLE = 512  # a file source's key, path, stamp and digest, as held
# (samples checked, samples to check): called by ``validate`` every ``PROGRESS_EVERY``.
Progress = Callable[[int, int], None]
PROGRESS_EVERY = 256


class InvalidSource(ValueError):
    """The dataset source is unusable (bad path, outside the data root, malformed file).
    Its message reaches the client: it names paths as the client gave them, never the data
    root's absolute path (``ml.datasets`` scrubs what a library's message may add)."""


class SourceChanged(RuntimeError):
    """Samples a job reads are no longer the ones registered; the message names them."""

    SHOWN = 20

    def __init__(self, changes: dict[str, str] | str) -> None:
        if isinstance(changes, str):  # re-raised from a DataLoader worker process
            super().__init__(changes)
            self.changes: dict[str, str] = {}
            return
        shown = [f"{key!r} ({why})" for key, why in list(changes.items())[: self.SHOWN]]
        more = len(changes) - len(shown)
        super().__init__(
            f"the dataset's source changed since it was registered: {len(changes)} "
            f"sample(s) differ: {', '.join(shown)}{f' and {more} more' if more else ''}; "
            "restore them, or register the changed data as a new dataset"
        )
        self.changes = changes


def _reason(error: Exception) -> str:
    """Why an OS call failed, without the file name the OS error carries."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, RuntimeError):  # Path.resolve on Python < 3.13
        return "a symbolic link loop"
    return str(error)


def storable_key(key: str) -> bool:
    try:
        key.encode("utf-8")  # a lone surrogate has no encoding
    except UnicodeEncodeError:
        return False
    return 0 < len(key) <= MAX_KEY_CHARS and "\x00" not in key


@dataclass(frozen=True)
class SourceIndex:
    keys: list[str]
    labels: np.ndarray  # int64, one per sample
    splits: list[str]  # "train" or "test" as the source defines them
    num_classes: int
    input_shape: list[int]
    # Per sample, what identifies its content as registered: ``;``-separated parts,
    # ``row=`` (a manifest row's digest), ``data=`` (an npz row's), ``size=`` and
    # ``mtime=`` (its file's); None where the source cannot change (shipped data).
    fingerprints: list[str | None] | None = None
    normalization: dict[str, list[float]] | None = None  # the one the reads apply
    # Per sample, the person it is about (a manifest's ``subject``; None where a row has
    # none), for registration to digest with the tenant's key: never stored as given.
    subjects: list[str | None] | None = None


class DatasetAdapter(ABC):
    in_memory = True  # False: SampleSet.loader reads batches from ``read`` as it goes
    loader_workers = 0  # DataLoader worker processes for sources read as they go

    def __init__(self, source: dict[str, Any], data_root: Path) -> None:
        self.source, self.data_root = source, data_root
        self.erased: set[int] = set()  # positions whose held inputs were dropped (``erase``)

    @abstractmethod
    def index(self) -> SourceIndex: ...

    @abstractmethod
    def read(self, positions: np.ndarray) -> torch.Tensor:
        """Inputs (float32) of the samples at these positions, in that order, normalised."""

    def raw(self, positions: np.ndarray) -> torch.Tensor:
        """The inputs before normalisation (what a computed normalisation is taken from)."""
        return self.read(positions)

    def read_kept(self, positions: np.ndarray) -> torch.Tensor:
        """``read``, refusing samples this kept copy has dropped (``erase``). A job on
        another thread of the worker (``--pool threads``) may drop them while this one
        reads: their zeroed rows would pass for data. ``erase`` records a position before
        it zeroes the row, so a read that got zeros sees it here; the job fails and its
        retry opens the source afresh (``service.jobs.inputs``)."""
        inputs = self.read(positions)
        dropped = self.erased.intersection(int(p) for p in positions) if self.erased else ()
        if dropped:
            keys = self.keys()
            why = "dropped from the worker's kept copy while this job read it"
            raise SourceChanged({keys[p]: why for p in sorted(dropped)})
        return inputs

    def keys(self) -> list[str]:
        """The source's keys in source order (``index().keys``, maybe without its cost)."""
        return self.index().keys

    def validate(
        self, positions: np.ndarray | None = None, progress: Progress | None = None
    ) -> None:
        """The checks registration makes beyond indexing (every image's header, say), of
        the samples at ``positions`` (None: all; a refresh checks only the new ones);
        ``progress`` hears how far they are, every few hundred samples."""
        return None

    @property
    def nbytes(self) -> int:
        """Memory this adapter holds for its inputs (what a cache of adapters counts)."""
        return 0

    def erase(self, positions: np.ndarray) -> None:
        """Drop what this adapter holds of these samples' inputs (a copy kept between jobs
        must not outlive their erasure from the source): their rows are zeroed and their
        positions kept in ``erased``; a caller that must read them again opens the source
        afresh. A source read as it goes holds none."""
        return None

    def _held(self, rows: torch.Tensor | np.ndarray, positions: np.ndarray) -> None:
        """``erase`` for an adapter whose inputs are ``rows`` (zeroed in place, after their
        positions are recorded: ``read_kept`` relies on that order)."""
        self.erased.update(int(p) for p in positions)
        rows[np.asarray(positions, dtype=np.int64)] = 0

    def fingerprints(self, positions: np.ndarray) -> list[str | None]:
        """These samples' fingerprints as the source is now (None: it has none)."""
        registered = self.index().fingerprints
        if registered is None:
            return [None] * len(positions)
        return [registered[int(p)] for p in positions]

    @cached_property
    def _position_of(self) -> dict[str, int]:
        return {key: position for position, key in enumerate(self.keys())}

    def positions_of(self, keys: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Where these keys are in the source now, and the keys it no longer has."""
        where = self._position_of
        missing = [key for key in keys if key not in where]
        positions = np.array([where.get(key, -1) for key in keys], dtype=np.int64)
        return positions, missing

    def confined(self, raw: str, *, directory: bool = False) -> Path:
        """:func:`confine` under this adapter's data root."""
        return confine(self.data_root, raw, directory=directory)

    @cached_property
    def normalization(self) -> dict[str, list[float]] | None:
        """The source's ``normalization``: given (``{"mean": [...], "std": [...]}``, one
        value per channel or feature), ``"computed"`` over the source's training samples,
        or none."""
        spec = self.source.get("normalization")
        if spec == "computed":
            return _computed(self)
        return spec if isinstance(spec, dict) else None

    def normalised(self, inputs: torch.Tensor) -> torch.Tensor:
        spec = self.normalization
        return inputs if spec is None else normalise(inputs, spec)


def confine(data_root: Path, raw: str, *, directory: bool = False) -> Path:
    """``raw`` resolved (relative paths against the data root), kept inside it, and a
    regular file (or a folder): a FIFO or a device would block or never end a read."""
    root = data_root.resolve()
    try:
        path = Path(raw)
        path = (path if path.is_absolute() else root / path).resolve()
    except (ValueError, OSError, RuntimeError) as error:  # NUL, loops, names too long
        raise InvalidSource(f"path {raw!r} is not usable: {_reason(error)}") from None
    if not path.is_relative_to(root):
        raise InvalidSource(f"path {raw!r} lies outside the data root")
    if not path.exists():
        raise InvalidSource(f"path {raw!r} does not exist under the data root")
    if not (path.is_dir() if directory else path.is_file()):
        kind = "a folder" if directory else "a regular file"
        raise InvalidSource(f"path {raw!r} is not {kind}")
    return path


adapters: Registry[type[DatasetAdapter]] = Registry("dataset source")


def normalise(inputs: torch.Tensor, spec: dict[str, list[float]]) -> torch.Tensor:
    """(inputs - mean) / std along axis 1 (channels of images, features of rows)."""
    channels = inputs.shape[1] if inputs.ndim > 1 else 0
    if len(spec["mean"]) != channels or len(spec["std"]) != channels:
        raise InvalidSource(
            f"normalization needs one mean and one std per channel or feature ({channels})"
        )
    shape = (1, channels) + (1,) * (inputs.ndim - 2)
    mean = torch.tensor(spec["mean"], dtype=inputs.dtype).reshape(shape)
    std = torch.tensor(spec["std"], dtype=inputs.dtype).reshape(shape)
    return (inputs - mean) / std


def _computed(adapter: DatasetAdapter, chunk: int = 512) -> dict[str, list[float]]:
    """Mean and std per channel (or feature) over the source's training samples, read a
    chunk at a time."""
    index = adapter.index()
    train = np.flatnonzero(np.asarray(index.splits) == "train")
    total = squares = None
    count = 0
    for start in range(0, len(train), chunk):
        inputs = adapter.raw(train[start : start + chunk]).double()
        flat = inputs.transpose(0, 1).reshape(inputs.shape[1], -1)
        total = flat.sum(1) if total is None else total + flat.sum(1)
        squares = (flat**2).sum(1) if squares is None else squares + (flat**2).sum(1)
        count += flat.shape[1]
    if total is None or squares is None:
        raise InvalidSource("normalization cannot be computed without training samples")
    mean = total / count
    std = (squares / count - mean**2).clamp(min=0).sqrt()
    std = torch.where(std > 1e-12, std, torch.ones_like(std))  # a constant channel stays as is
    return {"mean": mean.tolist(), "std": std.tolist()}


def describe_change(registered: str | None, now: str | None) -> str | None:
    """What differs between a sample's registered and current fingerprints, or None."""
    if registered is None or registered == now:
        return None
    if now is None:
        return "missing from the source"
    before = dict(part.split("=", 1) for part in registered.split(";"))
    after = dict(part.split("=", 1) for part in now.split(";"))
    names = {
        "row": "manifest row",
        "data": "data, label or split",
        "size": "file size",
        "mtime": "file modification time",
    }
    changed = [names.get(part, part) for part in before if before[part] != after.get(part)]
    return f"{' and '.join(changed)} changed"


def check_unchanged(
    adapter: DatasetAdapter, keys: Sequence[str], registered: Sequence[str | None]
) -> np.ndarray:
    """The positions of ``keys`` in the source, once each sample is checked to be the one
    registered (its fingerprint); raises :class:`SourceChanged` naming every one that is
    not."""
    positions, missing = adapter.positions_of(keys)
    changes = {key: "missing from the source" for key in missing}
    found = positions >= 0
    checked = [(k, r) for k, r, ok in zip(keys, registered, found, strict=True) if ok]
    current = adapter.fingerprints(positions[found])
    for (key, before), now in zip(checked, current, strict=True):
        why = describe_change(before, now)
        if why:
            changes[key] = why
    if changes:
        raise SourceChanged(changes)
    return positions
