"""Dataset adapters: stable keys, the seeded holdout, local torchvision files, npz."""

from __future__ import annotations

import errno
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from ml.datasets import InvalidSource, holdout_mask, open_source


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format torchvision's MNIST family reads (big-endian dims, unsigned bytes)."""
    magic = 0x0800 + array.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_adapter_reads_local_idx_files(tmp_path):
    raw = tmp_path / "fmnist" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 255, (30, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(30) % 10)
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 255, (12, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(12) % 10)
    adapter = open_source(
        {"kind": "torchvision", "name": "FashionMNIST", "root": "fmnist"}, tmp_path
    )
    index = adapter.index()
    assert index.keys[0] == "train/00000" and index.keys[30] == "test/00000"
    assert index.splits.count("test") == 12 and index.input_shape == [1, 28, 28]
    assert index.num_classes == 10 and list(index.labels[:3]) == [0, 1, 2]
    images = adapter.read(np.array([31, 0]))
    assert (
        images.shape == (2, 1, 28, 28) and 0.0 <= float(images.min()) <= float(images.max()) <= 1.0
    )
    with pytest.raises(InvalidSource):
        open_source(
            {"kind": "torchvision", "name": "FashionMNIST", "root": "nothing-here"}, tmp_path
        )


def test_errors_name_paths_as_given_never_the_data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    np.savez(root / "ok.npz", x=np.zeros((2, 2)), y=np.zeros(2, int), keys=np.array(["a", "b"]))
    for source, reason in [
        ({"kind": "torchvision", "name": "MNIST", "root": "mnist"}, "MNIST files not found"),
        ({"kind": "torchvision", "name": "MNIST", "root": "loop1"}, "symbolic link loop"),
        ({"kind": "npz", "path": "loop1"}, "symbolic link loop"),
        ({"kind": "npz", "path": str(root / "nope.npz")}, "does not exist"),
    ]:
        with pytest.raises(InvalidSource) as refused:
            open_source(source, root)
        assert reason in str(refused.value) and str(tmp_path) not in str(refused.value), source

    def failing_disk(path, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(np, "load", failing_disk)
    with pytest.raises(InvalidSource) as refused:
        open_source({"kind": "npz", "path": "ok.npz"}, root)
    assert "Input/output error" in str(refused.value)
    assert str(tmp_path) not in str(refused.value)


def test_npz_adapter_and_its_checks(tmp_path):
    keys = np.array([f"user-{i}" for i in range(10)])
    np.savez(
        tmp_path / "ok.npz",
        x=np.zeros((10, 3, 4, 4), "float32"),
        y=np.arange(10) % 3,
        keys=keys,
        split=np.array(["train"] * 8 + ["test"] * 2),
    )
    index = open_source({"kind": "npz", "path": "ok.npz"}, tmp_path).index()
    assert index.keys == list(keys) and index.splits.count("test") == 2
    assert index.input_shape == [3, 4, 4] and index.num_classes == 3
    bad = {
        "dup.npz": {"x": np.zeros((2, 2)), "y": np.zeros(2, int), "keys": np.array(["a", "a"])},
        "short.npz": {"x": np.zeros((3, 2)), "y": np.zeros(2, int), "keys": np.array(["a", "b"])},
        "neg.npz": {"x": np.zeros((2, 2)), "y": np.array([-1, 0]), "keys": np.array(["a", "b"])},
        "split.npz": {
            "x": np.zeros((2, 2)),
            "y": np.zeros(2, int),
            "keys": np.array(["a", "b"]),
            "split": np.array(["train", "later"]),
        },
    }
    for name, arrays in bad.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(InvalidSource):
            open_source({"kind": "npz", "path": name}, tmp_path)
    (tmp_path / "pickled.npz").write_bytes(gzip.compress(b"not an npz"))
    with pytest.raises(InvalidSource):
        open_source({"kind": "npz", "path": "pickled.npz"}, tmp_path)


def test_digits_keys_are_stable_and_holdout_is_seeded():
    first = open_source({"kind": "builtin", "name": "sklearn-digits"}, Path(".")).index()
    assert first.keys[:2] == ["train/00000", "train/00001"] and len(first.keys) == 1797
    a = holdout_mask(first.splits, 0.1, seed=7)
    b = holdout_mask(first.splits, 0.1, seed=7)
    c = holdout_mask(first.splits, 0.1, seed=8)
    assert (a == b).all() and not (a == c).all()
    train = np.asarray(first.splits) == "train"
    assert a.sum() == round(0.1 * train.sum()) and not (a & ~train).any()


def _npz(path: Path, n: int, value: float = 0.0) -> None:
    keys = np.array([f"k{i}" for i in range(n)])
    np.savez(path, x=np.full((n, 4, 4), value, "float32"), y=np.arange(n) % 2, keys=keys)


def test_one_cache_entry_per_file_however_its_path_is_spelled(tmp_path):
    from ml import datasets

    datasets.clear_cache()
    (tmp_path / "sub").mkdir()
    _npz(tmp_path / "a.npz", 10)
    spellings = ["a.npz", "./a.npz", "sub/../a.npz", str(tmp_path / "a.npz")]
    adapters = {id(open_source({"kind": "npz", "path": p}, tmp_path)) for p in spellings}
    assert len(adapters) == 1 and len(datasets._CACHE) == 1


def test_a_file_replaced_in_place_is_read_again(tmp_path):
    from ml import datasets

    datasets.clear_cache()
    source = {"kind": "npz", "path": "a.npz"}
    _npz(tmp_path / "a.npz", 10, value=0.0)
    assert float(open_source(source, tmp_path).read(np.array([0])).max()) == 0.0
    (tmp_path / "a.npz").unlink()  # a new file (a new inode), as a pipeline rewrites it
    _npz(tmp_path / "a.npz", 10, value=1.0)
    assert float(open_source(source, tmp_path).read(np.array([0])).max()) == 1.0
    assert len(datasets._CACHE) == 1  # the file as it was is not kept beside it


def test_an_erased_row_is_dropped_from_the_kept_copy_and_read_again_afresh(tmp_path):
    from ml import datasets

    datasets.clear_cache()
    source = {"kind": "npz", "path": "a.npz"}
    _npz(tmp_path / "a.npz", 10, value=1.0)
    kept = open_source(source, tmp_path)
    kept.erase(np.array([2, 5]))
    assert kept.erased == {2, 5}
    assert not kept.read(np.array([2, 5])).any() and kept.read(np.array([3])).all()
    assert open_source(source, tmp_path) is kept
    again = open_source(source, tmp_path, fresh=True)  # a caller that must read them
    assert again is not kept and again.read(np.array([2, 5])).all() and not again.erased
    assert open_source(source, tmp_path) is again


def test_the_cache_keeps_inputs_within_its_byte_budget(tmp_path):
    from ml import datasets

    datasets.clear_cache()
    for name in ("a", "b", "c"):
        _npz(tmp_path / f"{name}.npz", 100)  # 100 x 16 float32 = 6,400 bytes each
    budget = 2 * 6400
    opened = [
        open_source({"kind": "npz", "path": f"{n}.npz"}, tmp_path, cache_bytes=budget)
        for n in ("a", "b", "c")
    ]
    assert len(datasets._CACHE) == 2 and datasets._CACHE.nbytes <= budget
    again = open_source({"kind": "npz", "path": "a.npz"}, tmp_path, cache_bytes=budget)
    assert again is not opened[0]  # a, the least recently used, was dropped
    open_source({"kind": "npz", "path": "b.npz"}, tmp_path, cache_bytes=0)
    assert len(datasets._CACHE) == 0  # nothing kept with no budget


def test_indexing_a_source_keeps_nothing(tmp_path):
    from ml import datasets
    from ml.datasets import index_source

    datasets.clear_cache()
    _npz(tmp_path / "a.npz", 10)
    index = index_source({"kind": "npz", "path": "a.npz"}, tmp_path)
    assert len(index.keys) == 10 and len(datasets._CACHE) == 0
    with pytest.raises(InvalidSource) as refused:
        index_source({"kind": "npz", "path": str(tmp_path / "none.npz")}, tmp_path)
    assert str(tmp_path) not in str(refused.value)
