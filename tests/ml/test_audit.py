"""The audit on real models trained on scikit-learn's digits.

Sizes are small on purpose (the whole file trains its models in about 10 s on one core), so
thresholds are chosen against the sampling noise of a few hundred samples.
"""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ml.architectures import build_model
from ml.audit import audit_version, train_references
from ml.audit.attacks import AttackInputs, get_attack
from ml.audit.outputs import outputs_of
from ml.audit.report import audit_sets
from ml.class_masking import mask_classes
from ml.datasets import open_source
from ml.samples import SampleSet
from ml.training import TrainingConfig, train

torch.set_num_threads(1)

CPU = torch.device("cpu")
HOLDOUT_SIZE = 300


class Digits:
    """The digits source split into a holdout, a training pool and the test set (seeded)."""

    def __init__(self, seed: int = 0) -> None:
        self.adapter = open_source({"kind": "builtin", "name": "sklearn-digits"}, Path("."))
        index = self.adapter.index()
        self.labels, self.keys = index.labels, index.keys
        splits = np.asarray(index.splits)
        shuffled = np.random.default_rng(seed).permutation(np.flatnonzero(splits == "train"))
        self.holdout = self.samples(shuffled[:HOLDOUT_SIZE])
        self.pool = shuffled[HOLDOUT_SIZE:]  # training candidates, in random order
        self.test = self.samples(np.flatnonzero(splits == "test"))

    def samples(self, positions: np.ndarray) -> SampleSet:
        positions = np.sort(np.asarray(positions))
        return SampleSet(
            self.adapter, positions, self.labels[positions], [self.keys[i] for i in positions]
        )

    def build(self, architecture: str = "mlp") -> nn.Module:
        return build_model(architecture, {}, [1, 8, 8], 10)


@pytest.fixture(scope="module")
def digits() -> Digits:
    return Digits()


def trained(digits: Digits, samples: SampleSet, config: TrainingConfig) -> nn.Module:
    torch.manual_seed(config.seed)
    return train(digits.build(), samples, config, device=CPU)


# --- a random deletion: the original model, a retrained one and three references -----------

FORGET_SIZE = 400
RECIPE = TrainingConfig(epochs=30, batch_size=64, lr=3e-3, seed=0)


@pytest.fixture(scope="module")
def deletion(digits: Digits) -> dict:
    forget = digits.samples(digits.pool[:FORGET_SIZE])
    retain = digits.samples(digits.pool[FORGET_SIZE:])
    original = trained(digits, digits.samples(digits.pool), RECIPE)
    # seeds 1..6: the first plays the retrained version, the next four its references (the
    # service's default K), the last another retrained version
    retrained, *references, another = train_references(
        build_model=digits.build, retain=retain, training=RECIPE, k=6, device=CPU
    )
    return {
        "forget": forget,
        "retain": retain,
        "original": original,
        "retrained": retrained,
        "references": references,
        "another": another,
    }


def audit(model: nn.Module, digits: Digits, deletion: dict, **options) -> dict:
    return audit_version(
        model,
        forget=deletion["forget"],
        retain=deletion["retain"],
        audit_nonmembers=digits.holdout,
        test=digits.test,
        device=CPU,
        **options,
    )


def test_report_without_references_has_the_api_shape(digits, deletion):
    report = audit(deletion["original"], digits, deletion)
    json.dumps(report)  # JSON-safe all the way down
    assert report["forget_set_size"] == FORGET_SIZE
    metrics = report["metrics"]
    for name in ("ua", "ra", "ta", "mia_efficacy", "mia_auc"):
        assert 0.0 <= metrics[name] <= 1.0, name
    histogram = metrics["forget_entropy_histogram"]
    assert sum(histogram["counts"]) == FORGET_SIZE
    holdout = metrics["holdout_entropy_histogram"]
    assert holdout["bins"] == histogram["bins"]
    assert sum(holdout["counts"]) == report["sizes"]["nonmembers"]
    assert 2 <= len(report["roc"]) <= 100
    assert report["reference"] is None and report["frm"] is None
    assert report["avg_disparity"] is None and report["verdict"] == "no_reference"
    assert "lira_auc" not in metrics and "lira_offline" in report["attacks_skipped"]
    assert report["sizes"] == {
        "forget": FORGET_SIZE,
        "retain_sample": len(deletion["retain"]),
        "test": len(digits.test),
        "nonmembers": HOLDOUT_SIZE,
    }


