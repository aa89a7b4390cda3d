"""The audit of one model version: metrics, attacks, and the comparison with retrained
references, in the shape of the API's audit response.

:func:`audit_version` runs one forward pass of the version over four sample sets, hands the
outputs to every registered attack (:mod:`ml.audit.attacks`), and, when reference models
retrained without the forget set are given, audits them the same way and scores the version
against them (:mod:`ml.audit.scores`). :func:`train_references` trains such references.

The sets (their sizes are bounded so an audit costs O(retain_sample_size +
nonmember_sample_size + |D_t| + |D_f|) forward passes, whatever |D_r| is):

- forget: D_f, all of it;
- retain sample: a seeded sample of D_r of at most ``retain_sample_size`` (RA, and SVC_MIA's
  member side);
- test: D_t (the audit's non-members when the source has no test split) without the masked classes,
  i.e. every class the version has forgotten, this batch's and earlier ones (TA, and
  SVC_MIA's non-member side, so that its shadow members and non-members come from the same
  classes);
- non-members: never trained on by the version or the references, at most
  ``nonmember_sample_size`` of them (seeded). Random deletion: the audit's share of the
  held-out samples (``audit_nonmembers``: the stop rules never read them) of the unmasked
  classes (the test set when there are none). Class deletion (``class_labels``
  set): the audit's held-out samples and test samples *of the classes deleted by this
  batch*, so the attacks ask
  the membership question of like against like (a retrained model has never seen either
  side; against all classes its AUC would measure class difficulty instead).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ml.audit.attacks import AttackInputs, get_attack, list_attacks
from ml.audit.evidence import Evidence, Proportion, Ranking, membership_signal
from ml.audit.outputs import Outputs, outputs_of
from ml.audit.scores import (
    GATE_Z,
    Allowance,
    AuditTolerances,
    allowances,
    average_disparity,
    frm,
    frm_loss_auc,
    verdict,
)
from ml.class_masking import mask_classes
from ml.evaluation import test_set
from ml.samples import SampleSet
from ml.training import TrainingConfig, train

__all__ = [
    "AuditSets",
    "audit_version",
    "audit_sets",
    "evidence_statement",
    "train_references",
]

Progress = Callable[[str, int, int], None]

ROC_SOURCE = "loss_threshold"  # the attack whose curve is the response's top-level "roc"
SIGNAL = "mia_auc"  # the membership signal reported before and after, with or without refs


def _gated(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers among ``metrics`` (what gates read), without histograms."""
    return {name: value for name, value in metrics.items() if not isinstance(value, dict)}


@dataclass(frozen=True)
class AuditSets:
    """The bounded sample sets one audit reads (see the module docstring)."""

    forget: SampleSet
    retain: SampleSet
    test: SampleSet
    nonmembers: SampleSet

    def sizes(self) -> dict[str, int]:
        return {
            "forget": len(self.forget),
            "retain_sample": len(self.retain),
            "test": len(self.test),
            "nonmembers": len(self.nonmembers),
        }


@dataclass(frozen=True)
class _SetOutputs:
    forget: Outputs
    retain: Outputs
    test: Outputs
    nonmembers: Outputs


def _concat(first: SampleSet, second: SampleSet) -> SampleSet:
    if first.adapter is not second.adapter:
        raise ValueError("the audit's non-members and test must come from the same dataset")
    return SampleSet(
        first.adapter,
        np.concatenate([first.positions, second.positions]),
        np.concatenate([first.labels, second.labels]),
        [*first.keys, *second.keys],
    )


