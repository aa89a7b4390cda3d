"""What PGU can reach: why its versions miss two of the audit's gates at full size.

PGU changes a layer's weights only through Eq. 4's projection P = I - M M^T, so a step
changes the layer's output on an input r by ``dW P r``: only the part of r outside the
retained data's core space M moves. Two measurements follow from that:

- **Reach per layer**: the share of D_f's input energy outside each layer's core space,
  tr(P C_f) / tr(C_f), with C_f = R_f R_f^T (the downdate) and P from the downdated cache
  C_r, at a few gammas. A share of 1% means PGU can move D_f's representation in that
  layer through 1% of its energy, whatever the loss asks for.
- **Class deletion past its stop rule**: PGU from the original model with ``stop`` "none"
  at growing step budgets (and with its class rule), each version's unmasked accuracy on
  D_f, its test accuracy with the class masked, and the audit's linear probe
  (``ml.audit.attacks.LinearProbe``, the same sets and seeds as the audit): whether more
  steps take the probe toward what retrained models show, and at what cost.
- **Random deletion, the stop rule's yardstick**: the original model's accuracy on the
  validation set D_v that the ``distribution`` rule compares D_f with, on the test set the
  audit's references are judged on, and on D_f itself.

Run by ``python -m benchmarks.unlearning --methods pgu --scenarios pgu_reach``; it needs no
references and no audit, only the original model and its cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ml.audit.attacks import AttackInputs, LinearProbe
from ml.audit.outputs import Outputs, outputs_of
from ml.audit.report import audit_sets
from ml.pgu import Projection, input_covariances, layer_projector
from ml.samples import SampleSet
from ml.training import accuracy
from ml.unlearners import get_unlearner
from ml.unlearners.pgu import CACHE_ARTIFACT

if TYPE_CHECKING:
    from benchmarks.unlearning import Original

__all__ = ["energy_outside", "reach_tables"]

GAMMAS = (0.95, 0.9, 0.8)
BUDGETS = (40, 80, 160)


def energy_outside(forget_covariance: torch.Tensor, projection: Projection) -> float:
    """tr(P C_f) / tr(C_f): the share of the forget samples' input energy that PGU's
    projection lets a step change (r^T P r = |P r|^2, summed over D_f's rows). C_f is
    (d, d), or (groups, d, d) with a stacked projection; 0.0 for an empty C_f."""
    total = torch.diagonal(forget_covariance, dim1=-2, dim2=-1).sum()
    if float(total) == 0.0:
        return 0.0
    through = projection.apply(forget_covariance.to(projection.basis.dtype))
    return float(torch.diagonal(through, dim1=-2, dim2=-1).sum() / total)


def _reach_rows(original: Original, forget: SampleSet, label: str) -> list[str]:
    bench = original.bench
    model = bench.model_from(original.state_dict)
    cache = original.cache[CACHE_ARTIFACT].tensors
    removed = input_covariances(model, forget, device=bench.device)
    rows = []
    for name, forget_covariance in removed.items():
        downdated = cache[name].to(forget_covariance.device) - forget_covariance
        d = forget_covariance.shape[-1]
        shares = []
        for gamma in GAMMAS:
            projection, k = layer_projector(downdated, gamma)
            shares.append(f"{k} / {energy_outside(forget_covariance, projection):.2%}")
        rows.append(f"| {label} | {name} | {d} | " + " | ".join(shares) + " |")
    return rows


def _class_row(
    label: str,
    model: torch.nn.Module,
    info: dict[str, Any],
    original: Original,
    forget: SampleSet,
    retain: SampleSet,
    classes: list[int],
) -> str:
    """One run's row, from one forward pass over each of the audit's sets: D_f's unmasked
    accuracy, TA with the classes masked (the audit's test set already leaves them out), and
    the audit's probe on the same outputs."""
    bench = original.bench
    sets = audit_sets(
        forget=forget,
        retain=retain,
        audit_nonmembers=bench.data.audit_nonmembers,
        test=bench.data.test,
        class_labels=classes,
        masked_classes=classes,
    )

    def of(samples: SampleSet) -> Outputs:
        return outputs_of(model, samples, device=bench.device)

    inputs = AttackInputs(
        forget=of(sets.forget),
        nonmembers=of(sets.nonmembers),
        retain=of(sets.retain),
        test=of(sets.test),
        class_labels=tuple(classes),
    )
    probe = float(LinearProbe().run(inputs)["metrics"]["probe_recall"])
    unmasked = inputs.forget.accuracy()
    masked = inputs.test.logits.clone()
    masked[:, classes] = float("-inf")
    test = Outputs(masked, inputs.test.labels).accuracy()
    return (
        f"| {label} | {info.get('steps', 0)} | {info.get('stopped_by', '-')} | "
        f"{unmasked:.2%} | {test:.2%} | {probe:.3f} |"
    )


def _class_rows(
    original: Original,
    forget: SampleSet,
    retain: SampleSet,
    classes: list[int],
    params: dict[str, Any],
) -> list[str]:
    bench = original.bench
    rows = [
        _class_row(
            "original", bench.model_from(original.state_dict), {}, original, forget, retain, classes
        )
    ]
    runs = [("class rule", dict(params))] + [
        (f"stop none, budget {budget}", {**params, "stop": "none", "max_steps": budget})
        for budget in BUDGETS
    ]
    for label, run_params in runs:
        context = bench.context(
            original.state_dict,
            forget=forget,
            retain=retain,
            artifacts=original.cache,
            versions={1: original.state_dict},
            class_labels=classes,
        )
        # the unlearner itself, not run_unlearner: the unmasked outputs are measured too
        result = get_unlearner("pgu", run_params).unlearn(context)
        model = bench.model_from(result.state_dict)
        rows.append(_class_row(label, model, result.info, original, forget, retain, classes))
    return rows


def reach_tables(
    original: Original,
    *,
    random_forget: SampleSet,
    class_rows: np.ndarray,
    classes: Sequence[int],
    params: dict[str, Any],
) -> str:
    """The three measurements of the module docstring, as markdown tables."""
    bench = original.bench
    data = bench.data
    deleted = list(classes)
    rest = np.setdiff1d(np.arange(len(data.train)), class_rows)
    class_forget, class_retain = data.train.take(np.sort(class_rows)), data.train.take(rest)
    lines = [
        f"\n== What PGU can reach (gamma {params.get('gamma')} unless named; {bench.device}) ==",
        "D_f's input energy outside each layer's core space (k / share), by gamma:",
        "| deleted | layer | d | " + " | ".join(f"gamma {g}" for g in GAMMAS) + " |",
        "|---|---|---|" + "---|" * len(GAMMAS),
        *_reach_rows(original, random_forget, "random 1%"),
        *_reach_rows(original, class_forget, f"class {', '.join(map(str, deleted))}"),
        "",
        f"Class {', '.join(map(str, deleted))} past the class rule (the probe's target is "
        "the references' recall in the class table):",
        "| run | steps | stopped by | D_f accuracy, unmasked | TA, class masked | probe recall |",
        "|---|---|---|---|---|---|",
        *_class_rows(original, class_forget, class_retain, deleted, params),
        "",
        "The distribution rule's yardstick, the original model's accuracy on:",
        "| D_v (all) | test set | D_f (random 1%) |",
        "|---|---|---|",
    ]
    model = bench.model_from(original.state_dict)
    cells = [
        f"{accuracy(model, samples, device=bench.device):.2%} ({len(samples)})"
        for samples in (data.validation, data.test, random_forget)
    ]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
