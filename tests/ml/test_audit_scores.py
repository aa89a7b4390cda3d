"""FRM, average disparity, the verdict gates and the membership signal on hand-computed
values."""

import math

import numpy as np
import pytest
from pydantic import ValidationError

from ml.audit.evidence import Proportion, Ranking, membership_signal, paired_variance
from ml.audit.scores import (
    AuditTolerances,
    allowances,
    average_disparity,
    frm,
    frm_loss_auc,
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
    "probe_recall": 0.85,
}


def test_frm_of_identical_metrics_is_one():
    assert frm(unlearned=REFERENCE, reference=REFERENCE) == 1.0


def test_frm_is_the_papers_with_mia_efficacy():
    unlearned = {"ua": 0.10, "ra": 0.95, "mia_efficacy": 0.68, "mia_auc": 0.50}
    # FA 0.9 vs 0.8: 0.1 / 0.8 = 0.125; RA: 0.05 / 1.0 = 0.05; MIA-efficacy 0.17 / 0.85 = 0.2
    assert frm(unlearned=unlearned, reference=REFERENCE) == pytest.approx(math.exp(-0.375))
    # The loss-AUC form reads mia_auc instead: 0 / 0.5 for the MIA term.
    assert frm_loss_auc(unlearned=unlearned, reference=REFERENCE) == pytest.approx(math.exp(-0.175))


def test_frm_floors_a_near_zero_reference_forget_accuracy():
    # Class deletion: the reference never predicts the class (FA_r = 0). Without the floor
    # the FA term would be 0.05 / 0 = inf; with it, 0.05 / 0.05 = 1.
    reference = {"ua": 1.0, "ra": 0.9, "mia_efficacy": 0.5}
    unlearned = {"ua": 0.95, "ra": 0.9, "mia_efficacy": 0.5}
    assert frm(unlearned=unlearned, reference=reference) == pytest.approx(math.exp(-1.0))
    assert frm(unlearned=unlearned, reference=reference, floor=0.1) == pytest.approx(math.exp(-0.5))
    with pytest.raises(ValueError, match="floor"):
        frm(unlearned=unlearned, reference=reference, floor=0.0)


def test_frm_is_none_when_a_metric_is_missing():
    assert frm(unlearned={"ua": 0.1, "ra": 0.9}, reference=REFERENCE) is None
    assert frm(unlearned={"ua": 0.1, "ra": 0.9, "mia_efficacy": None}, reference=REFERENCE) is None


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
        "probe_recall": 0.86,
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
    evidence = {"ta": Proportion(np.ones(1000))}
    narrow = allowances(floors=floors, references=tight, reference_evidence=[evidence] * 4)["ta"]
    assert narrow.tolerance == floors.ta  # the floor: chance alone would allow less
    wide = allowances(floors=floors, references=loose, reference_evidence=[evidence] * 4)["ta"]
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


def _outcomes(rng, share: float, n: int = 100) -> Proportion:
    return Proportion((rng.random(n) < share).astype(float))


def test_the_paired_spread_comes_from_reference_pairs_alone():
    rng = np.random.default_rng(1)
    references = [{"ua": 0.05}] * 4
    per_sample = [{"ua": _outcomes(rng, 0.05)} for _ in range(4)]
    floors = AuditTolerances(ua=0.0)
    allowed = allowances(floors=floors, references=references, reference_evidence=per_sample)
    pairs = [
        paired_variance(a["ua"], b["ua"]) / 2
        for i, a in enumerate(per_sample)
        for b in per_sample[i + 1 :]
    ]
    assert allowed["ua"].paired_sd == pytest.approx(math.sqrt(np.mean(pairs)))
    assert allowed["ua"].tolerance == pytest.approx(
        3.0 * math.sqrt(np.mean(pairs)) * math.sqrt(1 + 1 / 4)
    )
    # One reference measures no chance: the floor alone.
    single = allowances(
        floors=AuditTolerances(ua=0.03),
        references=references[:1],
        reference_evidence=per_sample[:1],
    )
    assert single["ua"].tolerance == 0.03 and single["ua"].paired_sd is None


def test_a_worse_version_never_gets_a_wider_gate():
    """The issue's case: 100 forgotten samples, references at ~5% forget error, a version at
    15%. The gate is sized by the references alone, so the bad version fails where a
    version-sized gate (0.105) let it pass."""
    rng = np.random.default_rng(2)
    per_sample = [{"ua": _outcomes(rng, 0.05)} for _ in range(4)]
    references = [{"ua": float(e["ua"].outcomes.mean())} for e in per_sample]
    reference = {"ua": float(np.mean([r["ua"] for r in references]))}
    allowed = allowances(
        floors=AuditTolerances(), references=references, reference_evidence=per_sample
    )
    assert allowed["ua"].tolerance < 0.08
    good = verdict(metrics=dict(reference), reference=reference, allowed=allowed)
    bad = verdict(metrics={"ua": 0.15}, reference=reference, allowed=allowed)
    assert good["gates"][0]["tolerance"] == bad["gates"][0]["tolerance"]
    assert good["verdict"] == "pass" and bad["verdict"] == "fail"


def test_inconclusive_when_the_parent_passes_too():
    version = dict(REFERENCE)
    parent = dict(REFERENCE, ua=0.19)  # within every tolerance: no gate tells it apart
    result = verdict(metrics=version, reference=REFERENCE, control=parent)
    assert result["verdict"] == "inconclusive"
    assert set(result["uninformative_gates"]) == set(REFERENCE)
    assert all(gate["informative"] is False for gate in result["gates"])
    assert verdict(metrics=parent, reference=REFERENCE)["verdict"] == "pass"


def test_pass_needs_a_gate_the_parent_fails_and_any_failure_fails():
    parent = dict(REFERENCE, ua=0.05, mia_auc=0.60)  # the parent still knows D_f
    passed = verdict(metrics=dict(REFERENCE), reference=REFERENCE, control=parent)
    assert passed["verdict"] == "pass"
    informative = {gate["name"] for gate in passed["gates"] if gate["informative"]}
    assert informative == {"ua", "mia_auc"}
    assert {g["name"]: g["control"] for g in passed["gates"]}["ua"] == 0.05
    # An uninformative gate (TA: the parent has the reference's utility) still fails a
    # version that lost utility.
    worse = verdict(metrics=dict(REFERENCE, ta=0.85), reference=REFERENCE, control=parent)
    assert worse["verdict"] == "fail"
    assert [g["name"] for g in worse["failed_gates"]] == ["ta"]


def test_the_membership_signal_before_and_after():
    rng = np.random.default_rng(3)
    nonmembers = rng.normal(0, 1, 400)
    before = Ranking(rng.normal(1.0, 1, 200), nonmembers)  # members score higher: AUC ~0.76
    after = Ranking(before.positives - 1.0 + rng.normal(0, 0.1, 200), nonmembers)
    signal = membership_signal(before=before, after=after)
    assert signal["parent"]["auc"] > 0.7 and abs(signal["version"]["auc"] - 0.5) < 0.06
    assert signal["toward_heldout"] and signal["significant"]
    low, high = signal["version"]["ci95"]
    assert low < signal["version"]["auc"] < high and high - low < 0.15
    unchanged = membership_signal(before=before, after=before)
    assert unchanged["change"]["value"] == 0 and not unchanged["significant"]