def test_a_model_audited_against_itself_scores_frm_one(digits, deletion):
    model = deletion["retrained"]
    steps = []
    report = audit(
        model, digits, deletion, references=[model], progress=lambda *step: steps.append(step)
    )
    assert steps == [("auditing", 0, 2), ("auditing", 1, 2), ("auditing", 2, 2)]
    assert report["frm"] == 1.0
    assert report["avg_disparity"] == 0.0
    assert report["verdict"] == "pass"
    # one reference cannot be its own LiRA reference: those gates are skipped, not failed;
    # the probe is for class deletions
    assert report["skipped_gates"] == ["lira_auc", "lira_tpr_at_1_fpr", "probe_recall"]


@pytest.mark.parametrize("version", ["retrained", "another"])
def test_a_retrained_model_passes_against_references_of_other_seeds(digits, deletion, version):
    report = audit(deletion[version], digits, deletion, references=deletion["references"])
    assert report["reference"]["models"] == 4
    assert report["verdict"] == "pass", report["failed_gates"]
    names = {gate["name"] for gate in report["gates"]}
    assert names >= {"ua", "ta", "mia_auc", "mia_efficacy", "mia_efficacy_auc", "lira_auc"}
    # The paper's FRM reads MIA-efficacy, whose seed-to-seed spread is wide on 400 samples.
    assert report["frm"] > 0.85
    assert report["frm_loss_auc"] > 0.95
    assert report["avg_disparity"] < 1.5  # points


def test_the_parent_as_positive_control(digits, deletion):
    """A retrained version, with the original model as its parent: the parent fails the
    gates that tell remembering from forgetting, so the version's pass means something."""
    report = audit(
        deletion["retrained"],
        digits,
        deletion,
        references=deletion["references"],
        parent=deletion["original"],
    )
    assert report["verdict"] == "pass", report["failed_gates"]
    assert report["control"]["verdict"] == "fail"
    informative = {gate["name"] for gate in report["gates"] if gate["informative"]}
    assert informative & {"ua", "mia_auc", "lira_auc"}, report["gates"]
    assert set(report["uninformative_gates"]).isdisjoint(informative)
    signal = report["membership_signal"]  # digits generalise: a small, real drop
    assert signal["parent"]["auc"] > signal["version"]["auc"] and signal["toward_heldout"]
    # The original audited as its own child: it did nothing, and is never a pass.
    did_nothing = audit(
        deletion["original"],
        digits,
        deletion,
        references=deletion["references"],
        parent=deletion["original"],
    )
    assert did_nothing["verdict"] == "fail"
    assert did_nothing["membership_signal"]["change"]["value"] == 0
    assert not did_nothing["membership_signal"]["significant"]


def test_gates_are_sized_by_chance_never_below_their_floor(digits, deletion):
    report = audit(deletion["retrained"], digits, deletion, references=deletion["references"])
    for gate in report["gates"]:
        assert gate["tolerance"] >= gate["floor"]
        assert gate["reference_sd"] is not None and gate["paired_sd"] is not None
    lira = next(gate for gate in report["gates"] if gate["name"] == "lira_auc")
    assert lira["tolerance"] > lira["floor"]  # LiRA's seed-to-seed spread is wide at K = 4


def test_the_original_model_fails_against_the_references(digits, deletion):
    retrained = audit(deletion["retrained"], digits, deletion, references=deletion["references"])
    original = audit(deletion["original"], digits, deletion, references=deletion["references"])
    assert original["verdict"] == "fail"
    failed = {gate["name"] for gate in original["failed_gates"]}
    assert failed & {"ua", "mia_auc", "mia_efficacy"}, original["gates"]
    assert original["frm"] < retrained["frm"]
    assert original["avg_disparity"] > retrained["avg_disparity"] + 1.0
    # it still remembers: it knows its forget set better than the references do
    assert original["metrics"]["ua"] < original["reference"]["metrics"]["ua"]
    assert original["metrics"]["lira_auc"] > retrained["metrics"]["lira_auc"]


