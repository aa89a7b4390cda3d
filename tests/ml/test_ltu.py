"""LTU: gradient harmonisation, second- vs first-order meta-gradients, the query samplers,
the accessible share of D_r and the params (through the service:
tests/service/test_ltu_service.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn
from torch.func import functional_call

from ml.training import predict
from ml.unlearners import Need, get_unlearner, run_unlearner
from ml.unlearners.ltu import QuerySampler, harmonise, meta_gradient
from tests.helpers.unlearning import DEVICE, RetainGuard, context_for, digits_setup


def test_harmonised_gradient_never_opposes_the_retain_gradient():
    generator = torch.Generator().manual_seed(0)
    projected = 0
    for _ in range(500):
        remember, forget = torch.randn(2, 50, generator=generator, dtype=torch.float64)
        harmonised, was_projected = harmonise(remember, forget)
        projected += was_projected
        assert torch.dot(harmonised, remember) >= -1e-9 * remember.norm() * forget.norm()
        if torch.dot(forget, remember) >= 0:
            assert not was_projected and torch.equal(harmonised, forget)
        else:  # only the conflicting component goes: the rest of g_f is kept
            assert was_projected
            assert torch.dot(harmonised, remember).abs() < 1e-9 * forget.norm()
            removed = forget - harmonised  # a multiple of g_r
            cosine = torch.dot(removed, remember) / (removed.norm() * remember.norm())
            assert cosine == pytest.approx(-1.0, abs=1e-9)
    assert 100 < projected < 400  # both cases were exercised


def _tiny_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    xs, xq = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 4, dtype=torch.float64)
    ys, yq = torch.randint(3, (8,)), torch.randint(3, (8,))
    params = {k: v.detach() for k, v in model.named_parameters()}

    def support(p):
        return F.cross_entropy(functional_call(model, p, (xs,)), ys)

    def query(p):
        return F.cross_entropy(functional_call(model, p, (xq,)), yq)

    return params, support, query


def _flat(gradient):
    return torch.cat([g.flatten() for g in gradient.values()])


@pytest.mark.parametrize("eta", [0.1, 0.01])
def test_second_and_first_order_meta_gradients_differ_by_the_hessian_term(eta):
    params, support, query = _tiny_problem()
    second = _flat(meta_gradient(support, query, params, inner_lr=eta, second_order=True))
    first = _flat(meta_gradient(support, query, params, inner_lr=eta, second_order=False))
    # Exactly: second = first - eta H_support(theta) grad query(theta').
    inner = torch.func.grad(support)(params)
    adapted = {k: params[k] - eta * inner[k] for k in params}
    outer = torch.func.grad(query)(adapted)
    _, hessian_term = torch.func.jvp(torch.func.grad(support), (params,), (outer,))
    torch.testing.assert_close(second, first - eta * _flat(hessian_term), rtol=1e-9, atol=1e-12)
    # And so the first-order approximation is within O(eta) of the second-order gradient.
    gap = float((second - first).norm() / second.norm())
    assert 0 < gap < 2 * eta


def test_meta_gradient_gap_shrinks_linearly_with_the_meta_tune_step():
    params, support, query = _tiny_problem()

    def gap(eta):
        second = meta_gradient(support, query, params, inner_lr=eta, second_order=True)
        first = meta_gradient(support, query, params, inner_lr=eta, second_order=False)
        return float((_flat(second) - _flat(first)).norm())

    assert gap(0.0) == 0.0
    assert gap(1e-3) / gap(1e-2) == pytest.approx(0.1, rel=0.05)


def test_query_samplers():
    features = torch.tensor([[0.0, 0.0], [10.0, 10.0], [0.1, 0.0], [5.0, 5.0], [0.0, 0.2]])
    labels = torch.tensor([0, 1, 1, 2, 0])
    sampler = QuerySampler(features, labels, seed=0)
    nearest = sampler.feature_space(torch.tensor([[0.0, 0.05]]), 3)
    assert set(nearest.tolist()) == {0, 2, 4}
    same_class = sampler.label_space(torch.tensor([1, 1, 2, 0, 7]))
    assert labels[same_class[:4]].tolist() == [1, 1, 2, 0]  # 7: none in D_r', any sample
    drawn = sampler.random(5)
    assert sorted(drawn.tolist()) == [0, 1, 2, 3, 4]


def test_ltu_reads_only_its_accessible_share_of_the_retained_data():
    setup = digits_setup()
    share = 0.3
    reads: list[np.ndarray] = []

    class Counting(RetainGuard):
        def read(self, positions):
            reads.append(positions)
            return super().read(positions)

    guard = Counting(setup.adapter, np.array([], dtype=np.int64))
    result = get_unlearner(
        "ltu", {"retain_fraction": share, "iterations": 2, "stop": "none", "mi_steps": 5}
    ).unlearn(
        context_for(setup, setup.model(), forget=setup.forget, retain=guard.wrap(setup.retain))
    )
    touched = set(np.concatenate(reads).tolist())
    assert len(touched) == result.info["accessible_retain"] == round(share * len(setup.retain))
    assert touched <= set(setup.retain.positions.tolist())
    assert result.info["steps"] == 2


def test_ltu_declares_retain_validation_and_its_shadow_set():
    assert get_unlearner("ltu").needs == {Need.RETAIN, Need.VALIDATION, Need.SHADOW}


@pytest.mark.parametrize(
    "params, field",
    [
        ({"retain_fraction": 0}, "retain_fraction"),
        ({"retain_fraction": 1.5}, "retain_fraction"),
        ({"order": "third"}, "order"),
        ({"mi_models": 1}, "mi_models"),
        ({"lr": 0}, "lr"),
        ({"iterations": "10"}, "iterations"),
        ({"inner_steps": 3}, "inner_steps"),
    ],
)
def test_invalid_params_are_refused(params, field):
    with pytest.raises(ValidationError, match=field):
        get_unlearner("ltu", params)


@pytest.mark.parametrize("order", ["second", "first"])
def test_class_deletion_runs_and_masks_the_class(order):
    setup = digits_setup()
    forgotten = 5
    rows = np.flatnonzero(setup.train.labels == forgotten)
    result = run_unlearner(
        get_unlearner("ltu", {"stop": "none", "iterations": 3, "mi_steps": 5, "order": order}),
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
