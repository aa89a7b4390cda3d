"""The baselines gradient_ascent and random_labels: they run, forget, and mask classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from ml.samples import Withheld
from ml.training import predict
from ml.unlearners import (
    Need,
    Unlearner,
    UnlearnResult,
    get_unlearner,
    list_unlearners,
    run_unlearner,
    state_dict_of,
)
from ml.unlearners.base import raise_if_diverged
from ml.unlearners.random_labels import random_wrong_labels
from tests.helpers.unlearning import DEVICE, RetainGuard, accuracy_of, context_for, digits_setup


def _unlearned(setup, result):
    model = setup.build()
    model.load_state_dict(result.state_dict)
    return model


def test_baselines_are_registered_with_their_needs():
    assert {"gradient_ascent", "random_labels", "pgu"} <= set(list_unlearners())
    assert get_unlearner("gradient_ascent").needs == {Need.VALIDATION}
    assert get_unlearner("random_labels").needs == {Need.RETAIN}


def test_gradient_ascent_lowers_forget_accuracy_reading_no_retained_sample():
    setup = digits_setup()
    before = accuracy_of(setup.model(), setup.forget)
    guard = RetainGuard(setup.adapter, setup.retain.positions)
    result = get_unlearner("gradient_ascent").unlearn(
        context_for(
            setup,
            setup.model(),
            forget=guard.wrap(setup.forget),
            retain=guard.wrap(setup.retain),
            validation=guard.wrap(setup.holdout),
        )
    )
    assert accuracy_of(_unlearned(setup, result), setup.forget) <= before - 0.05
    assert result.info["steps"] >= 1 and result.info["unlearning_seconds"] > 0


def test_gradient_ascent_without_a_stop_rule_reads_no_validation_set_and_runs_its_budget():
    setup = digits_setup()
    guard = RetainGuard(setup.adapter, setup.holdout.positions)
    result = get_unlearner("gradient_ascent", {"stop": "none", "epochs": 6}).unlearn(
        context_for(
            setup,
            setup.model(),
            forget=setup.forget,
            retain=setup.retain,
            validation=guard.wrap(setup.holdout),
        )
    )
    assert result.info["steps"] == 6 and result.info["stopped_by"] == "step budget"
    assert not torch.equal(result.state_dict["0.weight"], setup.state_dict["0.weight"])


def test_random_labels_lowers_forget_accuracy():
    setup = digits_setup()
    before = accuracy_of(setup.model(), setup.forget)
    result = get_unlearner("random_labels").unlearn(
        context_for(setup, setup.model(), forget=setup.forget, retain=setup.retain)
    )
    assert accuracy_of(_unlearned(setup, result), setup.forget) <= before - 0.05


def test_random_wrong_labels_are_wrong_and_avoid_excluded_classes():
    labels = np.repeat(np.arange(10), 20)
    drawn = random_wrong_labels(labels, 10, excluded=[3, 7], seed=0)
    assert not np.any(drawn == labels)
    assert not np.isin(drawn, [3, 7]).any()
    assert len(np.unique(drawn)) == 8  # spread over every allowed class
    with pytest.raises(ValueError):
        random_wrong_labels(np.array([0]), 2, excluded=[1], seed=0)


@pytest.mark.parametrize("name", ["gradient_ascent", "random_labels"])
def test_class_deletion_masks_the_forgotten_class(name):
    setup = digits_setup()
    forgotten = 5
    rows = np.flatnonzero(setup.train.labels == forgotten)
    result = run_unlearner(
        get_unlearner(name),
        context_for(
            setup,
            setup.model(),
            forget=setup.train.take(rows),
            retain=setup.train.take(np.setdiff1d(np.arange(len(setup.train)), rows)),
            class_labels=[forgotten],
        ),
    )
    inputs, _ = setup.test.tensors()
    predictions = predict(_unlearned(setup, result), inputs, device=DEVICE).argmax(1)
    assert not (predictions == forgotten).any()


@pytest.mark.parametrize(
    "name, params, field",
    [
        ("gradient_ascent", {"lr": 0}, "lr"),
        ("gradient_ascent", {"epochs": 0}, "epochs"),
        ("gradient_ascent", {"stop": "sometimes"}, "stop"),
        ("gradient_ascent", {"max_grad_norm": 0}, "max_grad_norm"),
        ("gradient_ascent", {"momentum": 0.9}, "momentum"),
        ("random_labels", {"lr": -1}, "lr"),
        ("random_labels", {"epochs": 0}, "epochs"),
        ("random_labels", {"retain_fraction": 0.5}, "retain_fraction"),
    ],
)
def test_invalid_params_are_refused(name, params, field):
    with pytest.raises(ValidationError, match=field):
        get_unlearner(name, params)


class _ReadsUndeclaredRetain(Unlearner):
    """Declares only the validation set, then reads D_r anyway."""

    name = "reads_undeclared_retain"
    needs = frozenset({Need.VALIDATION})

    def unlearn(self, context):
        context.retain.tensors()
        return UnlearnResult(state_dict_of(context.model))


def test_a_set_a_method_did_not_declare_is_withheld():
    setup = digits_setup()
    context = context_for(setup, setup.model(), forget=setup.forget, retain=setup.retain)
    with pytest.raises(Withheld, match="did not declare Need.RETAIN"):
        run_unlearner(_ReadsUndeclaredRetain(), context)
    # Declared sets arrive whole.
    finetune = run_unlearner(get_unlearner("finetune", {"epochs": 1}), context)
    assert finetune.state_dict.keys() == setup.state_dict.keys()


def test_weights_that_turn_non_finite_fail_the_job_naming_the_method():
    model = torch.nn.Linear(2, 2)
    raise_if_diverged(model, "gradient ascent", lr=0.5)  # finite: nothing to say
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match=r"gradient ascent diverged .*lower lr \(now 0.5\)"):
        raise_if_diverged(model, "gradient ascent", lr=0.5)
