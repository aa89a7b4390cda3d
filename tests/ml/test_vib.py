"""The VIB architectures: logits from forward (sampled z in training, the mean in eval),
the KL terms' known answers, and training with the VIB loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from ml.architectures import build_model, parameter_count, validate_params
from ml.training import TrainingConfig, accuracy, train
from ml.vib import VariationalBottleneck, gaussian_kl, prior_kl, vib_loss
from tests.helpers.unlearning import DEVICE, digits_setup


@pytest.mark.parametrize("name", ["vib_mlp", "vib_cnn"])
def test_forward_gives_logits_sampled_in_training_and_the_mean_in_eval(name):
    torch.manual_seed(0)
    model = build_model(name, {"z_dim": 8}, [1, 8, 8], 10)
    assert isinstance(model, VariationalBottleneck)
    inputs = torch.rand(5, 1, 8, 8)
    model.eval()
    logits = model(inputs)
    assert logits.shape == (5, 10)
    mean, std = model.encode(inputs)
    assert mean.shape == std.shape == (5, 8) and (std > 0).all()
    assert torch.equal(logits, model.approximator(mean))
    assert torch.equal(model(inputs), logits)  # deterministic in eval
    model.train()
    with torch.no_grad():
        model.representer[-1].bias[8:] = 10.0  # widen q(z|x) so sampling shows
    assert not torch.allclose(model(inputs), model(inputs))


def test_the_defaults_are_the_authors_mnist_shape():
    params = validate_params("vib_mlp", {})
    assert params == {"representer": [96], "z_dim": 49, "approximator": [96]}
    expected = (784 * 96 + 96) + (96 * 98 + 98) + (49 * 96 + 96) + (96 * 10 + 10)
    assert parameter_count("vib_mlp", {}, [1, 28, 28], 10) == expected
    with pytest.raises(ValidationError):
        validate_params("vib_cnn", {"z_dim": 0})
    with pytest.raises(ValidationError):
        TrainingConfig(beta=-1.0)


def test_kl_terms_have_their_known_answers():
    mean, std = torch.tensor([[0.5, -1.0]]), torch.tensor([[2.0, 0.5]])
    assert torch.allclose(prior_kl(mean, std), gaussian_kl(mean, std, 0 * mean, 1 + 0 * std))
    assert torch.allclose(gaussian_kl(mean, std, mean, std), torch.zeros(1))
    # KL(N(0.5, 4) || N(0, 1)) = (4 + 0.25 - 1 - log 4) / 2 in the first dimension
    by_hand = (4 + 0.25 - 1 - np.log(4)) / 2 + (0.25 + 1 - 1 - np.log(0.25)) / 2
    assert float(prior_kl(mean, std)) == pytest.approx(by_hand, rel=1e-6)


def test_training_uses_the_vib_loss_and_learns_digits():
    setup = digits_setup()
    torch.manual_seed(0)
    model = build_model(
        "vib_mlp", {"representer": [64], "z_dim": 16, "approximator": []}, [1, 8, 8], 10
    )
    inputs, labels = setup.train.tensors()
    with torch.no_grad():
        before = float(vib_loss(model, inputs, labels, beta=1e-3))
    recipe = TrainingConfig(epochs=30, batch_size=32, lr=3e-3, beta=1e-3)
    train(model, setup.train, recipe, device=DEVICE)
    with torch.no_grad():
        assert float(vib_loss(model, inputs, labels, beta=1e-3)) < before / 4
    assert accuracy(model, setup.test, device=DEVICE) > 0.85
    # A large beta squeezes q(z|x) onto the prior: the KL term falls.
    squeezed = build_model("vib_mlp", {"representer": [64], "z_dim": 16}, [1, 8, 8], 10)
    torch.manual_seed(0)
    train(squeezed, setup.train, recipe.model_copy(update={"beta": 1.0}), device=DEVICE)
    with torch.no_grad():
        kl = [float(prior_kl(*m.encode(inputs)).mean()) for m in (model, squeezed)]
    assert kl[1] < kl[0] / 2
