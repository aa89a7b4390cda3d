"""Early stopping (``ml.unlearners.early_stopping``): checks every k samples, the best
state kept, the brake first; the chance band; the distribution and class rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ml.datasets import DatasetAdapter
from ml.samples import SampleSet
from ml.training import train
from ml.unlearners import early_stopping
from tests.helpers.unlearning import DEVICE, RECIPE, digits_setup


def _scripted_run(monkeypatch, measures, *, batches=6, check_every=1):
    """Run unlearn_steps on a one-weight model whose weight counts the steps, the rule's
    measures scripted: ``measures[i]`` is what check i sees (check 0 before any step)."""
    setup = digits_setup()
    script = iter(measures)
    monkeypatch.setattr(early_stopping.EarlyStopping, "measure", lambda self, model: next(script))
    stopping = early_stopping.EarlyStopping(
        "distribution", forget=setup.forget, validation=setup.holdout, eval_size=50, device=DEVICE
    )
    model = nn.Linear(1, 1, bias=False)
    model.weight.data.zero_()

    def step(spent, inputs, labels):
        model.weight.data += 1

    one = (torch.zeros(1, 1), torch.zeros(1, dtype=torch.long))
    facts = early_stopping.unlearn_steps(
        model,
        [one] * batches,
        step,
        stopping,
        max_steps=batches,
        check_every=check_every,
        progress=lambda *a: None,
    )
    return facts, model.weight.item()


Measure = early_stopping.Measure


def test_the_best_state_is_kept_when_the_target_is_passed(monkeypatch):
    # distances 0.06, 0.04, 0.01, then past the target at 0.03: stop, roll back to step 2
    facts, weight = _scripted_run(
        monkeypatch,
        [Measure(0.06, False), Measure(0.04, False), Measure(0.01, False), Measure(0.03, True)],
    )
    assert (facts["steps"], facts["kept_check"], weight) == (3, 2, 2.0)
    assert facts["stopped_by"] == "forget losses and accuracy look held out"
    # a closer state at the crossing itself is kept
    facts, weight = _scripted_run(monkeypatch, [Measure(0.06, False), Measure(0.0, True)])
    assert (facts["steps"], facts["kept_check"], weight) == (1, 1, 1.0)


def test_checks_every_k_samples_not_every_epoch(monkeypatch):
    facts, weight = _scripted_run(
        monkeypatch,
        [Measure(0.06, False), Measure(0.05, False), Measure(0.04, False), Measure(0.03, False)],
        batches=6,
        check_every=2,
    )
    # checks before any step, after steps 2, 4 and 6: the budget ran out, the last kept
    assert [c["samples"] for c in facts["checks"]] == [0.0, 2.0, 4.0, 6.0]
    assert (facts["stopped_by"], weight) == ("step budget", 6.0)


def test_a_run_that_comes_no_closer_gives_up_and_rolls_back(monkeypatch):
    distances = [0.1, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.2]
    facts, weight = _scripted_run(monkeypatch, [Measure(d, False) for d in distances], batches=10)
    assert facts["stopped_by"] == "no closer to the target in 5 checks"
    assert (facts["steps"], facts["kept_check"], weight) == (6, 1, 1.0)


def test_a_target_already_reached_leaves_the_model_alone(monkeypatch):
    facts, weight = _scripted_run(monkeypatch, [Measure(0.01, True)])
    assert (facts["steps"], facts["kept_check"], weight) == (0, 0, 0.0)


def test_the_brake_comes_first_and_a_braked_state_is_never_kept(monkeypatch):
    # the third state is the closest to the target, but it broke the brake
    facts, weight = _scripted_run(
        monkeypatch,
        [Measure(0.3, False), Measure(0.2, False), Measure(0.0, True, braked=True)],
    )
    assert facts["stopped_by"].startswith("remaining-class accuracy fell")
    assert (facts["steps"], facts["kept_check"], weight) == (2, 1, 1.0)


def test_the_target_is_chance_up_to_one_standard_error_and_the_first_state_inside_is_kept():
    band = early_stopping._chance_band(100, 400)
    assert band == pytest.approx(np.sqrt(501 / (12 * 100 * 400)))  # Hanley-McNeil at 0.5
    assert early_stopping._chance_band(0, 400) == 0.0
    outside = early_stopping._towards_chance(0.5 + 1.5 * band, band)
    assert not outside.reached and outside.distance == pytest.approx(0.5 * band)
    inside = early_stopping._towards_chance(0.5 + 0.5 * band, band)
    assert inside.reached and inside.distance == 0.0
    # an overshoot below chance is as far as one above it
    assert early_stopping._towards_chance(0.5 - 1.5 * band, band).distance == outside.distance
    # random labels at the sizes of a real check sit inside the band about 68% of the time
    rng = np.random.default_rng(0)
    hits = [
        early_stopping._towards_chance(
            early_stopping._auc_lower_first(rng.normal(size=100), rng.normal(size=400)), band
        ).distance
        == 0.0
        for _ in range(400)
    ]
    assert 0.6 < np.mean(hits) < 0.76


def test_rules_resolve_and_the_class_rule_needs_a_class_deletion():
    assert early_stopping.resolve_rule("auto", None) == "distribution"
    assert early_stopping.resolve_rule("auto", [3]) == "class"
    setup = digits_setup()
    with pytest.raises(ValueError, match="class"):
        early_stopping.EarlyStopping(
            "class", forget=setup.forget, validation=setup.holdout, eval_size=50, device=DEVICE
        )


def test_the_distribution_rule_tells_members_from_unseen_samples():
    """The original model knows its forget set: its losses rank below the holdout's. A model
    that never saw it (retrained) sits at chance, the target."""
    setup = digits_setup()
    stopping = early_stopping.EarlyStopping(
        "distribution", forget=setup.forget, validation=setup.holdout, eval_size=500, device=DEVICE
    )
    original = stopping.measure(setup.model())
    assert original.record["loss_auc"] > 0.53 and not original.reached
    torch.manual_seed(5)
    retrained = train(
        setup.build(), setup.retain, RECIPE.model_copy(update={"seed": 5}), device=DEVICE
    )
    assert abs(stopping.measure(retrained).record["loss_auc"] - 0.5) < 0.08


def _logit_samples(rows: list[tuple[int, int]]) -> SampleSet:
    """Samples whose inputs are their logits (read through nn.Identity): (label, argmax)
    per row, a margin of 3 on the argmax."""
    inputs = torch.zeros(len(rows), 10)
    for i, (_, argmax) in enumerate(rows):
        inputs[i, argmax] = 3.0

    class Rows(DatasetAdapter):
        def index(self):
            raise NotImplementedError

        def read(self, positions):
            return inputs[torch.as_tensor(positions, dtype=torch.long)]

    labels = np.array([label for label, _ in rows], dtype=np.int64)
    keys = [f"k{i}" for i in range(len(rows))]
    return SampleSet(Rows({}, Path(".")), np.arange(len(rows)), labels, keys)


def test_the_distribution_rule_also_wants_d_f_no_better_classified_than_held_out_data():
    """A well-generalising model: D_f's losses rank like held-out ones within the AUC's
    noise band, yet 5 more points of D_f are right. Loss AUC alone would stop; the rule
    goes on until D_f is classified no better than D_v."""

    def samples(wrong: int) -> SampleSet:
        return _logit_samples([(i % 10, (i + 1) % 10 if i < wrong else i % 10) for i in range(100)])

    def rule(forget_wrong: int) -> early_stopping.EarlyStopping:
        return early_stopping.EarlyStopping(
            "distribution",
            forget=samples(forget_wrong),
            validation=samples(10),
            eval_size=500,
            device=DEVICE,
        )

    knows_more = rule(forget_wrong=5).measure(nn.Identity())
    assert abs(knows_more.record["loss_auc"] - 0.5) <= knows_more.record["band"]
    assert knows_more.record["accuracy_excess"] == pytest.approx(0.05)
    assert not knows_more.reached and knows_more.distance > 0
    like_held_out = rule(forget_wrong=10).measure(nn.Identity())
    assert like_held_out.reached and like_held_out.distance == 0.0
    forgot_more = rule(forget_wrong=30).measure(nn.Identity())  # overshot: stop, not kept
    assert forgot_more.reached and forgot_more.distance > 0


def test_the_class_rule_reads_masked_outputs_against_held_out_samples_of_the_class():
    setup = digits_setup()
    forgotten = 3
    forget = setup.train.take(np.flatnonzero(setup.train.labels == forgotten))
    stopping = early_stopping.EarlyStopping(
        "class",
        forget=forget,
        validation=setup.holdout,
        eval_size=500,
        device=DEVICE,
        class_labels=[forgotten],
    )
    measured = stopping.measure(setup.model())
    assert 0.0 <= measured.record["masked_loss_auc"] <= 1.0
    assert measured.record["remaining_accuracy"] > 0.8  # argmax over the other nine classes
    assert measured.record["forget_accuracy"] > 0.9  # unmasked: it still knows the class
