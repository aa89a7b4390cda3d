"""FRM, average disparity and the verdict gates on hand-computed values."""

import math

import numpy as np
import pytest
from pydantic import ValidationError

from ml.audit.evidence import Proportion, Ranking, paired_variance
from ml.audit.scores import (
    AuditTolerances,
    allowances,
    average_disparity,
    frm,
    verdict,
)

REFERENCE = {
    "ua": 0.20,
    "ra": 1.00,
    "ta": 0.91,
    "mia_auc": 0.50,
    "mia_efficacy": 0.85,
    "mia_efficacy_auc": 0.55,
    "lira_auc": 0.50,
    "lira_tpr_at_1_fpr": 0.02,
}


def test_frm_of_identical_metrics_is_one():
    assert frm(unlearned=REFERENCE, reference=REFERENCE) == 1.0


def test_frm_matches_the_formula_on_hand_values():
    unlearned = {"ua": 0.10, "ra": 0.95, "mia_auc": 0.55}
    # FA 0.9 vs 0.8: 0.1 / 0.8 = 0.125; RA: 0.05 / 1.0 = 0.05; MIA: 0.05 / 0.5 = 0.1
    assert frm(unlearned=unlearned, reference=REFERENCE) == pytest.approx(math.exp(-0.275))


def test_frm_floors_a_near_zero_reference_forget_accuracy():
    # Class deletion: the reference never predicts the class (FA_r = 0). Without the floor
    # the FA term would be 0.05 / 0 = inf; with it, 0.05 / 0.05 = 1.
    reference = {"ua": 1.0, "ra": 0.9, "mia_auc": 0.5}
    unlearned = {"ua": 0.95, "ra": 0.9, "mia_auc": 0.5}
    assert frm(unlearned=unlearned, reference=reference) == pytest.approx(math.exp(-1.0))
    assert frm(unlearned=unlearned, reference=reference, floor=0.1) == pytest.approx(math.exp(-0.5))
    with pytest.raises(ValueError, match="floor"):
        frm(unlearned=unlearned, reference=reference, floor=0.0)


def test_frm_is_none_when_a_metric_is_missing():
    assert frm(unlearned={"ua": 0.1, "ra": 0.9}, reference=REFERENCE) is None
    assert frm(unlearned={"ua": 0.1, "ra": 0.9, "mia_auc": None}, reference=REFERENCE) is None


def test_average_disparity_on_hand_values():
    unlearned = {"ua": 0.10, "mia_efficacy": 0.80, "ra": 0.96, "ta": 0.90}
    reference = {"ua": 0.12, "mia_efficacy": 0.85, "ra": 1.00, "ta": 0.91}
    # gaps in points: 2, 5, 4, 1
    assert average_disparity(unlearned=unlearned, reference=reference) == pytest.approx(3.0)
    assert average_disparity(unlearned=reference, reference=reference) == 0.0
    assert average_disparity(unlearned={"ua": 0.1}, reference=reference) is None


def test_gates_pass_within_every_tolerance():
    metrics = {
        "ua": 0.22,  # 2 points of 3
        "ra": 0.99,  # 1 of 2
        "ta": 0.92,  # exactly 1 of 1: round-off must not fail it
        "mia_auc": 0.515,
        "mia_efficacy": 0.83,
        "mia_efficacy_auc": 0.56,
        "lira_auc": 0.49,
        "lira_tpr_at_1_fpr": 0.0,  # far below the reference: one-sided, passes
    }
    result = verdict(metrics=metrics, reference=REFERENCE)
    assert result["verdict"] == "pass"
    assert result["failed_gates"] == []
    assert {gate["name"] for gate in result["gates"]} == set(REFERENCE)
    assert result["skipped_gates"] == []


def test_gates_fail_with_every_failed_gate_reported():
    metrics = dict(REFERENCE, ta=0.895, mia_auc=0.53, lira_tpr_at_1_fpr=0.035)
    result = verdict(metrics=metrics, reference=REFERENCE)
    assert result["verdict"] == "fail"
    failed = {gate["name"]: gate for gate in result["failed_gates"]}
    assert set(failed) == {"ta", "mia_auc", "lira_tpr_at_1_fpr"}
    assert failed["ta"]["value"] == 0.895
    assert failed["ta"]["reference"] == 0.91
    assert failed["ta"]["tolerance"] == 0.01
    assert failed["lira_tpr_at_1_fpr"]["sided"] == "upper"
    assert failed["mia_auc"]["sided"] == "two-sided"


