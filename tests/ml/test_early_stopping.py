"""Early stopping (``ml.unlearners.early_stopping``): checks every k samples, the best
state kept, the brake first; the weighted AUC and its variance; equivalence by two
one-sided tests; D_f's class mix as the target; the class rule on unmasked outputs."""

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


class NeverPredicts(nn.Module):
    """``inner`` with one class's logit pinned at -1e4, as masking leaves it."""

    def __init__(self, inner: nn.Module, label: int) -> None:
        super().__init__()
        self.inner, self.label = inner, label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x).clone()
        logits[:, self.label] = -1e4
        return logits


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
    assert facts["stopped_by"].startswith("forget losses and accuracy equivalent")
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
    assert facts["stopped_by"].startswith("the utility brake")
    assert (facts["steps"], facts["kept_check"], weight) == (2, 1, 1.0)


def test_the_weighted_auc_is_the_mann_whitney_auc_and_delongs_variance():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    first, second = rng.normal(0, 1, 300), rng.normal(0.3, 1, 500)
    auc, variance = early_stopping.weighted_auc(first, second, np.ones(500))
    labels = np.r_[np.ones(300), np.zeros(500)]
    assert auc == pytest.approx(roc_auc_score(labels, -np.r_[first, second]))
    # under "no difference" DeLong's variance is close to Hanley-McNeil's at 0.5
    same, _ = rng.normal(size=300), None
    _, null_variance = early_stopping.weighted_auc(same, rng.normal(size=500), np.ones(500))
    assert null_variance == pytest.approx((300 + 500 + 1) / (12 * 300 * 500), rel=0.15)
    # weights draw the second side: doubling one class's weight is duplicating its samples
    kinds = rng.integers(0, 2, 500)
    weights = np.where(kinds == 1, 2.0, 1.0)
    duplicated = np.r_[second, second[kinds == 1]]
    weighted, _ = early_stopping.weighted_auc(first, second, weights)
    plain, _ = early_stopping.weighted_auc(first, duplicated, np.ones(len(duplicated)))
    assert weighted == pytest.approx(plain)


def test_equivalence_is_decided_with_confidence_at_the_stated_margin():
    """Two samples from one distribution: with 2,000 a side the 90% interval fits inside
    +-0.05 nearly always (reached); with 50 a side it never fits (not reached, however
    close the estimate), where "not significantly different" would have stopped at once."""
    rng = np.random.default_rng(1)

    def reached(n: int, margin: float = 0.05) -> float:
        hits = []
        for _ in range(200):
            auc, variance = early_stopping.weighted_auc(
                rng.normal(size=n), rng.normal(size=n), np.ones(n)
            )
            z = early_stopping.EQUIVALENCE_Z
            hits.append(abs(auc - 0.5) + z * np.sqrt(variance) <= margin)
        return float(np.mean(hits))

    assert reached(2000) > 0.95
    assert reached(50) == 0.0


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


def _rule(forget: SampleSet, validation: SampleSet) -> early_stopping.EarlyStopping:
    """The distribution rule over these sets, as after a starting model that knew D_f 10
    points better than held-out data (and ranked its losses 0.1 lower): margins 0.05."""
    rule = early_stopping.EarlyStopping(
        "distribution", forget=forget, validation=validation, eval_size=2000, device=DEVICE
    )
    rule._margins = rule._sized_margins(0.1, 0.1)
    return rule


