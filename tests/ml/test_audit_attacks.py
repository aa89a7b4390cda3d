"""The attacks and the output signals on synthetic outputs with known answers."""

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from ml.audit.attacks import (
    Attack,
    AttackInputs,
    attacks,
    get_attack,
    list_attacks,
    register_attack,
    roc_points,
    tpr_at_fpr,
)
from ml.audit.outputs import Outputs
from ml.registry import UnknownName

torch.set_num_threads(1)

NUM_CLASSES = 10


def outputs_with_confidence(confidence: np.ndarray, *, seed: int = 0) -> Outputs:
    """Outputs whose true-class probability is exactly ``confidence`` (the rest spread evenly)."""
    labels = torch.as_tensor(np.random.default_rng(seed).integers(0, NUM_CLASSES, len(confidence)))
    p = torch.as_tensor(confidence, dtype=torch.float64)[:, None]
    probabilities = ((1 - p) / (NUM_CLASSES - 1)).repeat(1, NUM_CLASSES)
    probabilities.scatter_(1, labels[:, None], p)
    return Outputs(probabilities.log(), labels)


def test_signals_match_their_definitions():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, NUM_CLASSES, generator=generator, dtype=torch.float64) * 3
    labels = torch.randint(0, NUM_CLASSES, (50,), generator=generator)
    outputs = Outputs(logits, labels)
    p = torch.softmax(logits, 1)
    p_y = p[torch.arange(50), labels]
    assert np.allclose(outputs.confidence(), p_y.numpy())
    assert np.allclose(
        outputs.loss(), torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    )
    assert np.allclose(outputs.phi(), torch.log(p_y / (1 - p_y)).numpy())
    assert np.allclose(outputs.entropy(), -(p * p.log()).sum(1).numpy())
    assert outputs.accuracy() == pytest.approx((logits.argmax(1) == labels).double().mean().item())


def test_signals_stay_finite_for_extreme_and_masked_logits():
    logits = torch.tensor([[1000.0, -1000.0, 0.0], [0.0, float("-inf"), 5.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([0, 1, 2])
    outputs = Outputs(logits, labels)
    phi = outputs.phi()
    assert np.isfinite(phi).all() and np.isfinite(outputs.loss()).all()
    assert phi[0] == pytest.approx(1000.0)  # naive log(p / (1 - p)) is inf here
    assert phi[2] == pytest.approx(math.log(1 / 2))
    entropy = outputs.entropy()
    assert entropy[0] == pytest.approx(0.0, abs=1e-12)
    assert entropy[2] == pytest.approx(math.log(3))
    assert outputs.loss()[1] > 1000  # the masked true class: a huge, finite loss
    with pytest.raises(ValueError, match="NaN"):
        Outputs(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))


def test_registry_lists_every_attack_and_refuses_duplicates_and_unknown_names():
    assert {"svc_mia", "loss_threshold", "lira_offline", "entropy_histogram"} <= set(list_attacks())
    with pytest.raises(UnknownName):
        get_attack("no-such-attack")
    with pytest.raises(ValueError, match="already registered"):

        @register_attack
        class Again(Attack):
            name = "svc_mia"

            def run(self, inputs):
                return {"metrics": {}}

    with pytest.raises(ValidationError):
        get_attack("svc_mia", {"max_fit_per_class": 0})
    with pytest.raises(ValidationError):
        get_attack("entropy_histogram", {"colour": "red"})
    assert "svc_mia" in attacks


def test_roc_points_are_thinned_and_keep_both_ends():
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.ones(2000), np.zeros(2000)])
    scores = np.concatenate([rng.normal(1, 1, 2000), rng.normal(0, 1, 2000)])
    points = roc_points(labels, scores, max_points=100)
    assert 2 <= len(points) <= 100
    assert points[0] == [0.0, 0.0] and points[-1] == [1.0, 1.0]
    fpr, tpr = np.array(points).T
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()


def test_tpr_at_low_fpr_on_hand_values():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    # 100 non-members would make 1% one false positive; with 4, FPR <= 1% means none.
    scores = np.array([9.0, 8.0, 0.5, 0.4, 5.0, 0.3, 0.2, 0.1])
    assert tpr_at_fpr(labels, scores) == 0.5  # 9 and 8 are above the top non-member (5)
    assert tpr_at_fpr(labels, scores, fpr=0.25) == 1.0


def inputs_for(forget_confidence: np.ndarray) -> AttackInputs:
    rng = np.random.default_rng(1)
    retain = outputs_with_confidence(rng.uniform(0.97, 1.0, 1000), seed=1)
    test = outputs_with_confidence(rng.uniform(0.2, 0.9, 1000), seed=2)
    return AttackInputs(
        forget=outputs_with_confidence(forget_confidence, seed=3),
        nonmembers=test,
        retain=retain,
        test=test,
    )


def test_svc_mia_efficacy_counts_the_forget_set_predicted_non_member():
    rng = np.random.default_rng(2)
    svc = get_attack("svc_mia", {"max_fit_per_class": 500})
    looks_trained = svc.run(inputs_for(rng.uniform(0.97, 1.0, 300)))
    looks_unseen = svc.run(inputs_for(rng.uniform(0.2, 0.9, 300)))
    assert looks_trained["metrics"]["mia_efficacy"] < 0.1
    assert looks_unseen["metrics"]["mia_efficacy"] > 0.9
    assert looks_trained["fit_size"] == 500


