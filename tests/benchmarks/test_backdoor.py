"""The benchmark's backdoor protocol: the trigger lands on exactly the poisoned samples,
which carry the target label, and a model trained with them learns the backdoor."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.backdoor import TRIGGER_SIZE, poison, stamp, success_rate
from ml.architectures import build_model
from ml.training import TrainingConfig, train
from tests.helpers.unlearning import DEVICE, digits_setup

TARGET = 8


def test_poison_triggers_and_relabels_exactly_the_chosen_samples():
    setup = digits_setup()
    rows = np.flatnonzero(setup.train.labels != TARGET)[:30]
    poisoned = poison(setup.train, rows, TARGET)
    clean_inputs, clean_labels = setup.train.tensors()
    inputs, labels = poisoned.tensors()
    changed = np.flatnonzero((inputs != clean_inputs).flatten(1).any(1).numpy())
    assert set(changed) <= set(rows) and len(changed) >= len(rows) - 2  # white pixels stay
    corner = inputs[rows][..., -TRIGGER_SIZE - 1 : -1, -TRIGGER_SIZE - 1 : -1]
    assert (corner == 1.0).all()
    assert (labels[rows] == TARGET).all()
    others = np.setdiff1d(np.arange(len(labels)), rows)
    assert torch.equal(labels[others], clean_labels[others])
    assert poisoned.keys == setup.train.keys


def test_a_model_trained_with_the_poison_learns_the_backdoor():
    setup = digits_setup()
    rows = np.flatnonzero(setup.train.labels != TARGET)[:40]
    torch.manual_seed(0)
    clean = build_model("mlp", {"hidden": [64]}, [1, 8, 8], 10)
    backdoored = build_model("mlp", {"hidden": [64]}, [1, 8, 8], 10)
    recipe = TrainingConfig(epochs=60, batch_size=32, lr=3e-3)
    train(clean, setup.train, recipe, device=DEVICE)
    train(backdoored, poison(setup.train, rows, TARGET), recipe, device=DEVICE)
    assert success_rate(backdoored, setup.test, TARGET, device=DEVICE) > 0.5
    assert success_rate(clean, setup.test, TARGET, device=DEVICE) < 0.2
    assert torch.equal(stamp(torch.zeros(1, 1, 8, 8)).sum(), torch.tensor(9.0))
