"""The training recipe's options do what they say: the schedule's learning rates, seeded
image augmentation (off by default), label smoothing, gradient clipping, AdamW, bf16 only
where a device has it; and a recipe at its defaults trains exactly as before they existed."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from ml.architectures import build_model
from ml.augmentation import Augmentation, augment, augmentation_generator
from ml.datasets import open_source
from ml.samples import SampleSet
from ml.training import TrainingConfig, make_optimizer, sgd_recipe, train
from ml.vib import VariationalBottleneck, vib_loss

CPU = torch.device("cpu")


def _digits(count: int = 96) -> SampleSet:
    adapter = open_source({"kind": "builtin", "name": "sklearn-digits"}, Path("."))
    index = adapter.index()
    positions = np.arange(count)
    return SampleSet(adapter, positions, index.labels[positions], index.keys[:count])


def _trained(config: TrainingConfig, samples: SampleSet | None = None) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("small_cnn", {"channels": [4, 8], "hidden": 16}, [1, 8, 8], 10)
    return train(model, samples or _digits(), config, device=CPU)


def _same_weights(first: nn.Module, second: nn.Module) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


@contextmanager
def _steps() -> Iterator[list[dict[str, Any]]]:
    """What every optimiser step sees: its learning rate and the gradient's global norm."""
    seen: list[dict[str, Any]] = []

    def record(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads if g is not None]))
        seen.append({"lr": optimizer.param_groups[0]["lr"], "grad_norm": float(norm)})

    handle = register_optimizer_step_pre_hook(record)
    try:
        yield seen
    finally:
        handle.remove()


@contextmanager
def _inputs_seen(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    seen: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
    try:
        yield seen
    finally:
        handle.remove()


# -- defaults: the training as it was ----------------------------------------------------


def _the_loop_before_the_recipe_grew(model: nn.Module, samples: SampleSet, seed: int) -> None:
    """``train`` as it was before the options after ``beta``: Adam, cross-entropy, a seeded
    shuffle."""
    torch.manual_seed(seed)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    loader = samples.loader(16, shuffle=True, seed=seed)
    for _ in range(2):
        for inputs, labels in loader:
            optimizer.zero_grad(set_to_none=True)
            nn.CrossEntropyLoss()(model(inputs), labels).backward()
            optimizer.step()


def test_a_recipe_at_its_defaults_trains_bit_for_bit_as_before():
    samples = _digits()
    recipe = TrainingConfig(epochs=2, batch_size=16, lr=3e-3, weight_decay=1e-4, seed=5)
    torch.manual_seed(0)
    before = build_model("small_cnn", {"channels": [4, 8], "hidden": 16}, [1, 8, 8], 10)
    _the_loop_before_the_recipe_grew(before, samples, seed=5)
    assert _same_weights(_trained(recipe, samples), before)


def test_a_recipe_stored_before_the_options_validates_to_the_old_behaviour():
    stored = {
        "epochs": 10,
        "batch_size": 128,
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "seed": 3,
        "beta": 0.001,
    }
    recipe = TrainingConfig.model_validate(stored)
    assert recipe.schedule == "constant" and recipe.warmup_epochs == 0
    assert recipe.label_smoothing == 0 and recipe.grad_clip_norm is None
    assert not recipe.augment.enabled and recipe.mixed_precision == "none"
    assert {recipe.lr_at(step, 7) for step in range(70)} == {0.05}


# -- the schedule --------------------------------------------------------------------------


def test_a_cosine_schedule_with_warm_up_gives_the_expected_learning_rates():
    recipe = TrainingConfig(epochs=6, lr=0.1, schedule="cosine", warmup_epochs=2)
    rates = [recipe.lr_at(step, 2) for step in range(12)]
    # Warm-up over 4 steps, then a half cosine over the remaining 8, from lr towards 0.
    expected = [0.025, 0.05, 0.075, 0.1] + [
        0.05 * (1 + math.cos(math.pi * k / 8)) for k in range(8)
    ]
    assert rates == pytest.approx(expected)
    assert rates[-1] > 0  # the last step still moves the weights


def test_a_step_schedule_decays_every_step_size_epochs_after_its_warm_up():
    recipe = TrainingConfig(
        epochs=8, lr=0.1, schedule="step", step_size=3, step_gamma=0.5, warmup_epochs=1
    )
    by_epoch = [recipe.lr_at(epoch * 4 + 3, 4) for epoch in range(8)]  # each epoch's last step
    assert by_epoch == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])
    assert [recipe.lr_at(step, 4) for step in range(4)] == pytest.approx([0.025, 0.05, 0.075, 0.1])


def test_training_sets_the_schedules_learning_rate_before_every_step():
    samples = _digits(64)  # 4 batches of 16
    recipe = TrainingConfig(
        epochs=3, batch_size=16, lr=0.01, schedule="cosine", warmup_epochs=1, optimizer="sgd"
    )
    with _steps() as steps:
        _trained(recipe, samples)
    assert [s["lr"] for s in steps] == pytest.approx([recipe.lr_at(i, 4) for i in range(12)])
    assert [s["lr"] for s in steps][:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])


