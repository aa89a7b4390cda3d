"""Membership-inference attacks on a model version, behind one small interface.

An :class:`Attack` reads only the model's outputs (:class:`AttackInputs`, forward passes done
once by the report) and returns a JSON-safe dict::

    {"metrics": {name: float | None | dict, ...}, ...details}

The report merges every attack's ``metrics`` into the audit's flat ``metrics`` (names are
unique across attacks) and keeps the rest under ``attacks[<attack name>]``, except
``evidence``: the per-sample outcomes or scores behind each gated metric
(``ml.audit.evidence``), which the report uses to size the verdict's gates and does not
store. A new attack
(RMIA, online LiRA) is one class here with ``@register_attack``; neither the report's callers
nor the job change. Attacks that need reference models (trained without the forget set) say
so with ``needs_references`` and are skipped, with the reason, when none are given.

Registered attacks:

- ``svc_mia`` -- MIA-efficacy in the SalUn / Unlearn-Sparse convention (``SVC_MIA``).
- ``efficacy_auc`` -- the same question without a threshold: the AUC with which true-class
  confidence ranks retained samples above forgotten ones.
- ``loss_threshold`` -- loss attack AUC and ROC curve, forget set vs held-out data.
- ``lira_offline`` -- offline LiRA with a global variance (Carlini et al. 2022).
- ``entropy_histogram`` -- the output-entropy distribution on the forget set and on the
  held-out non-members (PGU's figures); not an attack strictly, but it reads the same outputs
  and lands in the same report.
- ``linear_probe`` -- class deletion only: how readily a few-shot linear probe on the
  model's features (what enters its output layer) still recovers the deleted classes;
  masking the outputs does not touch them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.svm import SVC

from ml.audit.evidence import Evidence, Proportion, Ranking, TailRate
from ml.audit.outputs import Outputs
from ml.registry import Registry

__all__ = [
    "Attack",
    "AttackInputs",
    "attacks",
    "register_attack",
    "get_attack",
    "list_attacks",
    "roc_points",
    "tpr_at_fpr",
    "SVCMembershipEfficacy",
    "EfficacyAUC",
    "LossThreshold",
    "OfflineLiRA",
    "EntropyHistogram",
    "LinearProbe",
]

LOW_FPR = 0.01  # the operating point of "TPR at 1% FPR"
# A rate at LOW_FPR is reported only when at least this many non-members lie beyond its
# threshold (1,000 non-members at 1%): with 3 of 300, the threshold is noise.
MIN_TAIL = 10


@dataclass(frozen=True)
class AttackInputs:
    """The target model's outputs on the audit's sample sets (and the references' outputs).

    ``forget`` are the samples whose membership is in question (the candidates the attacks
    call members); ``nonmembers`` were never trained on by any model (holdout); ``retain``
    is a sample of known members (D_r) and ``test`` the test set, both for SVC_MIA's
    shadow fit. ``reference_forget[k]`` / ``reference_nonmembers[k]`` are the outputs of
    reference model k, trained without the forget set, on the same samples in the same order.
    """

    forget: Outputs
    nonmembers: Outputs
    retain: Outputs
    test: Outputs
    reference_forget: Sequence[Outputs] = field(default_factory=tuple)
    reference_nonmembers: Sequence[Outputs] = field(default_factory=tuple)
    seed: int = 0
    class_labels: tuple[int, ...] = ()  # the classes a class deletion deletes (else empty)

    def __post_init__(self) -> None:
        if len(self.reference_forget) != len(self.reference_nonmembers):
            raise ValueError("reference_forget and reference_nonmembers must pair up")
        for outputs in self.reference_forget:
            if len(outputs) != len(self.forget):
                raise ValueError("reference outputs must cover the forget set, in order")
        for outputs in self.reference_nonmembers:
            if len(outputs) != len(self.nonmembers):
                raise ValueError("reference outputs must cover the non-members, in order")

    @property
    def reference_count(self) -> int:
        return len(self.reference_forget)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Attack(ABC):
    """One attack (or probe): validated params, and outputs in -> JSON-safe results out."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    needs_references: ClassVar[bool] = False

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params = self.Params.model_validate(params or {})

    @abstractmethod
    def run(self, inputs: AttackInputs) -> dict[str, Any]:
        """``{"metrics": {...}, ...}``; metrics are None where the sets are too small."""


attacks: Registry[type[Attack]] = Registry("attack")


def register_attack(cls: type[Attack]) -> type[Attack]:
    attacks.register(cls.name)(cls)
    return cls


def get_attack(name: str, params: dict[str, Any] | None = None) -> Attack:
    """An instance with validated params (raises UnknownName or pydantic ValidationError)."""
    return attacks.get(name)(params)


def list_attacks() -> list[str]:
    return attacks.names()


def _membership_labels(members: int, nonmembers: int) -> np.ndarray:
    return np.concatenate([np.ones(members), np.zeros(nonmembers)])


def roc_points(
    labels: np.ndarray, scores: np.ndarray, *, max_points: int = 100
) -> list[list[float]]:
    """The ROC curve as ``[[fpr, tpr], ...]`` from (0, 0) to (1, 1), at most ``max_points``.

    sklearn's ``roc_curve`` (collinear points dropped) is thinned by keeping points at evenly
    spaced indices, both ends included, so the curve's shape and its ends survive.
    """
    if max_points < 2:
        raise ValueError(f"Invalid max_points: {max_points}")
    fpr, tpr, _ = roc_curve(labels, scores)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return [[round(float(f), 6), round(float(t), 6)] for f, t in zip(fpr, tpr, strict=True)]


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, *, fpr: float = LOW_FPR) -> float:
    """The highest true-positive rate over thresholds whose false-positive rate is <= ``fpr``."""
    rates, hits, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(hits[rates <= fpr].max())


