"""BatchNorm's running statistics under every method: each method's "BatchNorm:" line in
docs/unlearners.md says whether it keeps them (frozen) or trains them (re-estimated), and
every method runs here on a small BatchNorm network (a bottleneck, so that RFU-SS takes it
too) to be held to its line; nothing non-finite is ever published."""

from __future__ import annotations

import copy
import dataclasses
from functools import lru_cache

import pytest
import torch
from torch import nn

from ml.batchnorm import train_with_frozen_batchnorm
from ml.training import TrainingConfig, train
from ml.unlearners import (
    Need,
    UnlearnContext,
    Unlearner,
    UnlearnResult,
    get_unlearner,
    list_unlearners,
    run_unlearner,
    state_dict_of,
)
from ml.vib import VariationalBottleneck
from tests.helpers.batchnorm import documented_batchnorm, running_statistics
from tests.helpers.unlearning import DEVICE, digits_setup

RECIPE = TrainingConfig(epochs=3, batch_size=32, lr=3e-3, seed=0)
Z_DIM = 8
# Each method's smallest run that still steps (no stop rule: the run must not end at once).
QUICK: dict[str, dict] = {
    "retrain": {},
    "finetune": {"epochs": 1},
    "gradient_ascent": {"epochs": 1, "stop": "none"},
    "random_labels": {"epochs": 1},
    "pgu": {"max_steps": 3, "stop": "none"},
    "rfu_ss": {"epochs": 1, "stop": "none"},
    "conmu": {"epochs": 1, "stop": "none", "retain_z1": 100.0, "retain_z2": 100.0},
    "ltu": {"iterations": 2, "mi_steps": 5, "stop": "none"},
    "dau": {"iterations": 2, "attacker_pretrain_steps": 5, "stop": "none"},
}
DOCUMENTED = documented_batchnorm()


def _network() -> VariationalBottleneck:
    representer = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Linear(32, 2 * Z_DIM),
    )
    return VariationalBottleneck(representer, nn.Linear(Z_DIM, 10), Z_DIM)


@lru_cache(maxsize=1)
def _trained() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = _network()
    train(model, digits_setup().train, RECIPE, device=DEVICE)
    return state_dict_of(model)


def _context() -> UnlearnContext:
    setup = digits_setup()
    model = _network()
    model.load_state_dict(copy.deepcopy(_trained()))
    return UnlearnContext(
        model=model.eval(),
        build_model=_network,
        forget=setup.forget,
        retain=setup.retain,
        validation=setup.holdout,
        shadow=setup.shadow,
        training=RECIPE,
        device=DEVICE,
        base_version=1,
    )


def test_every_method_states_what_it_does_with_batchnorm():
    assert set(DOCUMENTED) == set(list_unlearners()) == set(QUICK)
    assert set(DOCUMENTED.values()) == {"frozen", "re-estimated"}


@pytest.mark.parametrize("name", sorted(QUICK))
def test_each_method_keeps_or_re_estimates_batchnorm_as_documented(name):
    unlearner = get_unlearner(name, QUICK[name])
    context = _context()
    if Need.CACHE in unlearner.needs:
        artifacts = unlearner.prepare(dataclasses.replace(context, retain=digits_setup().train))
        context.artifacts = artifacts.get
    before = running_statistics(_trained())
    assert len(before) == 4  # two BatchNorm layers, mean and variance each
    after = running_statistics(run_unlearner(unlearner, context).state_dict)
    assert all(bool(torch.isfinite(t).all()) for t in after.values())
    assert all(bool((after[n] >= 0).all()) for n in after if n.endswith("running_var"))
    kept = [n for n in before if torch.equal(before[n], after[n])]
    if DOCUMENTED[name] == "frozen":
        assert kept == list(before), f"{name} moved BatchNorm statistics it claims to freeze"
    else:
        assert kept == [], f"{name} claims to re-estimate BatchNorm statistics; {kept} stayed"


def test_frozen_batchnorm_trains_the_rest():
    """Dropout and the bottleneck's sampling are on, BatchNorm normalises with (and keeps)
    its running statistics."""
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    before = model[1].running_mean.clone()
    train_with_frozen_batchnorm(model)
    assert model.training and model[2].training and not model[1].training
    model(torch.randn(16, 4) + 5.0)
    assert torch.equal(model[1].running_mean, before)


class _Corrupting(Unlearner):
    name = "corrupting"
    needs = frozenset({Need.RETAIN})

    def unlearn(self, context: UnlearnContext) -> UnlearnResult:
        state = {name: t.clone() for name, t in state_dict_of(context.model).items()}
        state["representer.1.running_var"][0] = float("nan")
        return UnlearnResult(state)


def test_non_finite_statistics_are_never_published():
    context = _context()
    with pytest.raises(RuntimeError, match=r"corrupting .*representer\.1\.running_var"):
        run_unlearner(_Corrupting(), context)
    # The model in the context was not given the broken state.
    assert torch.isfinite(context.model.representer[1].running_var).all()