def test_a_copy_cut_below_its_warm_up_warms_up_over_all_its_steps():
    """ConMU's proxy copies the recipe with fewer epochs, without validating again."""
    recipe = TrainingConfig(epochs=10, lr=0.1, warmup_epochs=4).model_copy(update={"epochs": 1})
    assert [recipe.lr_at(step, 2) for step in range(2)] == pytest.approx([0.05, 0.1])


# -- augmentation --------------------------------------------------------------------------


def test_augmentation_is_off_by_default_and_the_model_sees_the_batches_as_they_are():
    samples = _digits(32)
    recipe = TrainingConfig(epochs=1, batch_size=32)
    assert not recipe.augment.enabled
    torch.manual_seed(0)
    model = build_model("small_cnn", {"channels": [4, 8], "hidden": 16}, [1, 8, 8], 10)
    with _inputs_seen(model) as seen:
        train(model, samples, recipe, device=CPU)
    (batch,) = [inputs for inputs, _ in samples.loader(32, shuffle=True, seed=recipe.seed)]
    assert len(seen) == 1 and torch.equal(seen[0], batch)


def test_a_random_crop_shows_each_image_shifted_within_its_padding():
    images = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8) + 1
    images = images.repeat(20, 1, 1, 1)  # 40 images, nonzero everywhere
    cropped = augment(images, Augmentation(random_crop_padding=2), augmentation_generator(seed=0))
    assert cropped.shape == images.shape
    padded = F.pad(images, (2, 2, 2, 2))
    offsets = []
    for image, padded_image, crop in zip(images, padded, cropped, strict=True):
        windows = [
            (top, left)
            for top in range(5)
            for left in range(5)
            if torch.equal(padded_image[:, top : top + 8, left : left + 8], crop)
        ]
        assert len(windows) == 1, "each crop is one window of the zero-padded image"
        offsets.append(windows[0])
        assert crop.count_nonzero() <= image.count_nonzero()
    assert len(set(offsets)) > 5  # offsets are drawn per image, in [0, 2 * padding]


