"""DAU: its parts (tokens, Barlow Twins), the attacker it fights, class deletion and its
params (through the service: tests/service/test_dau_service.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from ml.training import predict
from ml.unlearners import Need, get_unlearner, run_unlearner
from ml.unlearners.dau import Attacker, attacker_inputs, barlow_twins
from tests.helpers.unlearning import DEVICE, context_for, digits_setup


def test_attacker_accuracy_on_forget_vs_holdout_falls_during_unlearning():
    setup = digits_setup()
    result = run_unlearner(
        get_unlearner("dau", {"stop": "none", "iterations": 15}),
        context_for(setup, setup.model(), forget=setup.forget, retain=setup.retain),
    )
    attacker = result.info["attacker_accuracy"]
    assert attacker["before"] > 0.5 and attacker["after"] < attacker["before"]


def test_dau_declares_retain_validation_and_its_shadow_set():
    assert get_unlearner("dau").needs == {Need.RETAIN, Need.VALIDATION, Need.SHADOW}


def test_the_attacker_is_fitted_on_the_shadow_set():
    """The attacker's non-members come from the shadow set, not from the stop rule's D_v:
    without a shadow set DAU cannot run."""
    setup = digits_setup()
    empty = setup.shadow.take(np.arange(0))
    with pytest.raises(ValueError, match="shadow set"):
        run_unlearner(
            get_unlearner("dau", {"stop": "none", "iterations": 3}),
            context_for(
                setup, setup.model(), forget=setup.forget, retain=setup.retain, shadow=empty
            ),
        )


def test_dau_leaves_batchnorm_statistics_as_they_were():
    """Ten noisy copies per sample in train mode would move BatchNorm's running statistics;
    the defender runs in eval mode, so they stay the base model's."""
    setup = digits_setup()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 32),
        torch.nn.BatchNorm1d(32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 10),
    )
    with torch.no_grad():  # statistics a trained network would hold
        model[2].running_mean.uniform_(-1, 1)
        model[2].running_var.uniform_(0.5, 2.0)
    model.eval()
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    weights = model[1].weight.detach().clone()
    context = context_for(setup, model, forget=setup.forget, retain=setup.retain)
    result = run_unlearner(get_unlearner("dau", {"stop": "none", "iterations": 5}), context)
    assert result.info["steps"] > 0
    for name, buffer in before.items():
        assert torch.equal(result.state_dict[name], buffer), name
    assert not torch.equal(result.state_dict["1.weight"], weights)  # the defender did move


def test_attacker_tokens_and_score_shapes():
    model = digits_setup().model()
    inputs, labels = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 9])
    tokens = attacker_inputs(model(inputs), model, inputs, labels, perturbations=10, noise_std=1.0)
    assert tokens.shape == (5, 10, 3)
    torch.testing.assert_close(tokens[..., 0].sum(1), torch.ones(5))  # softmax outputs
    assert (tokens[..., 1] >= 0).all() and tokens[..., 1].sum() > 0  # sensitivities
    assert torch.equal(tokens[torch.arange(5), labels, 2], torch.ones(5))  # one-hot labels
    assert Attacker(10, width=32, layers=3, heads=4)(tokens).shape == (5,)


def test_barlow_twins_is_zero_for_identical_features_and_grows_with_decorrelation():
    features = torch.randn(64, 8)
    assert barlow_twins(features, features, redundancy=0.0) < 1e-6
    identical = barlow_twins(features, features, redundancy=5e-3)
    independent = barlow_twins(features, torch.randn(64, 8), redundancy=5e-3)
    assert independent > identical + 1.0


@pytest.mark.parametrize(
    "params, field",
    [
        ({"alpha": -1}, "alpha"),
        ({"lr": 0}, "lr"),
        ({"batch_size": 1}, "batch_size"),
        ({"perturbations": 0}, "perturbations"),
        ({"attacker_width": 30, "attacker_heads": 4}, "attacker_width"),
        ({"stop": "never"}, "stop"),
        ({"iterations": 1.5}, "iterations"),
        ({"momentum": 0.9}, "momentum"),
    ],
)
def test_invalid_params_are_refused(params, field):
    with pytest.raises(ValidationError, match=field):
        get_unlearner("dau", params)


def test_class_deletion_runs_the_game_and_masks_the_class():
    setup = digits_setup()
    forgotten = 5
    rows = np.flatnonzero(setup.train.labels == forgotten)
    params = {"stop": "none", "iterations": 3, "attacker_pretrain_steps": 5}
    result = run_unlearner(
        get_unlearner("dau", {**params, "class_alpha_iterations": 1}),
        context_for(
            setup,
            setup.model(),
            forget=setup.train.take(rows),
            retain=setup.train.take(np.setdiff1d(np.arange(len(setup.train)), rows)),
            class_labels=[forgotten],
        ),
    )
    assert result.info["steps"] == 3
    model = setup.build()
    model.load_state_dict(result.state_dict)
    inputs, _ = setup.test.tensors()
    assert not (predict(model, inputs, device=DEVICE).argmax(1) == forgotten).any()
