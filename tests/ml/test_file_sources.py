"""Manifest and image-folder sources: what they index, that they read images a batch at a
time (never the whole set), in the order an in-memory set would, and that a sample changed
after registration is named, not read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ml import file_sources
from ml.architectures import build_model
from ml.datasets import clear_cache, index_source, open_source
from ml.file_sources import _ImageReader
from ml.samples import SampleSet
from ml.sources import INDEX_BYTES_PER_SAMPLE, InvalidSource, SourceChanged, check_unchanged
from ml.training import TrainingConfig, accuracy, train
from tests.helpers.own_data import (
    SIZE,
    digit_pixels,
    tabular_rows,
    write_csv,
    write_parquet,
    write_pngs,
    write_tree,
)

MANIFEST = {"kind": "manifest", "path": "digits.csv"}


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_csv(tmp_path / "digits.csv", write_pngs(tmp_path))
    return tmp_path


def _whole(adapter) -> SampleSet:
    index = adapter.index()
    return SampleSet(adapter, np.arange(len(index.keys)), index.labels, list(index.keys))


def test_a_manifest_indexes_and_reads_the_pngs_it_names(root):
    index = index_source(MANIFEST, root)
    images, labels = digit_pixels()
    assert index.keys[:2] == ["digit-000", "digit-001"] and index.input_shape == [1, 8, 8]
    assert index.labels.tolist() == labels.tolist() and index.num_classes == 10
    assert index.splits == ["train"] * SIZE and index.normalization is None
    stat = (root / "img" / "7.png").stat()
    assert index.fingerprints is not None
    assert index.fingerprints[7].endswith(f";size={stat.st_size};mtime={stat.st_mtime_ns}")
    assert index.fingerprints[7].startswith("row=")
    adapter = open_source(MANIFEST, root)
    # No pixels held: only the index (keys, paths, stamps), which the cache counts too.
    assert not adapter.in_memory and adapter.nbytes == INDEX_BYTES_PER_SAMPLE * SIZE
    read = adapter.read(np.array([7, 3]))
    assert torch.equal(read[:, 0], torch.from_numpy(images[[7, 3]] / 255.0).float())


def test_computed_normalization_is_the_training_samples_mean_and_std(root):
    index = index_source({**MANIFEST, "normalization": "computed"}, root)
    pixels = digit_pixels()[0] / 255.0
    assert index.normalization is not None
    assert index.normalization["mean"] == pytest.approx([pixels.mean()])
    assert index.normalization["std"] == pytest.approx([pixels.std()])
    adapter = open_source({**MANIFEST, "normalization": index.normalization}, root)
    normalised = adapter.read(np.arange(SIZE))
    assert float(normalised.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(normalised.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)


def test_a_tabular_manifest_is_held_in_memory(tmp_path):
    write_csv(tmp_path / "rows.csv", tabular_rows())
    adapter = open_source({"kind": "manifest", "path": "rows.csv"}, tmp_path)
    index = adapter.index()
    assert adapter.in_memory and adapter.nbytes == SIZE * (64 * 4 + INDEX_BYTES_PER_SAMPLE)
    assert index.input_shape == [64] and index.fingerprints is not None
    assert all(f is not None and f.startswith("row=") for f in index.fingerprints)
    pixels = digit_pixels()[0].reshape(SIZE, 64) / 255.0
    assert torch.allclose(adapter.read(np.array([5])), torch.from_numpy(pixels[[5]]).float())


def test_an_image_folder_tree_is_keyed_by_relative_path(tmp_path):
    keys = write_tree(tmp_path)
    (tmp_path / "tree" / "notes.md").write_text("ignored")
    (tmp_path / "tree" / "4" / "notes.txt").write_text("ignored: not an image suffix")
    index = index_source({"kind": "imagefolder", "root": "tree"}, tmp_path)
    assert sorted(index.keys) == sorted(keys) and index.input_shape == [1, 8, 8]
    labels = dict(zip(index.keys, index.labels.tolist(), strict=True))
    assert all(labels[key] == int(key.split("/")[0]) for key in keys)  # folders 0..9 sorted


def test_an_image_added_to_a_folder_is_seen_and_a_linked_class_folder_is_not(tmp_path):
    """The worker's cache of sources stamps every folder of a tree, so a new image under a
    class folder opens a fresh index; a class folder that is a link (it could lead out of
    the data root) is not a class."""
    clear_cache()
    keys = write_tree(tmp_path)
    source = {"kind": "imagefolder", "root": "tree"}
    before = open_source(source, tmp_path)
    assert open_source(source, tmp_path) is before  # unchanged: the cached one
    Image.fromarray(digit_pixels(1)[0][0]).save(tmp_path / "tree" / "0" / "999.png")
    after = open_source(source, tmp_path)
    assert after is not before and sorted(after.keys()) == sorted([*keys, "0/999.png"])
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "tree" / "linked").symlink_to(outside, target_is_directory=True)
    assert index_source(source, tmp_path).num_classes == 10
    clear_cache()


def test_the_source_cache_holds_a_bounded_number_of_indexes(tmp_path):
    from ml.datasets import _CACHE

    clear_cache()
    rows = write_pngs(tmp_path)
    for n in range(12):  # twelve manifests, each a few KiB of index
        write_csv(tmp_path / f"m{n}.csv", rows)
        open_source({"kind": "manifest", "path": f"m{n}.csv"}, tmp_path)
    assert len(_CACHE) == _CACHE.MAX_ENTRIES
    clear_cache()


class _Counting:
    """Counts what an image reader decodes, per read."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads: list[int] = []
        original = _ImageReader.read

        def read(reader, positions):
            self.reads.append(len(positions))
            return original(reader, positions)

        monkeypatch.setattr(_ImageReader, "read", read)


