"""Scores that compare an unlearned version with the retrained reference, and the verdict.

All metrics are fractions in [0, 1] (accuracies, attack AUCs, MIA-efficacy); "a point" is
0.01. The reference is the gold standard of exact unlearning, a model retrained from scratch
on D_r: a version is good when it is *indistinguishable from the reference*, not when its
attack numbers are as low as possible (forgetting "too well" is detectable too).

- :func:`frm` -- ConMU's Forget-Retain-MIA score (eq. 9), 1 = indistinguishable.
- :func:`average_disparity` -- DAU's mean absolute gap to the reference, in points.
- :func:`allowances` -- how far each metric may sit from the references' mean by chance.
- :func:`verdict` -- two-sided gates, each as wide as its allowance.

How wide a gate is. Under the hypothesis "the version is just another retrained model", its
metric x and the K references' r_1..r_K are draws from one distribution with a model-to-model
variance s^2 (on these very samples), so x - mean(r) has variance s^2 (1 + 1/K). s^2 is
estimated twice: from the references' own spread (K - 1 degrees of freedom, noisy at K = 4)
and from the paired per-sample disagreements between the version and each reference, halved
(``ml.audit.evidence``; as many degrees of freedom as samples); the larger of the two is used.
The gate's tolerance is max(floor, z sqrt(s^2 (1 + 1/K))) with z = 3 by default, the floor
being the configured :class:`AuditTolerances`. A metric without per-sample evidence (reference
metrics given as numbers) gets its floor alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ml.audit.evidence import Evidence, paired_variance

__all__ = [
    "AuditTolerances",
    "Allowance",
    "allowances",
    "GATE_Z",
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
    mia_efficacy_auc: float | None = Field(0.02, ge=0, le=1)
    lira_auc: float | None = Field(0.02, ge=0, le=1)
    lira_tpr_at_1_fpr: float | None = Field(0.01, ge=0, le=1)


ONE_SIDED = frozenset({"lira_tpr_at_1_fpr"})
GATE_Z = 3.0  # standard deviations of chance a gate allows (about 0.3% two-sided)


@dataclass(frozen=True)
class Allowance:
    """A gate's tolerance and what it was derived from."""

    tolerance: float  # max(floor, z * sqrt(variance * (1 + 1/K)))
    floor: float  # the configured tolerance
    reference_sd: float | None  # the references' own spread (K >= 2)
    paired_sd: float | None  # model-to-model sd from paired per-sample disagreements


def allowances(
    *,
    floors: AuditTolerances,
    references: list[Metrics],
    version_evidence: Mapping[str, Evidence],
    reference_evidence: list[Mapping[str, Evidence]],
    z: float = GATE_Z,
) -> dict[str, Allowance]:
    """Each gate's tolerance, sized by chance as the module docstring says. ``references``
    are the K references' own metrics; the evidence is per metric, for the version and for
    each reference, on the same samples."""
    if z <= 0:
        raise ValueError(f"Invalid z: {z}")
    k = len(references)
    result: dict[str, Allowance] = {}
    for name, floor in floors.model_dump().items():
        if floor is None or not k:
            continue
        values = [v for v in (_number(metrics, name) for metrics in references) if v is not None]
        reference_sd = float(np.std(values, ddof=1)) if len(values) >= 2 else None
        mine = version_evidence.get(name)
        paired = [
            paired_variance(mine, theirs[name]) / 2.0
            for theirs in reference_evidence
            if mine is not None and name in theirs
        ]
        paired_sd = math.sqrt(float(np.mean(paired))) if paired else None
        variance = max((reference_sd or 0.0) ** 2, (paired_sd or 0.0) ** 2)
        tolerance = max(floor, z * math.sqrt(variance * (1.0 + 1.0 / k)))
        result[name] = Allowance(tolerance, floor, reference_sd, paired_sd)
    return result


@dataclass(frozen=True)
class Gate:
    name: str
    value: float
    reference: float
    tolerance: float
    sided: Literal["two-sided", "upper"]
    passed: bool
    floor: float
    reference_sd: float | None = None
    paired_sd: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(
    *,
    metrics: Metrics,
    reference: Metrics | None,
    tolerances: AuditTolerances | None = None,
    allowed: Mapping[str, Allowance] | None = None,
) -> dict[str, Any]:
    """Gates of a version's ``metrics`` against the ``reference`` metrics.

    ``allowed`` (from :func:`allowances`) sizes each gate; a gate without one uses its floor
    from ``tolerances``. Returns ``{"verdict": "pass" | "fail" | "no_reference", "gates":
    [...], "failed_gates": [...], "skipped_gates": [...]}``, each gate as ``{name, value,
    reference, tolerance, sided, passed, floor, reference_sd, paired_sd}``. A gate whose
    metric is missing on either side (e.g. LiRA without references) is skipped, never
    failed; "pass" needs at least one gate evaluated.
    """
    tolerances = tolerances or AuditTolerances()
    allowed = allowed or {}
    if not reference:
        return {"verdict": "no_reference", "gates": [], "failed_gates": [], "skipped_gates": []}
    gates: list[Gate] = []
    skipped: list[str] = []
    for name, floor in tolerances.model_dump().items():
        if floor is None:
            continue
        mine, theirs = _number(metrics, name), _number(reference, name)
        if mine is None or theirs is None:
            skipped.append(name)
            continue
        allowance = allowed.get(name) or Allowance(floor, floor, None, None)
        tolerance = allowance.tolerance
        sided: Literal["two-sided", "upper"]
        if name in ONE_SIDED:
            sided, passed = "upper", mine - theirs <= tolerance + _SLACK
        else:
            sided, passed = "two-sided", abs(mine - theirs) <= tolerance + _SLACK
        gates.append(
            Gate(
                name,
                mine,
                theirs,
                tolerance,
                sided,
                passed,
                floor,
                allowance.reference_sd,
                allowance.paired_sd,
            )
        )
    failed = [gate.as_dict() for gate in gates if not gate.passed]
    outcome = "no_reference" if not gates else "fail" if failed else "pass"
    return {
        "verdict": outcome,
        "gates": [gate.as_dict() for gate in gates],
        "failed_gates": failed,
        "skipped_gates": skipped,
    }
