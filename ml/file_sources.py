"""Sources read from files under the data root: a manifest (CSV or Parquet) and an
image-folder tree.

A manifest has a ``key`` and a ``label`` column, optionally ``split`` (``train``/``test``)
and ``subject``, and either a ``path`` column (a PNG or JPEG file under the data root) or
numeric feature columns (tabular rows). An image-folder tree has one folder per class,
torchvision's ``ImageFolder`` convention: the classes are the folder names in sorted
order, the key is a file's path relative to the tree.

Images are decoded a batch at a time when a job reads them (``in_memory = False``); only
the index (keys, labels, paths, each file's size and modification time) is held. Tabular
rows are parsed once and held, bounded by ``MAX_MANIFEST_BYTES``. Every sample has a
fingerprint taken when the source is indexed (``row=<digest of its manifest row>``,
``size=``, ``mtime=`` of its file); a job compares it with the registered one before it
reads (``ml.sources.check_unchanged``), and a read re-checks each file it opens.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.sources import (
    INDEX_BYTES_PER_SAMPLE,
    MAX_CLASSES,
    PROGRESS_EVERY,
    DatasetAdapter,
    InvalidSource,
    Progress,
    SourceChanged,
    SourceIndex,
    _reason,
    adapters,
    confine,
    storable_key,
)

__all__ = [
    "ManifestAdapter",
    "ImageFolderAdapter",
    "IMAGE_SUFFIXES",
    "count_manifest_rows",
    "count_tree_images",
]

MAX_MANIFEST_BYTES = 256 << 20  # a manifest is parsed whole; tabular rows are held
# Registration indexes a source whole, at about 0.1 to 0.15 ms a row measured
# (docs/benchmarks.md, "Manifest sources"): 250,000 rows keep it under a minute, in a job
# past UNLEARN_DATASET_SYNC_MAX_SAMPLES (``count_manifest_rows`` counts them first).
MAX_ROWS = 250_000
MAX_SUBJECT_CHARS = 200
MAX_PIXELS = 1 << 24  # an image's width x height (4096 x 4096)
IMAGE_FORMATS = ("PNG", "JPEG")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # what an image-folder tree's files may be
GREY_MODES = ("1", "L", "I", "I;16", "F")
RESERVED = ("key", "label", "split", "subject", "path")


@dataclass(frozen=True)
class _Image:
    """What a header says of an image: enough to check a set agrees on one shape."""

    width: int
    height: int
    channels: int


def _header(path: Path, name: str) -> _Image:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.format not in IMAGE_FORMATS:
                raise InvalidSource(f"{name} is a {image.format} image, not PNG or JPEG")
            if image.width * image.height > MAX_PIXELS:
                raise InvalidSource(
                    f"{name} is {image.width}x{image.height}, more than {MAX_PIXELS} pixels"
                )
            channels = 1 if image.mode in GREY_MODES else 3
            found = _Image(image.width, image.height, channels)
            image.verify()  # the file's structure and checksums, without decoding it
            return found
    except InvalidSource:
        raise
    except UnidentifiedImageError:
        raise InvalidSource(f"{name} is not a PNG or JPEG image") from None
    except Image.DecompressionBombError:
        raise InvalidSource(f"{name} has more than {MAX_PIXELS} pixels") from None
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's kinds of broken file
        raise InvalidSource(f"{name} is unreadable: {_reason(error)}") from None


def _stamp(stat: os.stat_result) -> str:
    return f"size={stat.st_size};mtime={stat.st_mtime_ns}"


class _ImageReader:
    """Image files, one per sample, decoded when read; each file's size and modification
    time as indexed, re-checked on every read. A file that is missing or unusable is
    recorded, not raised: registration refuses it (``validate``), a job only if it reads
    it (a forgotten sample's file may be deleted)."""

    def __init__(self, keys: list[str], paths: list[Path | None], rows: list[str] | None) -> None:
        self.keys, self.paths, self.rows = keys, paths, rows
        self.problems: dict[int, str] = {}
        self.stamps: list[str | None] = []
        for position, (key, path) in enumerate(zip(keys, paths, strict=True)):
            try:
                self.stamps.append(None if path is None else _stamp(path.stat()))
            except OSError as error:
                self.problems[position] = f"the file of {key!r} is unreadable: {_reason(error)}"
                self.stamps.append(None)

    @cached_property
    def _first(self) -> tuple[str, _Image]:
        """The first image whose header reads, with its key: every image must have its
        shape (``validate``)."""
        for key, path in zip(self.keys, self.paths, strict=True):
            try:
                if path is not None:
                    return key, _header(path, f"the image of {key!r}")
            except InvalidSource:
                continue
        return "", _Image(0, 0, 1)

    @property
    def shape(self) -> _Image:
        return self._first[1]

    def validate(
        self, positions: np.ndarray | None = None, progress: Progress | None = None
    ) -> None:
        """Every file (at ``positions``; None: all) is there and is a PNG or JPEG image of
        the first image's size and colour (each header read); ``progress`` hears how many
        are checked, every ``PROGRESS_EVERY``."""
        chosen = range(len(self.keys)) if positions is None else [int(p) for p in positions]
        problem = next((self.problems[p] for p in chosen if p in self.problems), None)
        if problem is not None:
            raise InvalidSource(problem)
        first_key, first = self._first
        for done, position in enumerate(chosen):
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(done, len(chosen))
            key, path = self.keys[position], self.paths[position]
            assert path is not None  # a missing one is a problem
            image = _header(path, f"the image of {key!r}")
            if image != first:
                raise InvalidSource(
                    f"images must share one size and colour: {first_key!r} is "
                    f"{_describe(first)}, {key!r} is {_describe(image)}"
                )
        if progress is not None:
            progress(len(chosen), len(chosen))

    def input_shape(self) -> list[int]:
        shape = self.shape
        return [shape.channels, shape.height, shape.width]

    def fingerprint(self, position: int, stamp: str | None) -> str | None:
        if stamp is None:
            return None
        return stamp if self.rows is None else f"row={self.rows[position]};{stamp}"

    def indexed(self) -> list[str | None]:
        return [self.fingerprint(i, stamp) for i, stamp in enumerate(self.stamps)]

    def current(self, positions: np.ndarray) -> list[str | None]:
        found: list[str | None] = []
        for position in positions:
            path = self.paths[position]
            try:
                stamp = None if path is None else _stamp(path.stat())
            except OSError:
                stamp = None
            found.append(self.fingerprint(int(position), stamp))
        return found

    def read(self, positions: np.ndarray) -> torch.Tensor:
        images = [self._decode(int(position)) for position in positions]
        if not images:
            return torch.empty((0, *self.input_shape()))
        try:
            stacked = np.stack(images)
        except ValueError:
            raise SourceChanged(
                {self.keys[p]: "its image's size or colour changed" for p in positions}
            ) from None
        return torch.from_numpy(stacked).div_(255.0)

    def _decode(self, position: int) -> np.ndarray:
        """One image (C, H, W) as float32 in 0..255, from the file as it was indexed."""
        from PIL import Image

        key, path = self.keys[position], self.paths[position]
        if path is None or self.stamps[position] is None:
            raise SourceChanged({key: self.problems.get(position, "its file is not usable")})
        try:
            # Non-blocking: a FIFO put in the file's place must not hang the job.
            with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
                if _stamp(os.fstat(file.fileno())) != self.stamps[position]:
                    raise SourceChanged({key: "file size or modification time changed"})
                data = file.read()
            with Image.open(io.BytesIO(data)) as image:
                grey = image.mode in GREY_MODES
                pixels = np.asarray(image.convert("L" if grey else "RGB"), np.float32)
        except OSError as error:
            raise SourceChanged({key: f"its file is unreadable: {_reason(error)}"}) from None
        return pixels[None] if grey else pixels.transpose(2, 0, 1)


def _describe(image: _Image) -> str:
    colour = "greyscale" if image.channels == 1 else "colour"
    return f"{image.width}x{image.height} {colour}"


def _check_manifest_size(path: Path, given: str) -> None:
    """InvalidSource unless the manifest can be stat'ed and is at most MAX_MANIFEST_BYTES."""
    try:
        size = path.stat().st_size
    except OSError as error:
        raise InvalidSource(f"manifest {given!r} is unreadable: {_reason(error)}") from None
    if size > MAX_MANIFEST_BYTES:
        raise InvalidSource(f"manifest {given!r} is larger than {MAX_MANIFEST_BYTES >> 20} MiB")


def _manifest_columns(path: Path, given: str) -> tuple[list[str], list[list[str]]]:
    """A manifest's header and its rows as text (CSV, or Parquet by its suffix)."""
    _check_manifest_size(path, given)
    if path.suffix.lower() == ".parquet":
        return _parquet(path, given)
    try:
        with open(path, newline="", encoding="utf-8") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            if header is None:
                raise InvalidSource(f"manifest {given!r} is empty")
            rows: list[list[str]] = []
            for number, row in enumerate(reader, start=2):
                if len(rows) >= MAX_ROWS:
                    raise InvalidSource(f"manifest {given!r} has more than {MAX_ROWS} rows")
                if len(row) != len(header):
                    raise InvalidSource(
                        f"manifest line {number} has {len(row)} fields; the header has "
                        f"{len(header)} (every row needs the same columns)"
                    )
                rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InvalidSource(f"manifest {given!r} is unreadable: {_reason(error)}") from None
    return [name.strip() for name in header], rows


def _parquet(path: Path, given: str) -> tuple[list[str], list[list[str]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if pq.ParquetFile(path).metadata.num_rows > MAX_ROWS:  # before the rows are read
            raise InvalidSource(f"manifest {given!r} has more than {MAX_ROWS} rows")
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise InvalidSource(f"manifest {given!r} is unreadable: {_reason(error)}") from None
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_nested(column.type) or pa.types.is_binary(column.type):
            raise InvalidSource(f"manifest column {name!r} must hold text or numbers")
        columns.append(["" if v is None else str(v) for v in column.to_pylist()])
    return list(table.column_names), [list(row) for row in zip(*columns, strict=True)]


@dataclass(frozen=True)
class _Manifest:
    keys: list[str]
    labels: np.ndarray
    splits: list[str]
    rows: list[str]  # each row's digest
    paths: list[str] | None  # as written, for image manifests
    features: np.ndarray | None  # (N, D) float32, for tabular manifests
    num_classes: int
    subjects: list[str | None] | None  # the ``subject`` column, "" read as None


def _check_header(header: list[str]) -> None:
    if len(set(header)) != len(header):
        raise InvalidSource("the manifest's header names a column twice")
    for required in ("key", "label"):
        if required not in header:
            raise InvalidSource(f"the manifest's header has no {required!r} column")


def _parse_manifest(header: list[str], rows: list[list[str]], num_classes: int | None) -> _Manifest:
    _check_header(header)
    column = {name: i for i, name in enumerate(header)}
    feature_columns = [i for i, name in enumerate(header) if name not in RESERVED]
    if "path" in column and feature_columns:
        names = ", ".join(repr(header[i]) for i in feature_columns[:5])
        raise InvalidSource(
            f"a manifest has a 'path' column or feature columns, not both ({names})"
        )
    if "path" not in column and not feature_columns:
        raise InvalidSource("the manifest needs a 'path' column or numeric feature columns")
    keys = [row[column["key"]] for row in rows]
    bad = next((k for k in keys if not storable_key(k)), None)
    if bad is not None:
        raise InvalidSource(f"key {bad!r} is not 1 to 200 characters of text without NUL")
    duplicates = sorted(key for key, count in Counter(keys).items() if count > 1)
    if duplicates:
        raise InvalidSource(f"duplicate keys: {', '.join(map(repr, duplicates[:10]))}")
    top = (num_classes or MAX_CLASSES) - 1
    labels = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        text = row[column["label"]].strip()
        if not (text.isascii() and text.isdigit() and int(text) <= top):
            raise InvalidSource(f"the label of {keys[i]!r} ({text!r}) is not a class in 0..{top}")
        labels[i] = int(text)
    splits = (
        [row[column["split"]].strip() or "train" for row in rows]
        if "split" in column
        else (["train"] * len(rows))
    )
    wrong = next((k for k, s in zip(keys, splits, strict=True) if s not in ("train", "test")), None)
    if wrong is not None:
        raise InvalidSource(f"the split of {wrong!r} must be 'train' or 'test'")
    if "subject" in column:
        long = next(
            (
                k
                for k, r in zip(keys, rows, strict=True)
                if len(r[column["subject"]]) > MAX_SUBJECT_CHARS
            ),
            None,
        )
        if long is not None:
            raise InvalidSource(
                f"the subject of {long!r} is longer than {MAX_SUBJECT_CHARS} characters"
            )
    # The subject stays out of the digest: an unkeyed hash of it would be guessable.
    hashed = [i for i, name in enumerate(header) if name != "subject"]
    digests = [
        hashlib.sha256(
            json.dumps([row[i] for i in hashed], ensure_ascii=False).encode()
        ).hexdigest()[:32]
        for row in rows
    ]
    paths = features = None
    if "path" in column:
        paths = [row[column["path"]] for row in rows]
    else:
        features = np.empty((len(rows), len(feature_columns)), dtype=np.float32)
        for i, row in enumerate(rows):
            try:
                features[i] = [float(row[c]) for c in feature_columns]
            except ValueError:
                raise InvalidSource(f"the features of {keys[i]!r} must be numbers") from None
        if not np.isfinite(features).all():
            raise InvalidSource("the features hold NaN or infinite values")
    classes = num_classes if num_classes else (int(labels.max()) + 1 if len(labels) else 0)
    subjects = (
        [row[column["subject"]].strip() or None for row in rows] if "subject" in column else None
    )
    return _Manifest(keys, labels, splits, digests, paths, features, classes, subjects)


@adapters.register("manifest")
class ManifestAdapter(DatasetAdapter):
    """A CSV or Parquet manifest under the data root: image rows, read as they go, or
    tabular rows, parsed once and held."""

    def __init__(self, source: dict[str, Any], data_root: Path) -> None:
        super().__init__(source, data_root)
        given = str(source.get("path", ""))
        header, rows = _manifest_columns(self.confined(given), given)
        self._manifest = _parse_manifest(header, rows, source.get("num_classes"))
        self._images: _ImageReader | None = None
        self.in_memory = self._manifest.paths is None
        if self._manifest.paths is not None:
            paths: list[Path | None] = []
            problems = {}
            for position, (key, raw) in enumerate(
                zip(self._manifest.keys, self._manifest.paths, strict=True)
            ):
                try:
                    paths.append(self.confined(raw))
                except InvalidSource as error:
                    paths.append(None)
                    problems[position] = f"the image of {key!r}: {error}"
            self._images = _ImageReader(self._manifest.keys, paths, self._manifest.rows)
            self._images.problems |= problems

    def index(self) -> SourceIndex:
        m = self._manifest
        if self._images is not None:
            shape, fingerprints = self._images.input_shape(), self._images.indexed()
        else:
            assert m.features is not None
            shape, fingerprints = [m.features.shape[1]], [f"row={row}" for row in m.rows]
        return SourceIndex(
            m.keys, m.labels, m.splits, m.num_classes, shape, fingerprints, subjects=m.subjects
        )

    def keys(self) -> list[str]:
        return self._manifest.keys

    def validate(
        self, positions: np.ndarray | None = None, progress: Progress | None = None
    ) -> None:
        if self._images is not None:
            self._images.validate(positions, progress)
        elif progress is not None:  # tabular rows were checked as they were parsed
            done = len(self._manifest.keys) if positions is None else len(positions)
            progress(done, done)

    def fingerprints(self, positions: np.ndarray) -> list[str | None]:
        if self._images is not None:
            return self._images.current(positions)
        return super().fingerprints(positions)

    def raw(self, positions: np.ndarray) -> torch.Tensor:
        if self._images is not None:
            return self._images.read(positions)
        assert self._manifest.features is not None
        return torch.from_numpy(self._manifest.features[np.asarray(positions, dtype=np.int64)])

    def read(self, positions: np.ndarray) -> torch.Tensor:
        return self.normalised(self.raw(positions))

    @property
    def nbytes(self) -> int:
        features = self._manifest.features
        held = 0 if features is None else int(features.nbytes)
        return held + INDEX_BYTES_PER_SAMPLE * len(self._manifest.keys)

    def erase(self, positions: np.ndarray) -> None:
        if self._manifest.features is None:
            super().erase(positions)  # image rows: nothing held but paths and stamps
        else:
            self._held(self._manifest.features, positions)


def _class_folders(root: Path, given: str) -> list[str]:
    """An image-folder tree's classes: its sub-folders, in sorted order."""
    try:
        # A class folder that is a link is not followed: it could lead out of the root.
        classes = sorted(
            entry.name for entry in os.scandir(root) if entry.is_dir(follow_symlinks=False)
        )
    except OSError as error:
        raise InvalidSource(f"folder {given!r} is unreadable: {_reason(error)}") from None
    if not classes:
        raise InvalidSource(f"folder {given!r} has no class folders")
    if len(classes) > MAX_CLASSES:
        raise InvalidSource(f"folder {given!r} has more than {MAX_CLASSES} class folders")
    return classes


def _image_files(folder: Path) -> Iterator[tuple[str, str]]:
    """(folder, file name) of every image file below ``folder``, in a stable order."""
    for parent, subfolders, files in os.walk(folder):
        subfolders.sort()
        for file in sorted(files):
            if file.lower().endswith(IMAGE_SUFFIXES):
                yield parent, file


def count_manifest_rows(source: dict[str, Any], data_root: Path) -> int:
    """A manifest's rows, counted without reading them (Parquet: its metadata; CSV: its
    records), after the checks that need no row: the file is under the data root, small
    enough, has ``key`` and ``label`` columns and at most ``MAX_ROWS`` rows."""
    given = str(source.get("path", ""))
    path = confine(data_root, given)
    _check_manifest_size(path, given)
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            file = pq.ParquetFile(path)
            header, rows = list(file.schema_arrow.names), file.metadata.num_rows
        except (OSError, pa.ArrowException) as error:
            raise InvalidSource(f"manifest {given!r} is unreadable: {_reason(error)}") from None
    else:
        try:
            with open(path, newline="", encoding="utf-8") as csv_file:
                reader = csv.reader(csv_file)
                first = next(reader, None)
                if first is None:
                    raise InvalidSource(f"manifest {given!r} is empty")
                header, rows = [name.strip() for name in first], sum(1 for _ in reader)
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise InvalidSource(f"manifest {given!r} is unreadable: {_reason(error)}") from None
    _check_header(header)
    if rows > MAX_ROWS:
        raise InvalidSource(f"manifest {given!r} has more than {MAX_ROWS} rows")
    return rows


def count_tree_images(source: dict[str, Any], data_root: Path) -> int:
    """An image-folder tree's image files, counted by name (none opened), after the checks
    that need no image: the folder is under the data root, has class folders, and at most
    ``MAX_ROWS`` images."""
    given = str(source.get("root", ""))
    root = confine(data_root, given, directory=True)
    count = 0
    for name in _class_folders(root, given):
        for _ in _image_files(root / name):
            count += 1
            if count > MAX_ROWS:
                raise InvalidSource(f"folder {given!r} has more than {MAX_ROWS} images")
    return count


@adapters.register("imagefolder")
class ImageFolderAdapter(DatasetAdapter):
    """A folder under the data root with one sub-folder per class (the classes in sorted
    order, torchvision's ``ImageFolder``); every PNG or JPEG file below a class folder is a
    training sample keyed by its path relative to the tree; other files are ignored."""

    in_memory = False

    def __init__(self, source: dict[str, Any], data_root: Path) -> None:
        super().__init__(source, data_root)
        given = str(source.get("root", ""))
        root = self.confined(given, directory=True)
        classes = _class_folders(root, given)
        keys: list[str] = []
        labels: list[int] = []
        paths: list[Path | None] = []
        problems: dict[int, str] = {}
        for label, name in enumerate(classes):
            for folder, file in _image_files(root / name):
                key = (Path(folder) / file).relative_to(root).as_posix()
                if not storable_key(key):
                    raise InvalidSource(f"the path {key!r} is too long to be a key")
                try:
                    paths.append(self.confined(str(Path(folder) / file)))
                except InvalidSource:
                    paths.append(None)
                    problems[len(keys)] = (
                        f"the image {key!r} is not a regular file inside the data root"
                    )
                keys.append(key)
                labels.append(label)
                if len(keys) > MAX_ROWS:
                    raise InvalidSource(f"folder {given!r} has more than {MAX_ROWS} images")
        self._classes = classes
        self._labels = np.asarray(labels, dtype=np.int64)
        self._images = _ImageReader(keys, paths, None)
        self._images.problems |= problems

    def index(self) -> SourceIndex:
        keys = self._images.keys
        return SourceIndex(
            keys,
            self._labels,
            ["train"] * len(keys),
            len(self._classes),
            self._images.input_shape(),
            self._images.indexed(),
        )

    def keys(self) -> list[str]:
        return self._images.keys

    def validate(
        self, positions: np.ndarray | None = None, progress: Progress | None = None
    ) -> None:
        self._images.validate(positions, progress)

    @property
    def nbytes(self) -> int:
        return INDEX_BYTES_PER_SAMPLE * len(self._images.keys)

    def fingerprints(self, positions: np.ndarray) -> list[str | None]:
        return self._images.current(positions)

    def raw(self, positions: np.ndarray) -> torch.Tensor:
        return self._images.read(positions)

    def read(self, positions: np.ndarray) -> torch.Tensor:
        return self.normalised(self.raw(positions))