def test_lazy_reading_never_loads_the_whole_set(root, monkeypatch):
    counting = _Counting(monkeypatch)
    samples = _whole(open_source(MANIFEST, root))
    model = build_model("mlp", {"hidden": [16]}, [1, 8, 8], 10)
    config = TrainingConfig(epochs=2, batch_size=8, lr=0.01)
    train(model, samples, config, device=torch.device("cpu"))
    assert max(counting.reads) == 8 and sum(counting.reads) == 2 * SIZE  # a batch per read
    counting.reads.clear()
    assert [len(x) for x, _ in samples.batches(16)] == [16] * (SIZE // 16)
    assert counting.reads == [16] * (SIZE // 16)
    counting.reads.clear()
    assert accuracy(model, samples.take(np.arange(10)), device=torch.device("cpu")) is not None
    assert counting.reads == [10]


@pytest.mark.parametrize("workers", [0, 2])
def test_lazy_batches_are_the_in_memory_batches(root, workers):
    """Read as they go, by worker processes or not, the batches are the ones a set held in
    memory gives for the same seed: moving a dataset to a manifest changes no result."""
    images, labels = digit_pixels()
    np.savez(
        root / "digits.npz",
        x=images / 255.0,
        y=labels,
        keys=np.array([f"digit-{i:03d}" for i in range(SIZE)]),
    )
    lazy = open_source(MANIFEST, root, loader_workers=workers)
    held = open_source({"kind": "npz", "path": "digits.npz"}, root)
    assert lazy.loader_workers == workers and held.in_memory
    for first, second in zip(
        _whole(lazy).loader(12, shuffle=True, seed=3),
        _whole(held).loader(12, shuffle=True, seed=3),
        strict=True,
    ):
        assert torch.equal(first[1], second[1])
        assert torch.allclose(first[0], second[0])


def test_a_changed_sample_is_named_never_read(root):
    index = index_source(MANIFEST, root)
    adapter = open_source(MANIFEST, root)
    assert check_unchanged(adapter, index.keys, index.fingerprints).tolist() == list(range(SIZE))
    os.utime(root / "img" / "4.png", ns=(1, 1))  # touched after registration
    with pytest.raises(SourceChanged, match=r"'digit-004' \(file modification time changed\)"):
        check_unchanged(adapter, index.keys, index.fingerprints)
    with pytest.raises(SourceChanged, match="'digit-004'"):  # a read re-checks each file
        adapter.read(np.array([3, 4]))
    assert adapter.read(np.array([3])).shape == (1, 1, 8, 8)
    (root / "img" / "5.png").unlink()
    with pytest.raises(SourceChanged, match=r"'digit-005' \(missing from the source\)"):
        check_unchanged(adapter, index.keys[5:6], index.fingerprints[5:6])
    # What a job does not read may go: only the keys asked for are checked.
    assert check_unchanged(adapter, index.keys[:3], index.fingerprints[:3]).tolist() == [0, 1, 2]


def test_a_changed_manifest_row_and_a_removed_key_are_named(tmp_path):
    rows = tabular_rows()
    write_csv(tmp_path / "rows.csv", rows)
    source = {"kind": "manifest", "path": "rows.csv"}
    index = index_source(source, tmp_path)
    rows[2]["f10"] = 0.5
    write_csv(tmp_path / "rows.csv", [r for r in rows if r["key"] != "row-003"])
    adapter = open_source(source, tmp_path)  # the file changed: parsed again
    with pytest.raises(SourceChanged) as raised:
        check_unchanged(adapter, index.keys, index.fingerprints)
    assert raised.value.changes == {
        "row-003": "missing from the source",
        "row-002": "manifest row changed",
    }


def test_an_npz_row_changed_in_place_is_named(tmp_path):
    x = np.random.default_rng(0).random((20, 4)).astype("float32")
    keys = np.array([f"s{i}" for i in range(20)])
    np.savez(tmp_path / "set.npz", x=x, y=np.arange(20) % 2, keys=keys)
    source = {"kind": "npz", "path": "set.npz"}
    index = index_source(source, tmp_path)
    x[7, 2] += 1.0
    np.savez(tmp_path / "set.npz", x=x[::-1], y=(np.arange(20) % 2)[::-1], keys=keys[::-1])
    adapter = open_source(source, tmp_path)  # rows reordered, one changed
    with pytest.raises(SourceChanged) as raised:
        check_unchanged(adapter, index.keys, index.fingerprints)
    assert raised.value.changes == {"s7": "data, label or split changed"}
    unchanged = [k for k in index.keys if k != "s7"]
    positions = check_unchanged(
        adapter,
        unchanged,
        [f for k, f in zip(index.keys, index.fingerprints or [], strict=True) if k != "s7"],
    )
    assert torch.equal(adapter.read(positions[:1]), torch.from_numpy(x[[0]]))  # found by key


@pytest.mark.parametrize("suffix", ["csv", "parquet", "imagefolder"])
def test_a_source_past_the_row_limit_is_refused_before_it_is_read(tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(file_sources, "MAX_ROWS", 10)
    if suffix == "imagefolder":
        write_tree(tmp_path)
        with pytest.raises(InvalidSource, match="more than 10 images"):
            index_source({"kind": "imagefolder", "root": "tree"}, tmp_path)
        return
    rows = tabular_rows()
    (write_csv if suffix == "csv" else write_parquet)(tmp_path / f"rows.{suffix}", rows)
    with pytest.raises(InvalidSource, match="more than 10 rows"):
        index_source({"kind": "manifest", "path": f"rows.{suffix}"}, tmp_path)


def test_a_file_changed_under_a_worker_process_is_named(root):
    """A read in a DataLoader worker process re-checks each file too, and its error comes
    back naming the sample."""
    adapter = open_source(MANIFEST, root, loader_workers=2)
    samples = _whole(adapter)
    os.utime(root / "img" / "9.png", ns=(1, 1))  # after the job found its samples
    with pytest.raises(SourceChanged, match="'digit-009'"):
        for _ in samples.loader(8, shuffle=True, seed=0):
            pass
