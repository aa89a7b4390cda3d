"""Kept originals: reused only for the same network, recipe and data, written whole."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.originals import OriginalStore, fingerprint
from benchmarks.unlearning import Bench, Data, Network, Original, samples_at
from ml.datasets import open_source
from ml.training import TrainingConfig

NETWORK = {"name": "small_cnn", "params": {"channels": [4, 8], "hidden": 16}}
RECIPE = TrainingConfig(epochs=1, batch_size=64, seed=0)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    adapter = open_source({"kind": "builtin", "name": "sklearn-digits"}, Path("."))
    return adapter, samples_at(adapter, np.arange(200))


def test_the_fingerprint_changes_with_whatever_decides_the_weights(digits):
    adapter, train = digits
    key = fingerprint(NETWORK, RECIPE, train, CPU)
    assert fingerprint(NETWORK, RECIPE, samples_at(adapter, np.arange(200)), CPU) == key
    wider = {**NETWORK, "params": {"channels": [4, 8], "hidden": 32}}
    relabelled = dataclasses.replace(train, labels=(train.labels + 1) % 10)
    others = [
        fingerprint(wider, RECIPE, train, CPU),
        fingerprint(NETWORK, RECIPE.model_copy(update={"seed": 1}), train, CPU),
        fingerprint(NETWORK, RECIPE, samples_at(adapter, np.arange(1, 201)), CPU),  # inputs
        fingerprint(NETWORK, RECIPE, relabelled, CPU),
        fingerprint(NETWORK, RECIPE, train, torch.device("cuda")),  # trained elsewhere
    ]
    assert key not in others and len(set(others)) == len(others)


def test_a_kept_original_loads_as_saved_and_a_missing_one_is_none(tmp_path):
    store = OriginalStore(tmp_path / "originals")
    assert store.load("abc") is None
    weights = {"layer.weight": torch.randn(3, 2)}
    path = store.save("abc", weights, 12.5, "cpu")
    assert path == store.path_for("abc") and not list(path.parent.glob("*.partial"))
    kept = store.load("abc")
    assert kept is not None and kept.path == path
    assert torch.equal(kept.state_dict["layer.weight"], weights["layer.weight"])
    assert (kept.seconds, kept.device) == (12.5, "cpu") and kept.trained_at


def test_a_file_that_is_not_a_kept_original_is_an_error_naming_it(tmp_path):
    store = OriginalStore(tmp_path)
    store.path_for("abc").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="original-abc.pt: not a kept original"):
        store.load("abc")
    torch.save({"state_dict": {}}, store.path_for("def"))  # no seconds
    with pytest.raises(ValueError, match="not a kept original"):
        store.load("def")


def test_the_bench_trains_an_original_once_then_reuses_it(digits, tmp_path, monkeypatch):
    adapter, train = digits
    held = samples_at(adapter, np.arange(200, 260))
    data = Data(adapter, train, held, held, held, held)
    network = Network(NETWORK["name"], NETWORK["params"])
    bench = Bench(data, RECIPE, CPU, 0, ["retrain"], architecture=network)
    store = OriginalStore(tmp_path)

    first = Original.trained(bench, "clean data", store)
    assert "s to train (kept in" in bench.out[-1]
    assert len(list(tmp_path.glob("original-*.pt"))) == 1

    def no_training(samples):
        raise AssertionError("a kept original was trained again")

    monkeypatch.setattr(bench, "train", no_training)
    second = Original.trained(bench, "clean data", store)
    assert "loaded from" in bench.out[-1]
    assert all(torch.equal(second.state_dict[k], v) for k, v in first.state_dict.items())

    other = dataclasses.replace(bench, recipe=RECIPE.model_copy(update={"seed": 3}))
    monkeypatch.setattr(other, "train", lambda samples: (first.state_dict, 1.0))
    Original.trained(other, "clean data", store)  # another recipe: trained and kept anew
    assert len(list(tmp_path.glob("original-*.pt"))) == 2