def _auc(members: np.ndarray, nonmembers: np.ndarray) -> float | None:
    if not len(members) or not len(nonmembers):
        return None
    labels = _membership_labels(len(members), len(nonmembers))
    return float(roc_auc_score(labels, np.concatenate([members, nonmembers])))


class SVCParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Shadow points per class for the SVC fit; SalUn uses |D_t| of each, which is slow for
    # large test sets (an RBF SVC fits in O(n^2) to O(n^3)); 2 x 2000 fits in about a second.
    max_fit_per_class: int = Field(2000, ge=10, le=100_000)
    C: float = Field(3.0, gt=0)


@register_attack
class SVCMembershipEfficacy(Attack):
    """MIA-efficacy as SalUn / Unlearn-Sparse's ``SVC_MIA`` (used by ConMU and DAU).

    Shadow set: members = n samples of D_r (label 1), non-members = n samples of D_t
    (label 0), n = min(|D_t|, |retain sample|, ``max_fit_per_class``); feature = the
    true-class confidence p_y; classifier = ``SVC(C=3, gamma="auto", kernel="rbf")``.
    Applied to D_f: efficacy = TN / |D_f| = the fraction of D_f predicted non-member
    (higher = the forget set looks less like training data; a retrained model is the target,
    not 1). Differences from SalUn: the members are a seeded random sample of D_r rather than
    its first |D_t| samples, and both sides are capped at ``max_fit_per_class``.
    """

    name = "svc_mia"
    Params = SVCParams
    params: SVCParams

    def run(self, inputs: AttackInputs) -> dict[str, Any]:
        rng = np.random.default_rng(inputs.seed)
        size = min(len(inputs.test), len(inputs.retain), self.params.max_fit_per_class)
        if not size or not len(inputs.forget):
            return {"metrics": {"mia_efficacy": None}, "fit_size": size}
        members = inputs.retain.confidence()[rng.choice(len(inputs.retain), size, replace=False)]
        nonmembers = inputs.test.confidence()[rng.choice(len(inputs.test), size, replace=False)]
        classifier = SVC(C=self.params.C, gamma="auto", kernel="rbf")
        classifier.fit(
            np.concatenate([members, nonmembers])[:, None], _membership_labels(size, size)
        )
        predicted_member = classifier.predict(inputs.forget.confidence()[:, None])
        return {
            "metrics": {"mia_efficacy": float(1.0 - predicted_member.mean())},
            "fit_size": size,
            "evidence": {"mia_efficacy": Proportion(1.0 - predicted_member)},
        }


@register_attack
class EfficacyAUC(Attack):
    """MIA-efficacy without SVC_MIA's threshold: ``mia_efficacy_auc`` = P(p_y of a retained
    sample > p_y of a forgotten one), the ROC AUC of true-class confidence with D_r as the
    positives and D_f as the negatives. 0.5 means D_f looks like training data; a retrained
    model, for which D_f is unseen, scores its own generalisation gap, the target.

    SVC_MIA fits one RBF boundary on the confidence; where members and non-members both sit
    at p_y ~ 1 the boundary is arbitrary, and one retrained seed can score 0.03 and the next
    0.95 on the same forget set. The AUC ranks every pair instead, so it moves smoothly."""

    name = "efficacy_auc"

    def run(self, inputs: AttackInputs) -> dict[str, Any]:
        members, forgotten = inputs.retain.confidence(), inputs.forget.confidence()
        auc = _auc(members, forgotten)
        if auc is None:
            return {"metrics": {"mia_efficacy_auc": None}}
        return {
            "metrics": {"mia_efficacy_auc": auc},
            "evidence": {"mia_efficacy_auc": Ranking(members, forgotten)},
        }


class ROCParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_roc_points: int = Field(100, ge=2, le=10_000)