def audit_sets(
    *,
    forget: SampleSet,
    retain: SampleSet,
    audit_nonmembers: SampleSet,
    test: SampleSet,
    class_labels: Sequence[int] | None = None,
    masked_classes: Sequence[int] | None = None,
    retain_sample_size: int = 5000,
    nonmember_sample_size: int = 5000,
    seed: int = 0,
) -> AuditSets:
    """The sets an audit reads, chosen as the module docstring says (seeded, reproducible).

    ``class_labels``: the classes this batch deletes (None for a random deletion);
    ``masked_classes``: every class the version has forgotten so far (``class_labels``
    are added to it).
    """
    if retain_sample_size < 1:
        raise ValueError(f"Invalid retain_sample_size: {retain_sample_size}")
    if nonmember_sample_size < 1:
        raise ValueError(f"Invalid nonmember_sample_size: {nonmember_sample_size}")
    masked = sorted({*(masked_classes or ()), *(class_labels or ())})
    evaluation_test = test_set(test=test, audit_nonmembers=audit_nonmembers, masked_classes=masked)
    if class_labels:
        pool = _concat(audit_nonmembers, test)
        nonmembers = pool.take(np.flatnonzero(np.isin(pool.labels, list(class_labels))))
    else:
        nonmembers = (audit_nonmembers if len(audit_nonmembers) else test).without_classes(masked)
    return AuditSets(
        forget=forget,
        retain=retain.subset(retain_sample_size, seed=seed),
        test=evaluation_test,
        nonmembers=nonmembers.subset(nonmember_sample_size, seed=seed + 1),
    )


def _outputs(model: nn.Module, sets: AuditSets, device: torch.device) -> _SetOutputs:
    return _SetOutputs(
        forget=outputs_of(model, sets.forget, device=device),
        retain=outputs_of(model, sets.retain, device=device),
        test=outputs_of(model, sets.test, device=device),
        nonmembers=outputs_of(model, sets.nonmembers, device=device),
    )


@dataclass(frozen=True)
class _Measured:
    metrics: dict[str, Any]  # flat, JSON-safe
    details: dict[str, Any]  # per attack, JSON-safe
    skipped: dict[str, str]  # attack -> why it did not run
    evidence: dict[str, Evidence]  # metric -> its per-sample outcomes or scores


def _metrics(
    target: _SetOutputs,
    references: Sequence[_SetOutputs],
    attack_names: Sequence[str],
    attack_params: Mapping[str, Mapping[str, Any]],
    seed: int,
    class_labels: tuple[int, ...] = (),
) -> _Measured:
    """Every metric of one model, with the per-sample evidence behind each."""
    forget_accuracy = target.forget.accuracy()
    metrics: dict[str, Any] = {
        "ua": None if forget_accuracy is None else 1.0 - forget_accuracy,
        "ra": target.retain.accuracy(),
        "ta": target.test.accuracy(),
    }
    evidence: dict[str, Evidence] = {
        "ua": Proportion(~target.forget.correct()),
        "ra": Proportion(target.retain.correct()),
        "ta": Proportion(target.test.correct()),
    }
    inputs = AttackInputs(
        forget=target.forget,
        nonmembers=target.nonmembers,
        retain=target.retain,
        test=target.test,
        reference_forget=[reference.forget for reference in references],
        reference_nonmembers=[reference.nonmembers for reference in references],
        seed=seed,
        class_labels=class_labels,
    )
    details: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in attack_names:
        attack = get_attack(name, dict(attack_params.get(name, {})))
        if attack.needs_references and not references:
            skipped[name] = "needs reference models trained without the forget set"
            continue
        result = attack.run(inputs)
        clash = set(result["metrics"]) & set(metrics)
        if clash:
            raise ValueError(f"attack {name!r} reports metrics already named: {sorted(clash)}")
        metrics.update(result["metrics"])
        evidence.update(result.get("evidence", {}))
        details[name] = {
            key: value for key, value in result.items() if key not in ("metrics", "evidence")
        }
    return _Measured(metrics, details, skipped, evidence)