def test_given_reference_metrics_are_used_as_they_are(digits, deletion):
    given = {"ua": 0.5, "ra": 0.5, "ta": 0.5, "mia_auc": 0.5, "mia_efficacy": 0.5}
    report = audit(deletion["retrained"], digits, deletion, reference_metrics=given)
    assert report["reference"] == {"kind": "retrain", "models": None, "metrics": given}
    assert report["verdict"] == "fail"
    assert report["frm"] < 0.5


# --- an overfit model: the attacks must see its training samples ---------------------------

OVERFIT_SIZE = 100  # digits generalise well: 200 samples leave a loss-attack AUC near 0.6
OVERFIT = TrainingConfig(epochs=60, batch_size=32, lr=3e-3, seed=0)


def test_attacks_find_the_training_samples_of_an_overfit_model(digits):
    members = digits.samples(digits.pool[:OVERFIT_SIZE])
    unseen = digits.samples(digits.pool[OVERFIT_SIZE : 2 * OVERFIT_SIZE])
    others = digits.pool[2 * OVERFIT_SIZE :]
    target = trained(digits, members, OVERFIT)
    references = []  # trained on other samples of the pool: OUT for members and unseen alike
    for k in range(4):
        chosen = np.random.default_rng(10 + k).choice(others, OVERFIT_SIZE, replace=False)
        references.append(
            trained(digits, digits.samples(chosen), OVERFIT.model_copy(update={"seed": 10 + k}))
        )

    def attack(name: str, candidates: SampleSet) -> dict:
        def outputs(model: nn.Module, samples: SampleSet):
            return outputs_of(model, samples, device=CPU)

        inputs = AttackInputs(
            forget=outputs(target, candidates),
            nonmembers=outputs(target, digits.holdout),
            retain=outputs(target, members),
            test=outputs(target, digits.test),
            reference_forget=[outputs(reference, candidates) for reference in references],
            reference_nonmembers=[outputs(reference, digits.holdout) for reference in references],
        )
        return get_attack(name).run(inputs)["metrics"]

    assert attack("loss_threshold", members)["mia_auc"] > 0.6
    assert abs(attack("loss_threshold", unseen)["mia_auc"] - 0.5) < 0.1
    assert attack("lira_offline", members)["lira_auc"] > 0.55
    assert abs(attack("lira_offline", unseen)["lira_auc"] - 0.5) < 0.12
    assert attack("svc_mia", members)["mia_efficacy"] < attack("svc_mia", unseen)["mia_efficacy"]


# --- class deletion ------------------------------------------------------------------------


class MaskedClasses(nn.Module):
    """A model whose forgotten classes' logits are -inf, as PGU's class deletion leaves it."""

    def __init__(self, model: nn.Module, classes: list[int]) -> None:
        super().__init__()
        self.model, self.classes = model, classes

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits = self.model(inputs).clone()
        logits[:, self.classes] = float("-inf")
        return logits


def test_class_deletion_reads_remaining_classes_for_ta_and_the_class_for_nonmembers(digits):
    forgotten = [3]
    train_pool = digits.samples(digits.pool)
    forget = train_pool.take(np.flatnonzero(train_pool.labels == 3))
    retain = train_pool.without_classes(forgotten)
    sets = audit_sets(
        forget=forget,
        retain=retain,
        audit_nonmembers=digits.holdout,
        test=digits.test,
        class_labels=forgotten,
    )
    assert 3 not in set(sets.test.labels) and len(sets.test) > 0
    assert set(sets.nonmembers.labels) == {3}
    expected = (digits.holdout.labels == 3).sum() + (digits.test.labels == 3).sum()
    assert len(sets.nonmembers) == expected
    assert not set(sets.nonmembers.keys) & set(train_pool.keys)


def test_a_later_random_deletion_keeps_earlier_forgotten_classes_out(digits):
    retain = digits.samples(digits.pool).without_classes([3])
    forget = retain.take(np.arange(50))
    sets = audit_sets(
        forget=forget,
        retain=retain,
        audit_nonmembers=digits.holdout,
        test=digits.test,
        masked_classes=[3],
    )
    assert 3 not in set(sets.test.labels) and 3 not in set(sets.nonmembers.labels)
    assert len(sets.nonmembers) == (digits.holdout.labels != 3).sum()
    without_test = audit_sets(
        forget=forget,
        retain=retain,
        audit_nonmembers=digits.holdout,
        test=digits.test.take(np.arange(0)),
    )
    assert without_test.test.keys == digits.holdout.keys  # no test split: TA on the holdout


