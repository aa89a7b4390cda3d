"""Scores that compare an unlearned version with the retrained reference, and the verdict.

All metrics are fractions in [0, 1] (accuracies, attack AUCs, MIA-efficacy); "a point" is
0.01. The reference is the gold standard of exact unlearning, a model retrained from scratch
on D_r: a version is good when it is *indistinguishable from the reference*, not when its
attack numbers are as low as possible (forgetting "too well" is detectable too).

- :func:`frm` -- ConMU's Forget-Retain-MIA score (eq. 9), 1 = indistinguishable.
- :func:`average_disparity` -- DAU's mean absolute gap to the reference, in points.
- :func:`verdict` -- two-sided gates with :class:`AuditTolerances`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AuditTolerances",
    "Gate",
    "frm",
    "average_disparity",
    "verdict",
    "FRM_FLOOR",
]

Metrics = Mapping[str, Any]

# Denominator floor of FRM's relative gaps (see frm); 5 points.
FRM_FLOOR = 0.05
# Comparisons allow for float round-off: |0.93 - 0.92| is 0.010000000000000009.
_SLACK = 1e-9


def _number(metrics: Metrics, name: str) -> float | None:
    value = metrics.get(name)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def frm(*, unlearned: Metrics, reference: Metrics, floor: float = FRM_FLOOR) -> float | None:
    """ConMU's FRM score (Dou et al., "Controllable Machine Unlearning", eq. 9)::

        FRM = exp(-( |FA_u - FA_r| / FA_r + |RA_u - RA_r| / RA_r + |MIA_u - MIA_r| / MIA_r ))

    with FA = forget accuracy = 1 - UA, RA = retain accuracy, and MIA = the loss attack's AUC
    (``mia_auc``; ConMU uses an MIA success rate, the AUC keeps the denominator near 0.5 for
    a retrained model, so the term is well scaled). 1 means indistinguishable from the
    reference; it falls towards 0 as the gaps grow.

    Deviation: each denominator is max(x_r, ``floor``). Without it class deletion, where the
    retrained model's forget accuracy is ~0, divides by ~0 and FRM collapses to 0 for any
    version that is not bit-exact. The floor keeps the score continuous (it equals the paper's
    wherever x_r >= floor) and makes a gap measured against a near-zero reference count as a
    gap relative to ``floor`` (default 0.05: 5 points of residual forget accuracy when the
    reference has none cost a factor e^-1). Returns None when a metric is missing.
    """
    if floor <= 0:
        raise ValueError(f"Invalid floor: {floor}")
    values = {}
    for side, metrics in (("u", unlearned), ("r", reference)):
        ua, ra, mia = (_number(metrics, name) for name in ("ua", "ra", "mia_auc"))
        if ua is None or ra is None or mia is None:
            return None
        values[side] = (1.0 - ua, ra, mia)
    gaps = sum(
        abs(mine - theirs) / max(theirs, floor)
        for mine, theirs in zip(values["u"], values["r"], strict=True)
    )
    return math.exp(-gaps)


DISPARITY_METRICS = ("ua", "mia_efficacy", "ra", "ta")


def average_disparity(*, unlearned: Metrics, reference: Metrics) -> float | None:
    """DAU's average disparity (Sharma et al., "Discriminative Adversarial Unlearning",
    Table 1): mean over {UA, MIA-efficacy, RA, TA} of |x_u - x_r|, in percentage points
    (0 = the reference itself). None when a metric is missing on either side."""
    gaps = []
    for name in DISPARITY_METRICS:
        mine, theirs = _number(unlearned, name), _number(reference, name)
        if mine is None or theirs is None:
            return None
        gaps.append(abs(mine - theirs) * 100.0)
    return sum(gaps) / len(gaps)


class AuditTolerances(BaseModel):
    """How far a version may sit from the reference and still pass (fractions; 0.01 = 1 point).

    Every gate is two-sided, |x_u - x_r| <= tolerance, because deviating either way is
    detectable, except ``lira_tpr_at_1_fpr``, which only fails when the strongest attack
    finds *more* members than it does on the reference. None turns a gate off.
    ``ua`` is a gate the issue did not list; it is there because residual forget accuracy
    is the most direct sign of an unlearning that did not happen (or overshot).
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    ua: float | None = Field(0.03, ge=0, le=1)
    ta: float | None = Field(0.01, ge=0, le=1)
    ra: float | None = Field(0.02, ge=0, le=1)
    mia_auc: float | None = Field(0.02, ge=0, le=1)
    mia_efficacy: float | None = Field(0.03, ge=0, le=1)
    lira_auc: float | None = Field(0.02, ge=0, le=1)
    lira_tpr_at_1_fpr: float | None = Field(0.01, ge=0, le=1)


ONE_SIDED = frozenset({"lira_tpr_at_1_fpr"})


@dataclass(frozen=True)
class Gate:
    name: str
    value: float
    reference: float
    tolerance: float
    sided: Literal["two-sided", "upper"]
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(
    *,
    metrics: Metrics,
    reference: Metrics | None,
    tolerances: AuditTolerances | None = None,
) -> dict[str, Any]:
    """Gates of a version's ``metrics`` against the ``reference`` metrics.

    Returns ``{"verdict": "pass" | "fail" | "no_reference", "gates": [...],
    "failed_gates": [...], "skipped_gates": [...]}``, each gate as
    ``{name, value, reference, tolerance, sided, passed}``. A gate whose metric is missing
    on either side (e.g. LiRA without references) is skipped, never failed; "pass" needs at
    least one gate evaluated.
    """
    tolerances = tolerances or AuditTolerances()
    if not reference:
        return {"verdict": "no_reference", "gates": [], "failed_gates": [], "skipped_gates": []}
    gates: list[Gate] = []
    skipped: list[str] = []
    for name, tolerance in tolerances.model_dump().items():
        if tolerance is None:
            continue
        mine, theirs = _number(metrics, name), _number(reference, name)
        if mine is None or theirs is None:
            skipped.append(name)
            continue
        sided: Literal["two-sided", "upper"]
        if name in ONE_SIDED:
            sided, passed = "upper", mine - theirs <= tolerance + _SLACK
        else:
            sided, passed = "two-sided", abs(mine - theirs) <= tolerance + _SLACK
        gates.append(Gate(name, mine, theirs, tolerance, sided, passed))
    failed = [gate.as_dict() for gate in gates if not gate.passed]
    outcome = "no_reference" if not gates else "fail" if failed else "pass"
    return {
        "verdict": outcome,
        "gates": [gate.as_dict() for gate in gates],
        "failed_gates": failed,
        "skipped_gates": skipped,
    }