def test_loss_attack_auc_is_chance_for_like_samples_and_high_for_confident_ones():
    rng = np.random.default_rng(3)
    attack = get_attack("loss_threshold")
    same = attack.run(inputs_for(rng.uniform(0.2, 0.9, 1000)))
    assert abs(same["metrics"]["mia_auc"] - 0.5) < 0.05
    confident = attack.run(inputs_for(rng.uniform(0.95, 1.0, 1000)))
    assert confident["metrics"]["mia_auc"] > 0.95
    assert confident["roc"][0] == [0.0, 0.0] and len(confident["roc"]) <= 100


def lira_inputs(shift: float, references: int, n: int = 1000) -> AttackInputs:
    """Per-sample OUT level (difficulty) varies a lot; members sit ``shift`` logits above it."""
    rng = np.random.default_rng(4)
    labels = torch.zeros(2 * n, dtype=torch.long)
    difficulty = rng.normal(0, 3, 2 * n)

    def outputs(phi: np.ndarray) -> tuple[Outputs, Outputs]:
        # Two classes: phi = z_0 - z_1 exactly.
        logits = torch.as_tensor(np.stack([phi, np.zeros_like(phi)], 1))
        whole = Outputs(logits, labels)
        return whole.take(np.arange(n)), whole.take(np.arange(n, 2 * n))

    target_phi = difficulty + rng.normal(0, 0.3, 2 * n)
    target_phi[:n] += shift
    forget, nonmembers = outputs(target_phi)
    reference = [outputs(difficulty + rng.normal(0, 0.3, 2 * n)) for _ in range(references)]
    return AttackInputs(
        forget=forget,
        nonmembers=nonmembers,
        retain=forget,
        test=nonmembers,
        reference_forget=[pair[0] for pair in reference],
        reference_nonmembers=[pair[1] for pair in reference],
    )


def test_offline_lira_calibrates_per_sample_and_beats_the_loss_attack():
    attack = get_attack("lira_offline")
    leaky = lira_inputs(shift=1.0, references=4)
    lira = attack.run(leaky)["metrics"]
    loss = get_attack("loss_threshold").run(leaky)["metrics"]
    # the shift is small next to the per-sample difficulty, which only LiRA removes
    assert lira["lira_auc"] > 0.95 > loss["mia_auc"]
    assert lira["lira_tpr_at_1_fpr"] > 0.5
    # 1% of 400 non-members is 4: too few to place the threshold, so no rate is reported
    few = attack.run(lira_inputs(shift=1.0, references=4, n=400))["metrics"]
    assert few["lira_tpr_at_1_fpr"] is None and few["lira_auc"] > 0.95
    assert abs(attack.run(lira_inputs(shift=0.0, references=4))["metrics"]["lira_auc"] - 0.5) < 0.06
    single = attack.run(lira_inputs(shift=1.0, references=1))
    assert single["references"] == 1 and single["metrics"]["lira_auc"] > 0.9


def test_offline_lira_refuses_missing_or_misaligned_references():
    with pytest.raises(ValueError, match="reference"):
        get_attack("lira_offline").run(lira_inputs(shift=1.0, references=0))
    inputs = lira_inputs(shift=1.0, references=1)
    with pytest.raises(ValueError, match="forget set"):
        AttackInputs(
            forget=inputs.forget,
            nonmembers=inputs.nonmembers,
            retain=inputs.retain,
            test=inputs.test,
            reference_forget=[inputs.forget.take(np.arange(10))],
            reference_nonmembers=[inputs.nonmembers],
        )


def test_entropy_histogram_spans_zero_to_log_classes():
    rng = np.random.default_rng(5)
    inputs = inputs_for(rng.uniform(0.1, 1.0, 321))
    result = get_attack("entropy_histogram", {"bins": 10}).run(inputs)
    histogram = result["metrics"]["forget_entropy_histogram"]
    assert len(histogram["bins"]) == 11 and len(histogram["counts"]) == 10
    assert histogram["bins"][0] == 0.0
    assert histogram["bins"][-1] == pytest.approx(math.log(NUM_CLASSES), abs=1e-6)
    assert sum(histogram["counts"]) == 321
    assert 0 < result["metrics"]["forget_entropy_mean"] < math.log(NUM_CLASSES)
    holdout = result["metrics"]["holdout_entropy_histogram"]
    assert holdout["bins"] == histogram["bins"]
    assert sum(holdout["counts"]) == len(inputs.nonmembers) == 1000


def test_entropy_histograms_tell_a_remembered_forget_set_from_held_out_data():
    rng = np.random.default_rng(6)
    remembered = inputs_for(rng.uniform(0.97, 1.0, 300))  # confident, like training data
    metrics = get_attack("entropy_histogram").run(remembered)["metrics"]
    assert metrics["forget_entropy_mean"] < metrics["holdout_entropy_mean"] / 2
    forget, holdout = (metrics[f"{s}_entropy_histogram"]["counts"] for s in ("forget", "holdout"))
    assert forget[0] > 0.5 * sum(forget) and holdout[0] < 0.5 * sum(holdout)