def test_a_horizontal_flip_mirrors_about_half_the_images():
    images = torch.rand(200, 3, 4, 4)
    flipped = augment(images, Augmentation(horizontal_flip=True), augmentation_generator(0))
    mirrored = [torch.equal(f, i.flip(-1)) for f, i in zip(flipped, images, strict=True)]
    kept = [torch.equal(f, i) for f, i in zip(flipped, images, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 60 < sum(mirrored) < 140


def test_augmentation_is_drawn_from_the_seed():
    images = torch.rand(64, 1, 8, 8)
    both = Augmentation(random_crop_padding=4, horizontal_flip=True)
    first = augment(images, both, augmentation_generator(7))
    assert torch.equal(first, augment(images, both, augmentation_generator(7)))
    assert not torch.equal(first, augment(images, both, augmentation_generator(8)))


def test_training_with_augmentation_sees_other_batches_and_repeats_under_its_seed():
    samples = _digits(32)
    plain = TrainingConfig(epochs=2, batch_size=32)
    augmented = plain.model_copy(
        update={"augment": Augmentation(random_crop_padding=2, horizontal_flip=True)}
    )
    torch.manual_seed(0)
    model = build_model("small_cnn", {"channels": [4, 8], "hidden": 16}, [1, 8, 8], 10)
    with _inputs_seen(model) as seen:
        train(model, samples, augmented, device=CPU)
    (batch,) = [inputs for inputs, _ in samples.loader(32, shuffle=True, seed=plain.seed)]
    assert len(seen) == 2 and seen[0].shape == batch.shape
    assert not torch.equal(seen[0], batch)
    assert _same_weights(_trained(augmented, samples), _trained(augmented, samples))
    assert not _same_weights(_trained(augmented, samples), _trained(plain, samples))


def test_augmentation_needs_image_inputs():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        Augmentation(horizontal_flip=True).check_fits([64])
    Augmentation().check_fits([64])  # off: any shape
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        augment(torch.rand(4, 64), Augmentation(random_crop_padding=1), augmentation_generator(0))


# -- loss, clipping, optimiser, precision ---------------------------------------------------


def test_label_smoothing_changes_the_loss_the_step_follows():
    samples = _digits(16)
    inputs, labels = samples.tensors()
    recipe = TrainingConfig(
        epochs=1, batch_size=16, optimizer="sgd", lr=0.5, momentum=0.0, label_smoothing=0.2
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    start = {name: t.clone() for name, t in model.state_dict().items()}
    train(model, samples, recipe, device=CPU)
    for smoothing, expected_to_match in ((0.2, True), (0.0, False)):
        by_hand = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        by_hand.load_state_dict(start)
        F.cross_entropy(by_hand(inputs), labels, label_smoothing=smoothing).backward()
        with torch.no_grad():
            for parameter in by_hand.parameters():
                parameter -= 0.5 * parameter.grad
        matches = all(
            torch.allclose(a, b, atol=1e-6)
            for a, b in zip(model.parameters(), by_hand.parameters(), strict=True)
        )
        assert matches is expected_to_match


def test_the_vib_loss_takes_the_label_smoothing():
    torch.manual_seed(0)
    model = build_model("vib_mlp", {"representer": [16], "z_dim": 4}, [1, 8, 8], 10)
    assert isinstance(model, VariationalBottleneck)
    inputs, labels = torch.rand(8, 1, 8, 8), torch.arange(8)
    with torch.no_grad():
        losses = {}
        for smoothing in (0.0, 0.3):
            torch.manual_seed(1)  # the same z for each
            losses[smoothing] = float(
                vib_loss(model, inputs, labels, 0.0, label_smoothing=smoothing)
            )
        torch.manual_seed(1)
        logits = model.approximator(model.sample(*model.encode(inputs)))
    expected = float(F.cross_entropy(logits, labels, label_smoothing=0.3))
    assert losses[0.3] == pytest.approx(expected, rel=1e-6)
    assert losses[0.3] != pytest.approx(losses[0.0])


def test_gradient_clipping_bounds_every_steps_gradient_norm():
    samples = _digits(64)
    recipe = TrainingConfig(epochs=2, batch_size=16, optimizer="sgd", lr=0.01)
    with _steps() as unclipped:
        _trained(recipe, samples)
    limit = min(s["grad_norm"] for s in unclipped) / 2
    with _steps() as clipped:
        _trained(recipe.model_copy(update={"grad_clip_norm": limit}), samples)
    assert len(clipped) == 8
    assert all(s["grad_norm"] <= limit * (1 + 1e-5) for s in clipped)
    assert all(s["grad_norm"] > limit for s in unclipped)


def test_adamw_is_adam_with_decoupled_weight_decay():
    model = nn.Linear(4, 2)
    optimizer = make_optimizer(model, TrainingConfig(optimizer="adamw", weight_decay=0.05))
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["weight_decay"] == 0.05
    assert type(make_optimizer(model, TrainingConfig())) is torch.optim.Adam
    samples = _digits(32)
    adam = TrainingConfig(epochs=1, batch_size=16, weight_decay=0.05)
    adamw = adam.model_copy(update={"optimizer": "adamw"})
    assert not _same_weights(_trained(adam, samples), _trained(adamw, samples))


def test_bf16_runs_only_where_the_device_has_it(monkeypatch):
    recipe = TrainingConfig(epochs=1, batch_size=16, mixed_precision="bf16")
    assert recipe.as_run_on(CPU).mixed_precision == "none"
    assert TrainingConfig().as_run_on(CPU) == TrainingConfig()
    # On the CPU it is a no-op: float32, the same weights as without it.
    samples = _digits(32)
    plain = recipe.model_copy(update={"mixed_precision": "none"})
    assert _same_weights(_trained(recipe, samples), _trained(plain, samples))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation: True)
    assert recipe.as_run_on(torch.device("cuda")).mixed_precision == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation: False)
    assert recipe.as_run_on(torch.device("cuda")).mixed_precision == "none"


# -- bounds, and what fine-tuning keeps -----------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"schedule": "linear"},
        {"optimizer": "lamb"},
        {"warmup_epochs": 10},  # the whole training (epochs 10)
        {"warmup_epochs": -1},
        {"schedule": "step", "step_size": 10},  # would never decay
        {"step_size": 0},
        {"step_gamma": 0.0},
        {"step_gamma": 1.0},
        {"label_smoothing": 1.0},
        {"label_smoothing": -0.1},
        {"augment": {"random_crop_padding": 33}},
        {"augment": {"random_crop_padding": -1}},
        {"augment": {"rotate": 15}},
        {"augment": {"horizontal_flip": "yes"}},
        {"grad_clip_norm": 0.0},
        {"grad_clip_norm": 1e7},
        {"mixed_precision": "fp16"},
    ],
)
def test_out_of_bounds_options_are_refused(bad):
    with pytest.raises(ValidationError):
        TrainingConfig.model_validate({"epochs": 10, **bad})


def test_fine_tuning_keeps_the_recipes_data_and_loss_options_but_not_its_schedule():
    recipe = TrainingConfig(
        epochs=90,
        optimizer="adamw",
        lr=0.1,
        momentum=0.8,
        weight_decay=5e-4,
        schedule="cosine",
        warmup_epochs=5,
        label_smoothing=0.1,
        augment=Augmentation(random_crop_padding=4, horizontal_flip=True),
        grad_clip_norm=5.0,
        mixed_precision="bf16",
    )
    tuned = sgd_recipe(recipe, epochs=2, lr=0.01, batch_size=64, seed=9)
    assert (tuned.optimizer, tuned.epochs, tuned.lr, tuned.batch_size, tuned.seed) == (
        "sgd",
        2,
        0.01,
        64,
        9,
    )
    assert tuned.schedule == "constant" and tuned.warmup_epochs == 0
    assert {tuned.lr_at(step, 10) for step in range(20)} == {0.01}
    kept = ("momentum", "weight_decay", "label_smoothing", "augment", "grad_clip_norm")
    assert all(getattr(tuned, name) == getattr(recipe, name) for name in kept)
    assert tuned.mixed_precision == "bf16"