def test_class_deletion_audit_of_a_masked_model_stays_finite(digits, deletion):
    forgotten = [3]
    train_pool = digits.samples(digits.pool)
    forget = train_pool.take(np.flatnonzero(train_pool.labels == 3))
    masked = MaskedClasses(deletion["original"], forgotten)
    report = audit_version(
        masked,
        forget=forget,
        retain=train_pool.without_classes(forgotten),
        audit_nonmembers=digits.holdout,
        test=digits.test,
        device=CPU,
        class_labels=forgotten,
        references=[deletion["references"][0]],  # any OUT model exercises LiRA on -inf logits
    )
    json.dumps(report)
    metrics = report["metrics"]
    assert metrics["ua"] == 1.0  # the class can no longer be predicted
    assert metrics["ta"] > 0.9  # the other classes still can
    assert np.isfinite([metrics["mia_auc"], metrics["lira_auc"], metrics["mia_efficacy"]]).all()


@pytest.fixture(scope="module")
def class_three(digits: Digits) -> dict:
    """A class deletion of digit 3 from the pool, and five models retrained without it."""
    train_pool = digits.samples(digits.pool)
    retain = train_pool.without_classes([3])
    return {
        "forget": train_pool.take(np.flatnonzero(train_pool.labels == 3)),
        "retain": retain,
        "models": train_references(
            build_model=digits.build, retain=retain, training=RECIPE, k=5, device=CPU
        ),
    }


def _audit_class_three(model: nn.Module, digits: Digits, deleted: dict, **options) -> dict:
    return audit_version(
        model,
        forget=deleted["forget"],
        retain=deleted["retain"],
        audit_nonmembers=digits.holdout,
        test=digits.test,
        device=CPU,
        class_labels=[3],
        references=deleted["models"][1:],
        **options,
    )


def test_class_deletion_masks_the_references_like_the_version(digits, class_three):
    """A retrained model, masked as a class deletion publishes it, against unmasked
    retrained references: the audit masks them too, so only chance separates them."""
    models = class_three["models"]
    version = mask_classes(copy.deepcopy(models[0]), [3])
    report = _audit_class_three(version, digits, class_three)
    assert report["metrics"]["ua"] == 1.0 and report["reference"]["metrics"]["ua"] == 1.0
    assert report["verdict"] == "pass", report["failed_gates"]
    assert all(not torch.all(m[-1].bias[3] == -1e4) for m in models[1:])  # copies were masked
    probe = next(gate for gate in report["gates"] if gate["name"] == "probe_recall")
    assert probe["passed"]


def test_the_probe_sees_a_class_deletion_that_only_masks(digits, deletion, class_three):
    """Masking the output layer leaves the features: a few-shot linear probe on them still
    recovers the class as well as on the parent, better than on models retrained without
    it, so a version that only masks is never a pass."""
    only_masked = mask_classes(copy.deepcopy(deletion["original"]), [3])
    report = _audit_class_three(only_masked, digits, class_three, parent=deletion["original"])
    probe = next(gate for gate in report["gates"] if gate["name"] == "probe_recall")
    assert probe["value"] == pytest.approx(probe["control"])  # the features did not move
    assert probe["value"] > probe["reference"] + 0.05  # the parent's tight cluster is there
    # On digits four retrained seeds disagree on the probe by ~0.05 (sd), so the gate is
    # wide; either it fails the version or it is reported as unable to tell: never a pass.
    assert not probe["passed"] or probe["informative"] is False
    assert report["verdict"] != "pass"
    random = audit(deletion["retrained"], digits, deletion, references=deletion["references"])
    assert random["metrics"]["probe_recall"] is None and "probe_recall" in random["skipped_gates"]


def test_train_references_uses_distinct_seeds(digits, deletion):
    first, second = train_references(
        build_model=digits.build,
        retain=digits.samples(digits.pool[:50]),
        training=TrainingConfig(epochs=1, batch_size=32),
        k=2,
        device=CPU,
        seeds=[7, 8],
    )
    assert not torch.equal(first[1].weight, second[1].weight)
    with pytest.raises(ValueError, match="distinct"):
        train_references(
            build_model=digits.build,
            retain=digits.samples(digits.pool[:50]),
            training=RECIPE,
            k=2,
            device=CPU,
            seeds=[7, 7],
        )
