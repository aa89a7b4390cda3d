"""Scores that compare an unlearned version with the retrained reference, and the verdict.

All metrics are fractions in [0, 1] (accuracies, attack AUCs, MIA-efficacy); "a point" is
0.01. The reference is the gold standard of exact unlearning, a model retrained from scratch
on D_r: a version is good when it is *indistinguishable from the reference*, not when its
attack numbers are as low as possible (forgetting "too well" is detectable too).

- :func:`frm` -- ConMU's Forget-Retain-MIA score (eq. 9, with MIA-efficacy as the paper),
  1 = indistinguishable; :func:`frm_loss_auc`, the same form over the loss attack's AUC.
- :func:`average_disparity` -- DAU's mean absolute gap to the reference, in points.
- :func:`allowances` -- how far each metric may sit from the references' mean by chance.
- :func:`verdict` -- gates, each as wide as its allowance, read against a positive control.

How wide a gate is. Under the hypothesis "the version is just another retrained model", its
metric x and the K references' r_1..r_K are draws from one distribution with a model-to-model
variance s^2 (on these very samples), so x - mean(r) has variance s^2 (1 + 1/K). s^2 is
estimated from the references alone, twice: from their own spread (K - 1 degrees of
freedom, noisy at K = 4) and from the paired per-sample disagreements between every two
references, halved (``ml.audit.evidence``; as many degrees of freedom as samples); the larger
of the two is used. The version under test never sizes its own gate: a worse version gets
the same gate as a better one. The gate's tolerance is max(floor, z sqrt(s^2 (1 + 1/K)))
with z = 3 by default, the floor being the configured :class:`AuditTolerances`. With one
reference, or a metric without per-sample evidence (reference metrics given as numbers),
chance cannot be measured and the floor alone sizes the gate.

What a gate can tell. The positive control is the version's parent, the model before this
unlearning, which still knows the forget set: measured on the same samples against the same
references, a gate it also passes (|parent - references| within the tolerance) cannot tell
forgetting from not forgetting. Such a gate is *uninformative*: its failure still fails the
version (the version is measurably unlike a retrained model), but its pass is no evidence.
The verdict is ``fail`` when any gate fails, ``pass`` when every gate passes and at least
one is informative, and ``inconclusive`` when every gate passes and none is informative
(the parent would pass too); ``no_reference`` without references.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from itertools import combinations
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
    "Verdict",
    "frm",
    "frm_loss_auc",
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

    with FA = forget accuracy = 1 - UA, RA = retain accuracy, and MIA = MIA-efficacy
    (``mia_efficacy``: the share of D_f the SVC attack calls non-members, the paper's
    Appendix A). 1 means indistinguishable from the reference; it falls towards 0 as the
    gaps grow.

    Deviation: each denominator is max(x_r, ``floor``). Without it class deletion, where the
    retrained model's forget accuracy is ~0, divides by ~0 and FRM collapses to 0 for any
    version that is not bit-exact. The floor keeps the score continuous (it equals the paper's
    wherever x_r >= floor) and makes a gap measured against a near-zero reference count as a
    gap relative to ``floor`` (default 0.05: 5 points of residual forget accuracy when the
    reference has none cost a factor e^-1). Returns None when a metric is missing.
    """
    return _frm(unlearned, reference, "mia_efficacy", floor)


def frm_loss_auc(
    *, unlearned: Metrics, reference: Metrics, floor: float = FRM_FLOOR
) -> float | None:
    """FRM's form with the loss attack's AUC (``mia_auc``) in place of MIA-efficacy: not
    the paper's score (an AUC sits near 0.5 for a retrained model, so its term is much
    smaller than MIA-efficacy's, whose reference value on a random deletion is often near
    0.1); kept under its own name because earlier reports of this service used it."""
    return _frm(unlearned, reference, "mia_auc", floor)


def _frm(unlearned: Metrics, reference: Metrics, mia: str, floor: float) -> float | None:
    if floor <= 0:
        raise ValueError(f"Invalid floor: {floor}")
    values = {}
    for side, metrics in (("u", unlearned), ("r", reference)):
        ua, ra, attack = (_number(metrics, name) for name in ("ua", "ra", mia))
        if ua is None or ra is None or attack is None:
            return None
        values[side] = (1.0 - ua, ra, attack)
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
    probe_recall: float | None = Field(0.03, ge=0, le=1)  # class deletion only


ONE_SIDED = frozenset({"lira_tpr_at_1_fpr"})
GATE_Z = 3.0  # standard deviations of chance a gate allows (about 0.3% two-sided)