@register_attack
class LossThreshold(Attack):
    """The loss-threshold attack (Yeom et al. 2018): a sample is a member when its loss is low.

    Score s(x) = -CE(f(x), y); members = D_f (label 1), non-members = held-out data never
    trained on (label 0). Reports the threshold-free ROC AUC (0.5 = chance; the target is the
    retrained reference's value, which sits near 0.5 for random deletion) as ``mia_auc``, the
    ROC curve thinned to ``max_roc_points``, and the TPR at 1% FPR.
    """

    name = "loss_threshold"
    Params = ROCParams
    params: ROCParams

    def run(self, inputs: AttackInputs) -> dict[str, Any]:
        members, nonmembers = -inputs.forget.loss(), -inputs.nonmembers.loss()
        auc = _auc(members, nonmembers)
        if auc is None:
            return {"metrics": {"mia_auc": None}, "roc": [], "tpr_at_1_fpr": None}
        labels = _membership_labels(len(members), len(nonmembers))
        scores = np.concatenate([members, nonmembers])
        return {
            "metrics": {"mia_auc": auc},
            "roc": roc_points(labels, scores, max_points=self.params.max_roc_points),
            "tpr_at_1_fpr": tpr_at_fpr(labels, scores),
            "evidence": {"mia_auc": Ranking(members, nonmembers)},
        }


@register_attack
class OfflineLiRA(Attack):
    """Offline LiRA with a global variance (Carlini et al. 2022, "Membership Inference
    Attacks From First Principles", sec. IV-C and the fixed-variance variant).

    phi(x) = log p_y - log sum_{j != y} p_j of a model on (x, y) (eq. 4, stable from logits).
    K reference models trained without D_f give the OUT distribution: per sample,
    mu_out(x) = mean_k phi_k(x) and one global sigma for all samples. The one-sided test
    Lambda(x) = 1 - Pr[Z > phi_target(x)], Z ~ N(mu_out(x), sigma^2), is monotone in the
    score  s(x) = (phi_target(x) - mu_out(x)) / sigma,  which is what is ranked: the target's
    confidence standing above what models that never saw x produce.

    sigma: for K >= 2 the pooled within-sample deviation sqrt(mean_x var_k phi_k(x)) (the
    variance of the per-example OUT Gaussian, shared by all examples); for K = 1 it cannot
    be estimated per sample, and the spread of phi over all samples is used (as the authors'
    code does with ``fix_variance``). A global sigma does not change the ranking, so the AUC
    and TPR depend only on phi_target - mu_out; the score's scale matters only for reading
    individual scores. Members = D_f, non-members = held-out samples, both scored the same
    way. Reports ``lira_auc`` and ``lira_tpr_at_1_fpr`` (the paper's preferred metric; None
    with fewer than 1,000 non-members, see ``MIN_TAIL``).
    Differences from the paper: the mean instead of the median over references, and no
    test-time augmentation (one query per sample).
    """

    name = "lira_offline"
    Params = ROCParams
    params: ROCParams
    needs_references = True

    def run(self, inputs: AttackInputs) -> dict[str, Any]:
        if not inputs.reference_count:
            raise ValueError("offline LiRA needs at least one reference model")
        empty = {"lira_auc": None, "lira_tpr_at_1_fpr": None}
        if not len(inputs.forget) or not len(inputs.nonmembers):
            return {"metrics": empty, "references": inputs.reference_count}
        target = np.concatenate([inputs.forget.phi(), inputs.nonmembers.phi()])
        reference = np.stack(
            [
                np.concatenate([on_forget.phi(), on_nonmembers.phi()])
                for on_forget, on_nonmembers in zip(
                    inputs.reference_forget, inputs.reference_nonmembers, strict=True
                )
            ]
        )  # (K, N)
        mean_out = reference.mean(axis=0)
        if inputs.reference_count >= 2:
            sigma = math.sqrt(float(reference.var(axis=0, ddof=1).mean()))
        else:
            sigma = float(reference.std())
        sigma = sigma if sigma > 1e-12 else 1.0
        scores = (target - mean_out) / sigma
        labels = _membership_labels(len(inputs.forget), len(inputs.nonmembers))
        members, nonmembers = scores[: len(inputs.forget)], scores[len(inputs.forget) :]
        evidence: dict[str, Evidence] = {"lira_auc": Ranking(members, nonmembers)}
        tpr = None
        if len(nonmembers) * LOW_FPR >= MIN_TAIL:
            tpr = tpr_at_fpr(labels, scores)
            evidence["lira_tpr_at_1_fpr"] = TailRate(members, nonmembers, LOW_FPR)
        return {
            "metrics": {"lira_auc": float(roc_auc_score(labels, scores)), "lira_tpr_at_1_fpr": tpr},
            "roc": roc_points(labels, scores, max_points=self.params.max_roc_points),
            "sigma": sigma,
            "references": inputs.reference_count,
            "evidence": evidence,
        }


class HistogramParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bins: int = Field(20, ge=1, le=1000)


@register_attack
class EntropyHistogram(Attack):
    """The entropy H(p) = -sum_j p_j log p_j of the model's output on each forget sample,
    as a histogram over fixed bins spanning [0, log C] (so histograms of different versions
    of a model line up). A well-unlearned model looks like the retrained one: confident on
    random deletions it generalises to, uncertain on deleted classes; a collapse to maximal
    entropy (or to zero accuracy) is itself a tell (the Streisand effect).
    The same histogram over the audit's non-members (held-out data, never trained on) is
    the baseline to read it against: a forget set that looks like it has been forgotten.
    ``bins`` in the result are the bin edges (len = counts + 1), in nats.
    """

    name = "entropy_histogram"
    Params = HistogramParams
    params: HistogramParams

    def run(self, inputs: AttackInputs) -> dict[str, Any]:
        top = math.log(max(inputs.forget.num_classes, 2))
        edges = np.linspace(0.0, top, self.params.bins + 1)
        metrics: dict[str, Any] = {}
        for name, outputs in (("forget", inputs.forget), ("holdout", inputs.nonmembers)):
            entropy = np.clip(outputs.entropy(), 0.0, top)
            counts, _ = np.histogram(entropy, bins=edges)
            metrics[f"{name}_entropy_histogram"] = {
                "bins": [round(float(edge), 6) for edge in edges],
                "counts": [int(count) for count in counts],
            }
            metrics[f"{name}_entropy_mean"] = float(entropy.mean()) if len(entropy) else None
        return {"metrics": metrics}


class ProbeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shots: int = Field(5, ge=1, le=1000)
    repeats: int = Field(30, ge=1, le=1000)


@register_attack
class LinearProbe(Attack):
    """Class deletion in the weights, not only in the outputs: how readily the model's
    features (what enters its output layer) still single out a deleted class.

    The probe is a few-shot nearest-class-mean classifier, a linear one: in the features,
    standardised by the retained samples', each class's mean over ``shots`` samples (the
    deleted classes' from D_f, the others' from retained samples), and each held-out sample
    of a deleted class (the non-members) given the class of the nearest mean. ``probe_recall``
    is the share of them given their own class, averaged over ``repeats`` seeded draws of
    the shots. A model that learned the class holds it as a tight cluster that a handful of
    examples find (its parent: ~0.99 on digits); a model retrained without it holds what its
    features happen to carry (~0.85 there), the target. Masking the outputs
    (``ml.class_masking``) leaves the features as they were, so a version that only masks
    scores its parent's value. Few shots on purpose: with many, any features separate an
    easy class (a full logistic probe scored 0.995 on the retrained models and 0.9998 on the
    parent: no room for a gate). None on a random deletion, or without retained samples of
    the remaining classes."""

    name = "linear_probe"
    Params = ProbeParams
    params: ProbeParams

    def run(self, inputs: AttackInputs) -> dict[str, Any]:
        deleted = list(inputs.class_labels)
        sets = (inputs.forget, inputs.retain, inputs.nonmembers)
        if not deleted or any(o.features is None or not len(o) for o in sets):
            return {"metrics": {"probe_recall": None}}
        forget, retain, probed = (_features(o) for o in sets)
        forget_labels = inputs.forget.labels.numpy()
        retain_labels = inputs.retain.labels.numpy()
        probed_labels = inputs.nonmembers.labels.numpy()
        remaining = [c for c in np.unique(retain_labels).tolist() if c not in deleted]
        pools = {c: forget[forget_labels == c] for c in deleted}
        pools |= {c: retain[retain_labels == c] for c in remaining}
        pools = {c: pool for c, pool in pools.items() if len(pool)}
        if not remaining or not any(c in pools for c in deleted):
            return {"metrics": {"probe_recall": None}}
        centre, scale = retain.mean(0), retain.std(0) + 1e-6
        probed = (probed - centre) / scale
        classes = np.array(sorted(pools))
        rng = np.random.default_rng(inputs.seed)
        hits = np.zeros(len(probed))
        for _ in range(self.params.repeats):
            means = np.stack(
                [
                    pools[c][rng.permutation(len(pools[c]))[: self.params.shots]].mean(0)
                    for c in classes
                ]
            )
            means = (means - centre) / scale
            nearest = ((probed[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
            hits += classes[nearest] == probed_labels
        recovered = hits / self.params.repeats
        return {
            "metrics": {"probe_recall": float(recovered.mean())},
            "evidence": {"probe_recall": Proportion(recovered)},
        }


def _features(outputs: Outputs) -> np.ndarray:
    assert outputs.features is not None
    return outputs.features.double().numpy()
