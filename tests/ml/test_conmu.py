"""ConMU: selection by EL2N score and sample key, the Gaussian mechanism on exactly the
chosen forget samples, and pruning (through the service: tests/service/test_conmu_service.py)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ml.training import predict
from ml.unlearners import Need, get_unlearner
from ml.unlearners.conmu import (
    el2n_scores,
    magnitude_prune,
    noised_unlearning_set,
    select_important,
)
from tests.helpers.unlearning import DEVICE, context_for, digits_setup


def test_el2n_is_the_distance_of_the_softmax_to_the_onehot_label():
    setup = digits_setup()
    model = setup.model()
    scores = el2n_scores(model, setup.forget, device=DEVICE)
    inputs, labels = setup.forget.tensors()
    probabilities = F.softmax(predict(model, inputs, device=DEVICE), dim=1)
    by_hand = (probabilities - F.one_hot(labels, 10)).norm(dim=1).numpy()
    assert np.allclose(scores, by_hand, atol=1e-6)


def test_selection_keeps_the_band_and_with_no_lower_bound_the_lowest_scores():
    setup = digits_setup()
    samples = setup.retain.take(np.arange(8))
    scores = np.array([0.9, 0.01, 0.3, 0.02, 1.3, 0.05, 0.5, 0.0])
    mean, std = scores.mean(), scores.std()
    band = select_important(samples, scores, z1=0.5, z2=0.5)
    expected = [
        k
        for k, s in zip(samples.keys, scores, strict=True)
        if mean - std / 2 <= s <= mean + std / 2
    ]
    assert band.keys == expected and 0 < len(band) < 8
    # A lower bound below every score keeps exactly the lowest-EL2N samples.
    lowest = select_important(samples, scores, z1=100.0, z2=0.0)
    assert set(lowest.keys) == {samples.keys[i] for i in np.argsort(scores)[: len(lowest)]}
    assert len(lowest) == (scores <= mean).sum()


def test_selection_follows_the_sample_not_its_position():
    """The authors' bug: scores from a shuffled pass applied in index order. Scoring in any
    order must keep the same samples."""
    setup = digits_setup()
    model = setup.model()
    order = np.random.default_rng(0).permutation(len(setup.retain))
    shuffled = setup.retain.take(order)
    chosen = select_important(
        setup.retain, el2n_scores(model, setup.retain, device=DEVICE), z1=0.17, z2=0.3
    )
    chosen_shuffled = select_important(
        shuffled, el2n_scores(model, shuffled, device=DEVICE), z1=0.17, z2=0.3
    )
    assert 0 < len(chosen) < len(setup.retain)
    assert sorted(chosen.keys) == sorted(chosen_shuffled.keys)
    # The lowest-scoring retained samples below the band's top are kept, the hardest not.
    scores = dict(
        zip(setup.retain.keys, el2n_scores(model, setup.retain, device=DEVICE), strict=True)
    )
    assert max(scores[k] for k in chosen.keys) < max(scores.values())


def test_the_gaussian_mechanism_perturbs_exactly_the_chosen_forget_samples():
    setup = digits_setup()
    forget, retain = setup.forget.take(np.arange(5)), setup.retain.take(np.arange(7))
    inputs, labels, keys = noised_unlearning_set(
        forget, retain, alpha=3.0, mu=0.5, sigma=2.0, seed=0
    )
    forget_inputs, forget_labels = forget.tensors()
    retain_inputs, retain_labels = retain.tensors()
    assert keys == forget.keys + retain.keys and len(inputs) == 12
    assert torch.equal(labels, torch.cat([forget_labels, retain_labels]))  # labels kept
    assert torch.equal(inputs[5:], retain_inputs)  # retained samples untouched
    noise = (inputs[:5] - forget_inputs) / 3.0
    assert (noise != 0).all(dim=(1, 2, 3)).all()
    assert abs(float(noise.mean()) - 0.5) < 0.5 and abs(float(noise.std()) - 2.0) < 0.5
    again, _, _ = noised_unlearning_set(forget, retain, alpha=3.0, mu=0.5, sigma=2.0, seed=0)
    assert torch.equal(again, inputs)  # seeded


def test_magnitude_pruning_zeroes_the_smallest_weights_globally():
    setup = digits_setup()
    model = setup.model()
    weights = [
        m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    total = sum(w.numel() for w in weights)
    masks = magnitude_prune(model, 0.25)
    zeroed = sum(int((w == 0).sum()) for w in weights)
    assert abs(zeroed - total / 4) <= 1
    assert set(masks) == {"0.weight", "3.weight", "7.weight", "9.weight"}
    assert magnitude_prune(model, 0.0) == {}


def test_pruned_weights_stay_zero_through_fine_tuning():
    setup = digits_setup()
    params = {"prune_ratio": 0.3, "delta": 0, "epochs": 1}
    result = get_unlearner("conmu", params).unlearn(
        context_for(setup, setup.model(), forget=setup.forget, retain=setup.retain)
    )
    weights = [t for name, t in result.state_dict.items() if name.endswith("weight")]
    zeroed = sum(int((w == 0).sum()) for w in weights)
    assert zeroed >= 0.3 * sum(w.numel() for w in weights) - 1
    assert get_unlearner("conmu").needs == {Need.RETAIN, Need.VALIDATION}


def test_defaults_follow_the_architecture_family():
    from torch import nn

    from ml.unlearners.conmu import ConMUParams, family_of

    plain = digits_setup().model()
    normalised = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    assert (family_of(plain), family_of(normalised)) == ("plain", "batchnorm")
    params = ConMUParams()
    assert params.lr is None  # unset until the network is known
    assert params.resolved(plain).lr == 0.001
    assert params.resolved(normalised).model_dump(include={"lr", "retain_z1", "retain_z2"}) == {
        "lr": 0.01,
        "retain_z1": 0.17,
        "retain_z2": 0.3,
    }  # the paper's
    assert ConMUParams(lr=0.05).resolved(plain).lr == 0.05  # a value given is kept