@dataclass(frozen=True)
class Allowance:
    """A gate's tolerance and what it was derived from (the references alone)."""

    tolerance: float  # max(floor, z * sqrt(variance * (1 + 1/K)))
    floor: float  # the configured tolerance
    reference_sd: float | None  # the references' own spread (K >= 2)
    paired_sd: float | None  # model-to-model sd from reference-vs-reference disagreements


def allowances(
    *,
    floors: AuditTolerances,
    references: list[Metrics],
    reference_evidence: list[Mapping[str, Evidence]],
    z: float = GATE_Z,
) -> dict[str, Allowance]:
    """Each gate's tolerance, sized by chance as the module docstring says, from the
    references alone: ``references`` are the K references' own metrics, and
    ``reference_evidence`` each reference's per-sample evidence on the same samples."""
    if z <= 0:
        raise ValueError(f"Invalid z: {z}")
    k = len(references)
    result: dict[str, Allowance] = {}
    for name, floor in floors.model_dump().items():
        if floor is None or not k:
            continue
        values = [v for v in (_number(metrics, name) for metrics in references) if v is not None]
        reference_sd = float(np.std(values, ddof=1)) if len(values) >= 2 else None
        paired = [
            paired_variance(first[name], second[name]) / 2.0
            for first, second in combinations(reference_evidence, 2)
            if name in first and name in second
        ]
        paired_sd = math.sqrt(float(np.mean(paired))) if paired else None
        variance = max((reference_sd or 0.0) ** 2, (paired_sd or 0.0) ** 2)
        counted = len(values) or k  # the references that have this metric
        tolerance = max(floor, z * math.sqrt(variance * (1.0 + 1.0 / counted)))
        result[name] = Allowance(tolerance, floor, reference_sd, paired_sd)
    return result


Verdict = Literal["pass", "fail", "inconclusive", "no_reference"]


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
    control: float | None = None  # the parent's value on the same samples
    informative: bool | None = None  # the parent fails this gate (None: no control)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _passes(sided: str, value: float, reference: float, tolerance: float) -> bool:
    if sided == "upper":
        return value - reference <= tolerance + _SLACK
    return abs(value - reference) <= tolerance + _SLACK


def verdict(
    *,
    metrics: Metrics,
    reference: Metrics | None,
    tolerances: AuditTolerances | None = None,
    allowed: Mapping[str, Allowance] | None = None,
    control: Metrics | None = None,
) -> dict[str, Any]:
    """Gates of a version's ``metrics`` against the ``reference`` metrics.

    ``allowed`` (from :func:`allowances`) sizes each gate; a gate without one uses its floor
    from ``tolerances``. ``control``: the parent's metrics on the same samples; a gate the
    parent passes too is uninformative (module docstring). Returns ``{"verdict": "pass" |
    "fail" | "inconclusive" | "no_reference", "gates": [...], "failed_gates": [...],
    "skipped_gates": [...], "uninformative_gates": [...]}``, each gate as ``{name, value,
    reference, tolerance, sided, passed, floor, reference_sd, paired_sd, control,
    informative}``. A gate whose metric is missing on either side (e.g. LiRA without
    references) is skipped, never failed. Without a control every gate's ``informative`` is
    None and a version whose gates all pass is ``pass``, as before there was a control (the
    parent's own audit is read this way).
    """
    tolerances = tolerances or AuditTolerances()
    allowed = allowed or {}
    empty: dict[str, Any] = {
        "gates": [],
        "failed_gates": [],
        "skipped_gates": [],
        "uninformative_gates": [],
    }
    if not reference:
        return {"verdict": "no_reference", **empty}
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
        sided: Literal["two-sided", "upper"] = "upper" if name in ONE_SIDED else "two-sided"
        parent = _number(control, name) if control is not None else None
        informative = None if parent is None else not _passes(sided, parent, theirs, tolerance)
        gates.append(
            Gate(
                name,
                mine,
                theirs,
                tolerance,
                sided,
                _passes(sided, mine, theirs, tolerance),
                floor,
                allowance.reference_sd,
                allowance.paired_sd,
                parent,
                informative,
            )
        )
    failed = [gate.as_dict() for gate in gates if not gate.passed]
    outcome: Verdict
    if not gates:
        outcome = "no_reference"
    elif failed:
        outcome = "fail"
    elif control is not None and not any(gate.informative for gate in gates):
        outcome = "inconclusive"
    else:
        outcome = "pass"
    return {
        "verdict": outcome,
        "gates": [gate.as_dict() for gate in gates],
        "failed_gates": failed,
        "skipped_gates": skipped,
        "uninformative_gates": [gate.name for gate in gates if gate.informative is False],
    }