def test_gates_are_two_sided_except_lira_tpr():
    below = dict(REFERENCE, mia_auc=0.47, lira_tpr_at_1_fpr=0.0)
    result = verdict(metrics=below, reference=REFERENCE)
    assert [gate["name"] for gate in result["failed_gates"]] == ["mia_auc"]


def test_configured_tolerances_and_switched_off_gates():
    metrics = dict(REFERENCE, ta=0.95)
    assert verdict(metrics=metrics, reference=REFERENCE)["verdict"] == "fail"
    loose = AuditTolerances(ta=0.05)
    assert verdict(metrics=metrics, reference=REFERENCE, tolerances=loose)["verdict"] == "pass"
    off = AuditTolerances(ta=None)
    result = verdict(metrics=metrics, reference=REFERENCE, tolerances=off)
    assert result["verdict"] == "pass"
    assert "ta" not in {gate["name"] for gate in result["gates"]}
    with pytest.raises(ValidationError):
        AuditTolerances(ta=-0.1)
    with pytest.raises(ValidationError):
        AuditTolerances(unknown=0.1)


def test_missing_metrics_skip_gates_and_no_reference_has_no_verdict():
    metrics = {key: value for key, value in REFERENCE.items() if not key.startswith("lira")}
    result = verdict(metrics=metrics, reference=REFERENCE)
    assert result["verdict"] == "pass"
    assert result["skipped_gates"] == ["lira_auc", "lira_tpr_at_1_fpr"]
    for reference in (None, {}):
        assert verdict(metrics=metrics, reference=reference)["verdict"] == "no_reference"


# --- gates sized by chance -------------------------------------------------------------------


def test_paired_variance_of_proportions_counts_disagreements():
    first = Proportion(np.array([1, 1, 0, 0, 1, 0, 1, 1], dtype=float))
    same = paired_variance(first, first)
    assert same == 0.0
    second = Proportion(np.array([1, 0, 0, 1, 1, 0, 1, 1], dtype=float))
    differences = np.array([0, 1, 0, -1, 0, 0, 0, 0], dtype=float)
    assert paired_variance(first, second) == pytest.approx(differences.var(ddof=1) / 8)


def test_paired_variance_of_rankings_is_delongs():
    rng = np.random.default_rng(0)
    positives, negatives = rng.normal(0.3, 1, 200), rng.normal(0, 1, 300)
    first = Ranking(positives, negatives)
    # A second model whose scores are the first's plus noise: correlated, so the variance of
    # the difference is far below the sum of the two AUCs' own variances.
    second = Ranking(positives + rng.normal(0, 0.3, 200), negatives + rng.normal(0, 0.3, 300))
    own = paired_variance(first, Ranking(rng.normal(0.3, 1, 200), rng.normal(0, 1, 300)))
    paired = paired_variance(first, second)
    assert 0 < paired < own / 3
    placements_positive, placements_negative = first.placements()
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(np.r_[np.ones(200), np.zeros(300)], np.r_[positives, negatives])
    assert placements_positive.mean() == pytest.approx(auc)
    assert placements_negative.mean() == pytest.approx(auc)


def test_allowances_widen_with_the_references_spread_and_keep_the_floor():
    floors = AuditTolerances()
    tight = [dict(REFERENCE, ta=value) for value in (0.910, 0.911, 0.909, 0.910)]
    loose = [dict(REFERENCE, ta=value) for value in (0.88, 0.94, 0.90, 0.92)]
    outcomes = Proportion(np.ones(1000))
    evidence = {"ta": outcomes}
    narrow = allowances(
        floors=floors,
        references=tight,
        version_evidence=evidence,
        reference_evidence=[evidence] * 4,
    )["ta"]
    assert narrow.tolerance == floors.ta  # the floor: chance alone would allow less
    wide = allowances(
        floors=floors,
        references=loose,
        version_evidence=evidence,
        reference_evidence=[evidence] * 4,
    )["ta"]
    spread = np.std([0.88, 0.94, 0.90, 0.92], ddof=1)
    assert wide.reference_sd == pytest.approx(spread)
    assert wide.tolerance == pytest.approx(3.0 * spread * np.sqrt(1 + 1 / 4))
    gated = verdict(
        metrics=dict(REFERENCE, ta=0.96),
        reference=dict(REFERENCE, ta=0.91),
        allowed={"ta": wide},
    )
    assert "ta" not in {gate["name"] for gate in gated["failed_gates"]}
    assert (
        verdict(metrics=dict(REFERENCE, ta=0.96), reference=dict(REFERENCE, ta=0.91))["verdict"]
        == "fail"
    )
