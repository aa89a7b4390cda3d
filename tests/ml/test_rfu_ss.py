"""RFU-SS: Eq. 14's alpha and the method on a memorising digits VIB (through the service:
tests/service/test_rfu_ss_service.py)."""

from __future__ import annotations

import pytest
import torch

from ml.architectures import build_model
from ml.training import TrainingConfig, train
from ml.unlearners import Need, get_unlearner, list_unlearners
from ml.unlearners.rfu_ss import closed_form_alpha, loss_ratio_alpha
from tests.helpers.unlearning import DEVICE, context_for, digits_setup

VIB_MLP = {"name": "vib_mlp", "params": {"representer": [64], "z_dim": 16, "approximator": [64]}}


@pytest.mark.parametrize(
    "forget, remember, expected",
    [
        ([1.0, 0.0], [0.0, 1.0], 0.5),  # (g_r - g_u).g_r = 1, ||g_u - g_r||^2 = 2
        ([1.0, 0.0], [0.0, 2.0], 0.8),  # 4 / 5
        ([2.0, 0.0], [1.0, 0.0], 0.0),  # -1 / 1, clipped up to 0
        ([1.0, 1.0], [3.0, 1.0], 1.0),  # 6 / 4, clipped down to 1
        ([1.0, 2.0], [1.0, 2.0], 0.5),  # equal gradients: every alpha is a minimum
    ],
)
def test_closed_form_alpha_on_hand_made_gradients(forget, remember, expected):
    assert closed_form_alpha(torch.tensor(forget), torch.tensor(remember)) == pytest.approx(
        expected
    )


def test_closed_form_alpha_minimises_the_combined_gradient_within_0_and_1():
    generator = torch.Generator().manual_seed(0)
    grid = torch.linspace(0, 1, 10_001, dtype=torch.float64)
    for _ in range(20):
        g_u, g_r = torch.randn(2, 50, generator=generator, dtype=torch.float64)
        g_u = g_u * 5 * torch.rand(1, generator=generator, dtype=torch.float64)
        alpha = closed_form_alpha(g_u, g_r)
        norms = (grid[:, None] * g_u + (1 - grid[:, None]) * g_r).norm(dim=1)
        assert 0.0 <= alpha <= 1.0
        assert alpha == pytest.approx(float(grid[norms.argmin()]), abs=2e-4)


def test_loss_ratio_alpha_is_the_authors_weighting_clipped():
    assert loss_ratio_alpha(1.0, 3.0) == 0.25
    assert loss_ratio_alpha(-1.0, 3.0) == 0.0
    assert 0.0 <= loss_ratio_alpha(-5.0, 3.0) <= 1.0


@pytest.mark.parametrize("weighting", ["closed_form", "loss_ratio"])
def test_every_steps_alpha_lies_in_0_1_and_plain_networks_are_refused(weighting):
    setup = digits_setup()
    torch.manual_seed(0)
    model = build_model(VIB_MLP["name"], VIB_MLP["params"], [1, 8, 8], 10)
    train(model, setup.train, TrainingConfig(epochs=5, batch_size=32, lr=3e-3), device=DEVICE)
    original = model.state_dict()["representer.1.weight"].clone()
    params = {"weighting": weighting, "epochs": 4, "batch_size": 16, "stop": "none"}
    result = get_unlearner("rfu_ss", params).unlearn(
        context_for(setup, model, forget=setup.forget, retain=setup.retain)
    )
    low, high = result.info["alpha_range"]
    assert 0.0 <= low <= high <= 1.0 and result.info["steps"] == 16
    assert not torch.equal(result.state_dict["representer.1.weight"], original)
    with pytest.raises(ValueError, match="bottleneck"):
        get_unlearner("rfu_ss").unlearn(
            context_for(setup, setup.model(), forget=setup.forget, retain=setup.retain)
        )


def test_rfu_ss_is_registered_with_its_needs():
    assert "rfu_ss" in list_unlearners()
    assert get_unlearner("rfu_ss").needs == {Need.RETAIN, Need.VALIDATION}