def _classified(wrong_every: int, size: int = 2000, offset: int = 0) -> SampleSet:
    """``size`` samples over 10 classes, in each class every ``wrong_every``-th one
    misclassified (``offset`` picks which)."""
    return _logit_samples(
        [
            (i % 10, (i + 1) % 10 if (i // 10 + offset) % wrong_every == 0 else i % 10)
            for i in range(size)
        ]
    )


def test_the_distribution_rule_wants_equivalence_on_both_measures():
    """A well-generalising model whose D_f ranks like held-out data but is 5 points better
    classified is not at the target; equal is; forgetting more than held-out data shows (an
    overshoot) is not at it either, and no closer than the undershoot."""
    held_out = _classified(10)  # 90% right
    knows_more = _rule(_classified(20, offset=3), held_out).measure(nn.Identity())  # 95%
    assert knows_more.record["accuracy_gap"] == pytest.approx(0.05, abs=0.002)
    assert not knows_more.reached and knows_more.distance > 0.04
    like_held_out = _rule(_classified(10, offset=5), held_out).measure(nn.Identity())
    assert abs(like_held_out.record["accuracy_gap"]) < 0.002 and like_held_out.reached
    forgot_more = _rule(_classified(4), held_out).measure(nn.Identity())  # 75%
    assert not forgot_more.reached and forgot_more.distance > knows_more.distance


def test_the_margins_are_sized_by_the_starting_model_s_own_difference():
    """A model 2 points better on D_f than on held-out data (92% against 90%), with
    2,000 samples each, sits inside a fixed 0.05 margin with 95% confidence, so that margin
    would call it forgotten before any step. Sized by it, the margin on the gap is half of
    its 2 points, and the start is not at the target."""
    held_out = _classified(10)  # 90% right
    forget = _classified(12, offset=1)  # 92% right
    fixed = early_stopping.EarlyStopping(
        "distribution", forget=forget, validation=held_out, eval_size=2000, device=DEVICE
    )
    start = fixed.measure(nn.Identity())
    gap = start.record["accuracy_gap"]
    assert gap == pytest.approx(0.02, abs=0.002)
    interval = gap + early_stopping.EQUIVALENCE_Z * start.record["accuracy_gap_se"]
    assert interval < 0.05  # inside the fixed cap: the old rule's "already forgotten"
    assert not start.reached and start.record["gap_margin"] == pytest.approx(gap / 2)
    assert start.record["auc_margin"] == pytest.approx(abs(start.record["loss_auc"] - 0.5) / 2)

    rule = early_stopping.EarlyStopping(
        "distribution",
        forget=forget,
        validation=held_out,
        eval_size=2000,
        device=DEVICE,
        brake=0.2,  # the model measured below loses more than the default brake allows
    )
    observed = rule.observe(nn.Identity(), 0)
    assert not observed.reached and rule.already_reached(nn.Identity()) is False
    # the margins stay the start's for every later check, whatever model is measured: a
    # model with another difference would size other margins as a start
    other = ForgetsClassZero()
    own = early_stopping.EarlyStopping(
        "distribution", forget=forget, validation=held_out, eval_size=2000, device=DEVICE
    ).measure(other)
    later = rule.measure(other)
    assert own.record["gap_margin"] != pytest.approx(observed.record["gap_margin"], abs=1e-3)
    assert (later.record["auc_margin"], later.record["gap_margin"]) == (
        observed.record["auc_margin"],
        observed.record["gap_margin"],
    )
    # a model showing no difference at all is not "reached" as a start either: its margins
    # are 0 and no interval is
    same = early_stopping.EarlyStopping(
        "distribution", forget=held_out, validation=held_out, eval_size=2000, device=DEVICE
    )
    assert not same.already_reached(nn.Identity())
    with pytest.raises(ValueError, match="margin_share"):
        early_stopping.EarlyStopping(
            "distribution",
            forget=forget,
            validation=held_out,
            eval_size=50,
            device=DEVICE,
            margin_share=0.0,
        )


class ForgetsClassZero(nn.Module):
    """Predicts class 1 wherever the input (a row of logits) says 0: worse on every set."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.clone()
        zero = logits.argmax(1) == 0
        logits[zero, 1] = logits[zero, 0] + 1
        return logits


def test_a_state_that_loses_held_out_accuracy_too_is_no_closer():
    """Closing the gap by losing accuracy everywhere is not what a retrained model shows (it
    generalises as the original does): the held-out accuracy lost since the start counts in
    the distance."""
    rule = early_stopping.EarlyStopping(
        "distribution",
        forget=_classified(20, offset=3),  # 95% right
        validation=_classified(10),  # 90% right
        eval_size=2000,
        device=DEVICE,
        brake=0.2,  # (the default brake would end the run at this fall before measuring it)
    )
    start = rule.observe(nn.Identity(), 0)
    assert start.record["validation_drop"] == 0
    worse = rule.measure(ForgetsClassZero())
    drop = start.record["validation_accuracy"] - worse.record["validation_accuracy"]
    assert worse.record["validation_drop"] == pytest.approx(drop) and drop > 0.05
    assert worse.record["accuracy_gap"] < start.record["accuracy_gap"]  # the gap closed a bit
    assert worse.distance == pytest.approx(
        abs(worse.record["loss_auc"] - 0.5) + abs(worse.record["accuracy_gap"]) + drop
    )
    assert worse.distance > start.distance


def test_the_distribution_target_follows_d_fs_class_mix():
    """One person's data is skewed: 80% from a hard class (0: 60% right on held-out data,
    and on D_f, as a retrained model would show) and 20% from an easy one (1: all right).
    Against held-out data of the same classes in equal shares, D_f would look 12 points
    worse classified than held-out data and the rule would push the wrong way; matched to
    D_f's mix, it is at the target."""

    def mix(hard: int, easy: int, size_per_ten: int) -> list[tuple[int, int]]:
        rows = []
        for i in range(hard):
            rows.append((0, 0 if i % 10 < 6 else 5))  # class 0: 60% right
        rows += [(1, 1)] * easy  # class 1: all right
        return rows

    forget = _logit_samples(mix(800, 200, 10))
    held_out = _logit_samples(mix(1000, 1000, 10))
    stopping = _rule(forget, held_out)
    measured = stopping.measure(nn.Identity())
    assert measured.record["forget_accuracy"] == pytest.approx(0.68)
    assert measured.record["validation_accuracy"] == pytest.approx(0.68, abs=0.01)
    assert abs(measured.record["accuracy_gap"]) < 0.01 and measured.reached
    unmatched = float(np.mean([label == argmax for label, argmax in mix(1000, 1000, 10)]))
    assert unmatched == pytest.approx(0.8)  # what equal shares would have shown


def test_matched_held_out_samples_weigh_each_class_as_d_f_does():
    held_out = _classified(10)
    forget_labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    chosen, weights = early_stopping.matched_heldout(forget_labels, held_out, size=100)
    share = {c: weights[chosen.labels == c].sum() / weights.sum() for c in (0, 1, 2)}
    assert share == pytest.approx({0: 0.7, 1: 0.2, 2: 0.1})
    assert set(np.unique(chosen.labels)) == {0, 1, 2}
    with pytest.raises(ValueError, match="held-out samples"):
        early_stopping.matched_heldout(np.array([0]), held_out.take(np.arange(0)), size=10)


def test_the_class_rule_reads_unmasked_outputs():
    """The parent still predicts the class: not at the target, though masking alone would
    hide it. A model that never predicts the class (as a retrained one) is at it."""
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
    parent = stopping.measure(setup.model())
    assert parent.record["forget_accuracy"] > 0.9 and not parent.reached
    assert parent.record["heldout_class_accuracy"] > 0.8
    assert parent.record["remaining_accuracy"] > 0.8  # argmax over the other nine classes

    never = stopping.measure(NeverPredicts(setup.model(), forgotten))
    assert never.record["forget_accuracy"] == 0.0 and never.reached and never.distance == 0.0


def test_the_brake_reads_only_the_classes_the_model_still_predicts():
    """A class an earlier deletion masked sits at 0% on held-out data: counted in, it would
    dilute the brake by its share."""
    setup = digits_setup()
    model = NeverPredicts(setup.model(), 3)
    forget = setup.forget.without_classes([3])

    def remaining(**options) -> float:
        stopping = early_stopping.EarlyStopping(
            "distribution",
            forget=forget,
            validation=setup.holdout,
            eval_size=2000,
            device=DEVICE,
            **options,
        )
        return stopping.measure(model).record["remaining_accuracy"]

    others = setup.holdout.without_classes([3])
    correct = (model(others.tensors()[0]).argmax(1) == others.tensors()[1]).float()
    assert remaining(masked_classes=[3]) == pytest.approx(float(correct.mean()), abs=1e-6)
    assert remaining() < remaining(masked_classes=[3]) - 0.05


def test_a_check_runs_each_held_out_sample_once():
    """The brake's subset and the matched one are prefixes of one shuffled D_v, so they
    share most of their samples: a check runs their union once, and each reads its own
    rows, as if run alone."""
    setup = digits_setup()
    stopping = early_stopping.EarlyStopping(
        "distribution", forget=setup.forget, validation=setup.holdout, eval_size=150, device=DEVICE
    )
    model = setup.model()
    seen: list[int] = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    measured = stopping.measure(model)
    handle.remove()
    shuffled = early_stopping.ranked(setup.holdout, seed=0)
    utility = shuffled.take(np.arange(150))
    matched, weights = early_stopping.matched_heldout(
        setup.forget.subset(150).labels, shuffled, size=150
    )
    union = np.union1d(utility.positions, matched.positions)
    # Drawn apart (two seeds), two subsets of 150 would share about 150 * 150 / |D_v|.
    assert len(union) < len(utility) + len(matched) - 100
    assert sum(seen) == len(setup.forget.subset(150)) + len(union)
    # The measures are those of each subset run on its own.
    with torch.no_grad():
        utility_logits = model(utility.tensors()[0])
        matched_logits = model(matched.tensors()[0])
    assert measured.record["remaining_accuracy"] == pytest.approx(
        float((utility_logits.argmax(1) == utility.tensors()[1]).float().mean())
    )
    share = weights / weights.sum()
    matched_correct = (matched_logits.argmax(1) == matched.tensors()[1]).double().numpy()
    assert measured.record["validation_accuracy"] == pytest.approx(
        float((share * matched_correct).sum())
    )
