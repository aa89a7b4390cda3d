"""The per-sample evidence behind an audit metric, and how far two models' metrics on the same
samples may differ by chance.

Every gated metric of the audit is one of two shapes:

- a :class:`Proportion`: the mean of a 0/1 outcome per sample (UA, RA, TA, SVC
  MIA-efficacy);
- a :class:`Ranking`: the AUC with which a score ranks positives above negatives (the loss
  attack, the confidence efficacy AUC, LiRA);
- a :class:`TailRate`: a true-positive rate at a low false-positive rate (LiRA's TPR at
  1% FPR), whose threshold is itself estimated.

The version and its references are measured on *the same samples*, so the difference of
their metrics is a paired difference: :func:`paired_variance` estimates its sampling
variance from the per-sample disagreements (McNemar's reasoning for proportions, DeLong,
DeLong and Clarke-Pearson 1988 for correlated AUCs). Between two independently trained
models that are equally good, this is the variance a new retrained model's metric shows
around another's, estimated with as many degrees of freedom as there are samples: the
audit pools it with the references' own spread (``ml.audit.scores.allowances``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Proportion",
    "Ranking",
    "TailRate",
    "Evidence",
    "paired_variance",
    "auc_variance",
    "membership_signal",
]

Z95 = 1.959964  # two-sided 95%


@dataclass(frozen=True)
class Proportion:
    """A metric that is ``outcomes.mean()``, one 0/1 outcome per sample."""

    outcomes: np.ndarray


@dataclass(frozen=True)
class Ranking:
    """A metric that is the ROC AUC of ``positives`` ranked above ``negatives`` (ties 1/2)."""

    positives: np.ndarray
    negatives: np.ndarray

    def placements(self) -> tuple[np.ndarray, np.ndarray]:
        """DeLong's placement values: for each positive, the share of negatives it outranks;
        for each negative, the share of positives that outrank it (ties count 1/2)."""
        negatives, positives = np.sort(self.negatives), np.sort(self.positives)

        def share_below(values: np.ndarray, sorted_others: np.ndarray) -> np.ndarray:
            below = np.searchsorted(sorted_others, values, side="left")
            at_or_below = np.searchsorted(sorted_others, values, side="right")
            return (below + at_or_below) / (2.0 * len(sorted_others))

        return share_below(self.positives, negatives), 1.0 - share_below(self.negatives, positives)


@dataclass(frozen=True)
class TailRate:
    """A true-positive rate at a low false-positive rate: the share of ``positives`` above a
    threshold that itself is estimated from ``negatives`` (the top ``fpr`` of them). The
    threshold's own noise dominates when few negatives lie beyond it, so the variance counts
    both sides, unpaired, with the ROC's slope near the threshold taken as 1 (chance)."""

    positives: np.ndarray  # scores
    negatives: np.ndarray  # scores
    fpr: float

    def rate(self) -> float:
        allowed = int(np.floor(self.fpr * len(self.negatives)))
        ranked = np.sort(self.negatives)[::-1]
        threshold = ranked[allowed] if allowed < len(ranked) else -np.inf
        return float((self.positives > threshold).mean()) if len(self.positives) else 0.0

    def variance(self) -> float:
        p, m, n = self.rate(), len(self.positives), len(self.negatives)
        if not m or not n:
            return 0.0
        return p * (1 - p) / m + self.fpr * (1 - self.fpr) / n


Evidence = Proportion | Ranking | TailRate


def _variance_of_mean(differences: np.ndarray) -> float:
    n = len(differences)
    return float(differences.var(ddof=1) / n) if n >= 2 else 0.0


def paired_variance(first: Evidence, second: Evidence) -> float:
    """Sampling variance of (metric of ``first`` - metric of ``second``), both measured on
    the same samples in the same order."""
    if isinstance(first, Proportion) and isinstance(second, Proportion):
        if first.outcomes.shape != second.outcomes.shape:
            raise ValueError("paired proportions need the same samples")
        return _variance_of_mean(first.outcomes.astype(float) - second.outcomes.astype(float))
    if isinstance(first, Ranking) and isinstance(second, Ranking):
        if (
            first.positives.shape != second.positives.shape
            or first.negatives.shape != second.negatives.shape
        ):
            raise ValueError("paired rankings need the same samples")
        if not len(first.positives) or not len(first.negatives):
            return 0.0
        (p1, n1), (p2, n2) = first.placements(), second.placements()
        return _variance_of_mean(p1 - p2) + _variance_of_mean(n1 - n2)
    if isinstance(first, TailRate) and isinstance(second, TailRate):
        return first.variance() + second.variance()  # the thresholds differ: not paired
    raise TypeError("paired evidence must be of the same kind")


def auc_variance(ranking: Ranking) -> float:
    """Sampling variance of one model's AUC (DeLong et al. 1988: the placements' variances
    over their counts)."""
    if len(ranking.positives) < 2 or len(ranking.negatives) < 2:
        return 0.0
    positives, negatives = ranking.placements()
    return _variance_of_mean(positives) + _variance_of_mean(negatives)


def _auc(ranking: Ranking) -> float:
    return float(ranking.placements()[0].mean()) if len(ranking.negatives) else 0.5


def _interval(value: float, variance: float) -> list[float]:
    half = Z95 * float(np.sqrt(max(variance, 0.0)))
    return [round(value - half, 6), round(value + half, 6)]


def membership_signal(*, before: Ranking, after: Ranking) -> dict[str, object]:
    """How well the loss attack tells the forget set from held-out non-members, before the
    unlearning (the parent) and after it (the version), on the same samples.

    Each side is an AUC with its 95% interval (DeLong); the change is paired (the same
    samples under both models), so its interval is narrower than the two sides' would
    suggest. Held-out data shows 0.5 against itself: ``toward_heldout`` says whether the
    version's AUC is nearer 0.5 than the parent's, ``significant`` whether the change's
    interval excludes 0. This is evidence the version changed in the right direction, not
    that it equals a retrained model (a retrained model may sit above 0.5 on samples that
    are easy for any model): only an audit against retrained references says that.
    """
    parent, version = _auc(before), _auc(after)
    change = version - parent
    change_variance = paired_variance(after, before)
    interval = _interval(change, change_variance)
    return {
        "measure": "loss-attack AUC, forget set against held-out non-members",
        "heldout_value": 0.5,
        "parent": {"auc": parent, "ci95": _interval(parent, auc_variance(before))},
        "version": {"auc": version, "ci95": _interval(version, auc_variance(after))},
        "change": {"value": change, "ci95": interval},
        "toward_heldout": abs(version - 0.5) < abs(parent - 0.5),
        "significant": interval[0] > 0 or interval[1] < 0,
    }