def _mean_metrics(per_model: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(mean, sample standard deviation) over models of each metric; histograms by mean count."""
    mean: dict[str, Any] = {}
    spread: dict[str, Any] = {}
    for name in dict.fromkeys(key for metrics in per_model for key in metrics):
        values = [metrics.get(name) for metrics in per_model]
        numbers = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
        histograms = [v for v in values if isinstance(v, dict) and "counts" in v]
        if histograms:
            counts = np.mean([h["counts"] for h in histograms], axis=0)
            mean[name] = {"bins": histograms[0]["bins"], "counts": counts.round(3).tolist()}
        elif numbers:
            mean[name] = float(np.mean(numbers))
            if len(numbers) >= 2:
                spread[name] = float(np.std(numbers, ddof=1))
        else:
            mean[name] = None
    return mean, spread


def audit_version(
    model: nn.Module,
    *,
    forget: SampleSet,
    retain: SampleSet,
    audit_nonmembers: SampleSet,
    test: SampleSet,
    device: torch.device,
    references: Sequence[nn.Module] = (),
    reference_metrics: Mapping[str, Any] | None = None,
    parent: nn.Module | None = None,
    class_labels: Sequence[int] | None = None,
    masked_classes: Sequence[int] | None = None,
    tolerances: AuditTolerances | None = None,
    attack_names: Sequence[str] | None = None,
    attack_params: Mapping[str, Mapping[str, Any]] | None = None,
    retain_sample_size: int = 5000,
    nonmember_sample_size: int = 5000,
    seed: int = 0,
    gate_z: float = GATE_Z,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Audit ``model`` (a version) for its forget set; JSON-safe, shaped like the API's audit.

    ``references``: models trained from scratch on D_r (never on D_f), e.g. from
    :func:`train_references`. With K >= 1 of them the version also gets offline LiRA, and
    (unless ``reference_metrics`` is given) each reference is audited on the same sets; the
    reference metrics are the **mean over the K references** (one retrain is a noisy target:
    its seed alone moves TA by about a point on small sets), with their standard deviation
    in ``reference["spread"]`` when K >= 2. Reference k's LiRA uses the other K - 1
    references as its OUT models (leave-one-out; a model cannot be its own reference), so
    LiRA has a reference value, and its gates run, only when K >= 2.
    ``model`` and ``references`` must already be on ``device``. ``retain`` is D_r (every
    active training sample outside D_f); ``class_labels`` / ``masked_classes`` as in
    :func:`audit_sets`.
    ``reference_metrics``: precomputed reference metrics (e.g. stored with the retrained
    version); used as they are, references then only serve LiRA. They must have been
    computed on the same forget set.
    Each gate's tolerance comes from the references alone: their spread and the paired
    per-sample disagreements between every two of them (``scores.allowances``, ``gate_z``
    standard deviations), never below the configured ``tolerances``. For a class deletion
    the references (and the parent) are masked like the version before they are read.
    ``parent``: the version's parent, the model before this unlearning, on ``device``: the
    positive control. It is audited on the same sets against the same references
    (``control``), which tells the informative gates from those the parent passes too, and
    gives the forget set's membership signal before and after (``membership_signal``, with
    or without references).

    Returns::

        {"forget_set_size": int,
         "metrics": {"ua", "ra", "ta", "mia_efficacy", "mia_auc",
                     "forget_entropy_histogram": {"bins", "counts"}, "forget_entropy_mean",
                     "holdout_entropy_histogram" (same bins), "holdout_entropy_mean",
                     "lira_auc", "lira_tpr_at_1_fpr" (with references), ...},
         "roc": [[fpr, tpr], ...],               # loss attack, at most 100 points
         "attacks": {name: details}, "attacks_skipped": {name: reason},
         "reference": None | {"kind": "retrain", "models": K | None, "metrics": {...},
                              "spread": {...}},
         "frm": float | None, "frm_loss_auc": float | None,   # None without a reference
         "avg_disparity": float | None,
         "verdict": "pass" | "fail" | "inconclusive" | "no_reference",
         "gates": [...], "failed_gates": [{name, value, reference, tolerance, sided,
                                           passed, control, informative, ...}],
         "skipped_gates": [name, ...], "uninformative_gates": [name, ...],
         "control": None | {"verdict", "gates", "metrics"},   # the parent, when given
         "membership_signal": None | {...},    # ``evidence.membership_signal``
         "sizes": {"forget", "retain_sample", "test", "nonmembers"},
         "seconds": float}

    The caller adds ``version``, ``created_at``, ``unlearning_seconds``, the reference's
    ``version`` and ``seconds``, and ``speedup_vs_reference``.
    """
    started = time.perf_counter()
    notify = progress or (lambda stage, step, total: None)
    names = list(attack_names) if attack_names is not None else list_attacks()
    params = attack_params or {}
    for name in names:  # fail on unknown names or bad params before any forward pass
        get_attack(name, dict(params.get(name, {})))
    sets = audit_sets(
        forget=forget,
        retain=retain,
        audit_nonmembers=audit_nonmembers,
        test=test,
        class_labels=class_labels,
        masked_classes=masked_classes,
        retain_sample_size=retain_sample_size,
        nonmember_sample_size=nonmember_sample_size,
        seed=seed,
    )
    # A class deletion's version never predicts the classes it forgot; its references are
    # read the same way, or masking alone would set them apart.
    masked = sorted({*(masked_classes or ()), *(class_labels or ())})
    if masked:
        references = [mask_classes(copy.deepcopy(model), masked) for model in references]
        if parent is not None:
            parent = mask_classes(copy.deepcopy(parent), masked)
    total = 1 + len(references) + (parent is not None)
    notify("auditing", 0, total)
    target = _outputs(model, sets, device)
    notify("auditing", 1, total)
    reference_outputs = []
    for index, reference_model in enumerate(references):
        reference_outputs.append(_outputs(reference_model, sets, device))
        notify("auditing", 2 + index, total)

    deleted = tuple(sorted(class_labels or ()))

    def measure(outputs: _SetOutputs, others: Sequence[_SetOutputs]) -> _Measured:
        return _metrics(outputs, others, names, params, seed, deleted)

    measured = measure(target, reference_outputs)
    metrics = measured.metrics
    before = None
    if parent is not None:
        before = measure(_outputs(parent, sets, device), reference_outputs)
        notify("auditing", total, total)

    reference: dict[str, Any] | None = None
    allowed: dict[str, Allowance] = {}
    if reference_metrics is not None:
        reference = {"kind": "retrain", "models": None, "metrics": dict(reference_metrics)}
    elif reference_outputs:
        per_reference = [
            measure(own, [other for j, other in enumerate(reference_outputs) if j != k])
            for k, own in enumerate(reference_outputs)
        ]
        mean, spread = _mean_metrics([r.metrics for r in per_reference])
        reference = {
            "kind": "retrain",
            "models": len(reference_outputs),
            "metrics": mean,
            "spread": spread,
        }
        allowed = allowances(
            floors=tolerances or AuditTolerances(),
            references=[r.metrics for r in per_reference],
            reference_evidence=[r.evidence for r in per_reference],
            z=gate_z,
        )

    reference_values: Mapping[str, Any] | None = reference["metrics"] if reference else None
    gates = verdict(
        metrics=metrics,
        reference=reference_values,
        tolerances=tolerances,
        allowed=allowed,
        control=before.metrics if before is not None else None,
    )
    control = None
    if before is not None:
        parent_gates = verdict(
            metrics=before.metrics,
            reference=reference_values,
            tolerances=tolerances,
            allowed=allowed,
        )
        control = {
            "verdict": parent_gates["verdict"],
            "gates": parent_gates["gates"],
            "metrics": _gated(before.metrics),
        }
    scores: dict[str, float | None] = {"frm": None, "frm_loss_auc": None, "avg_disparity": None}
    if reference_values is not None:
        scores = {
            "frm": frm(unlearned=metrics, reference=reference_values),
            "frm_loss_auc": frm_loss_auc(unlearned=metrics, reference=reference_values),
            "avg_disparity": average_disparity(unlearned=metrics, reference=reference_values),
        }
    signal = None
    if before is not None:
        parent_ranking, version_ranking = before.evidence.get(SIGNAL), measured.evidence.get(SIGNAL)
        if isinstance(parent_ranking, Ranking) and isinstance(version_ranking, Ranking):
            signal = membership_signal(before=parent_ranking, after=version_ranking)
    return {
        "forget_set_size": len(forget),
        "metrics": metrics,
        "roc": measured.details.get(ROC_SOURCE, {}).get("roc", []),
        "attacks": measured.details,
        "attacks_skipped": measured.skipped,
        "reference": reference,
        **scores,
        **gates,
        "control": control,
        "membership_signal": signal,
        "sizes": sets.sizes(),
        "seconds": time.perf_counter() - started,
    }


def evidence_statement(report: Mapping[str, Any]) -> str:
    """What an audit report shows, in plain words, for a certificate and the dashboard."""
    said = _evidence(report)
    if report.get("unchanged"):
        why = report.get("unchanged_reason") or "no reason given"
        return f"the version's weights are its parent's ({why}); {said}"
    return said


def _evidence(report: Mapping[str, Any]) -> str:
    reference = report.get("reference") or {}
    models = reference.get("models") or len(reference.get("versions") or []) or None
    against = f"{models} retrained models" if models else "retrained models"
    outcome = report.get("verdict")
    if outcome == "pass":
        informative = [g["name"] for g in report.get("gates", []) if g.get("informative")]
        told = f"; gates that told the model before this deletion apart: {', '.join(informative)}"
        return f"verified against {against}: pass" + (told if informative else "")
    if outcome == "fail":
        failed = ", ".join(gate["name"] for gate in report.get("failed_gates", []))
        return f"verified against {against}: fail ({failed})"
    if outcome == "inconclusive":
        return (
            f"compared with {against}: inconclusive; no gate could tell the model before "
            "this deletion from them, so passing shows nothing"
        )
    signal = report.get("membership_signal")
    if not signal:
        return "not verified against retrained models"
    before, after = signal["parent"]["auc"], signal["version"]["auc"]
    if not signal["significant"]:
        direction = "no significant change"
    elif signal["toward_heldout"]:
        direction = "toward held-out data (0.5)"
    else:
        direction = "away from held-out data (0.5)"
    return (
        "not verified against retrained models; the forget set's membership signal "
        f"(loss-attack AUC) went from {before:.3f} to {after:.3f}: {direction}"
    )


def train_references(
    *,
    build_model: Callable[[], nn.Module],
    retain: SampleSet,
    training: TrainingConfig,
    k: int,
    device: torch.device,
    seeds: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> list[nn.Module]:
    """K models trained from scratch on ``retain`` (D_r) with the version's training recipe.

    Reference i uses seed ``seeds[i]`` for both its initial weights and its data order
    (default: training.seed + 1 + i, so that none repeats the seed of a retrained version
    made with ``training``, which on the CPU would reproduce it bit for bit). The global
    torch RNG is restored after each initialisation; training itself seeds it as usual.
    """
    if k < 1:
        raise ValueError(f"Invalid k: {k}")
    chosen = list(seeds) if seeds is not None else [training.seed + 1 + i for i in range(k)]
    if len(chosen) != k or len(set(chosen)) != k:
        raise ValueError(f"Invalid seeds: need {k} distinct seeds, got {chosen}")
    models = []
    for index, seed in enumerate(chosen):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model()
        train(
            model,
            retain,
            training.model_copy(update={"seed": seed}),
            device=device,
            progress=progress,
            stage=f"reference {index + 1}/{k}",
        )
        models.append(model)
    return models
