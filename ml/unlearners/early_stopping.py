"""When to stop unlearning by gradient steps on the forget set, shared by PGU and gradient
ascent.

:func:`unlearn_steps` takes one step per mini-batch of D_f and, before the first step and
then every ``check_every`` forget samples, lets :class:`EarlyStopping` measure the model on
fixed random subsets (at most ``eval_size`` samples each) of D_f and of the validation set
D_v. The state closest to the rule's target is kept (a copy), and restored at the end, so a
step that overshoots is rolled back. What a retrained model shows is the target in every
rule: forgotten samples should look like samples it never saw, not better known and not
less (driving them past that is the Streisand effect, which an attacker detects too). A
run also ends when ``patience`` checks in a row came no closer than the kept state.

Rules:

- ``distribution`` (random deletion; the default): a retrained model never saw D_f, so to it
  D_f is held-out data *of D_f's own class mix*. Two measures of D_f against held-out
  samples of D_v drawn per class in D_f's proportions (weighted to them where a class has
  too few): the loss-attack AUC, P(loss on a forget sample < loss on a held-out one), whose
  target is exactly 0.5, and the accuracy gap, accuracy on D_f minus the matched held-out
  accuracy, whose target is 0. Matching matters for one person's data, which is skewed: a
  forget set of mostly one hard class is, to a retrained model, worse classified than
  held-out data of every class, and one of an easy class better. "Reached" means
  equivalence with the target within ``equivalence_margin`` at 95% confidence, by two
  one-sided tests: each measure's 90% interval (DeLong's variance for the weighted AUC, the
  binomial one for the gap, with one success and one failure added so that 50 of 50 is
  not a certainty) lies inside +-margin. Each measure's margin is sized by the starting
  model (the first check): ``margin_share`` of that model's own deviation on it, its
  member/non-member difference, and at most ``equivalence_margin``. A fixed margin wider
  than the starting model's difference judged it already forgotten: a small_cnn on
  Fashion-MNIST with a 4-point train-test gap passed a 0.05 margin before any step, and
  the audit, whose gates are sized by retrained references, failed the unchanged version.
  The starting model is therefore never "reached" (its interval is never within a share
  of its own deviation, not even at a deviation of 0), so no method returns early under
  this rule. With ``validation_eval_size`` 500 a 90% interval is about +-0.03 on either
  measure, so the target can only be reached where the start's deviation is above about
  0.06; below that the run ends by ``patience`` or the budget and keeps the closest
  state, which may be the starting one (no step kept). Distance = |AUC - 0.5| + |gap| +
  drop, so a state that overshoots (forgets more than a retrained model would: the Streisand effect)
  is no closer than one that undershoots. ``drop`` is how far the matched held-out
  accuracy has fallen below the starting model's (the same samples, so the difference is
  the weights'): a retrained model generalises as the original does, and a state that
  closed the gap by losing held-out accuracy alongside D_f's is not closer to it. (Without
  it, PGU on a full-size small_cnn kept such states, and five incremental batches in a row
  ended 5.8 points of test accuracy below retrained models; docs/benchmarks.md.) "Reached"
  reads the interval alone: a run may stop at a reached state and keep an earlier, closer
  one.
- ``holdout_gap`` (the PGU authors' rule): gap = accuracy on D_v - accuracy on D_f; stop at
  the first positive gap; keep the state with the smallest |gap|.
- ``class`` (class deletion): a retrained model cannot predict a class it never saw, so its
  accuracy on D_f, and on held-out samples of the deleted classes, is 0. The rule reads the
  *unmasked* outputs (the published model also masks the classes, ``ml.class_masking``, but
  masking alone would meet any rule that read masked outputs while the weights still know
  the class): reached once both accuracies are within ``equivalence_margin``; distance =
  their sum. A retrained model's accuracy on a class it never saw is exactly 0, a boundary
  with no noise to test against, so the point estimates decide (an upper confidence bound
  of 0 successes stays above 5% below about 50 samples and would never stop).
- ``none``: run the whole budget, keep the last state.

Under every rule but ``none`` the utility brake comes first: a state whose accuracy on
held-out samples of the remaining classes (masked outputs, what users get) has fallen more
than ``utility_brake`` (5 points, the PGU authors' class-deletion threshold) below the
start ends the run and is never kept.
- ``auto``: ``class`` when the batch deletes classes, else ``distribution``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
import torch
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from torch import nn

from ml.samples import SampleSet
from ml.training import predict

if TYPE_CHECKING:
    from ml.unlearners.base import UnlearnContext

__all__ = [
    "StopRule",
    "StopRuleParams",
    "resolve_rule",
    "Measure",
    "EarlyStopping",
    "matched_heldout",
    "ranked",
    "weighted_auc",
    "unlearn_steps",
]

StopRule = Literal["auto", "distribution", "holdout_gap", "class", "none"]
PATIENCE = 5  # checks without getting closer to the target before giving up


class StopRuleParams(BaseModel):
    """The stop-rule knobs, shared by the Params of every method that steps on D_f under
    :func:`unlearn_steps` (PGU, gradient ascent, RFU-SS, LTU, DAU)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    stop: StopRule = Field(
        "auto",
        description="The stop rule (`ml/unlearners/early_stopping.py`): `auto` is `class` "
        "for a class deletion, else `distribution`; `holdout_gap` is the PGU authors' "
        "accuracy rule; `none` runs the whole budget and keeps the last state.",
    )
    check_every: int = Field(
        128, ge=1, le=1_000_000, description="Forget samples stepped on between two checks."
    )
    # Named holdout_eval_size until the stop rules' set was called the validation set;
    # params stored under the old name still validate, and are dumped under the new one.
    validation_eval_size: int = Field(
        500,
        ge=10,
        le=100_000,
        validation_alias=AliasChoices("validation_eval_size", "holdout_eval_size"),
        description="How many samples of D_f and of the validation set D_v each check "
        "measures (fixed random subsets). Formerly `holdout_eval_size`, still accepted.",
    )
    utility_brake: float = Field(
        0.05,
        gt=0,
        le=1,
        description="A state whose held-out accuracy over the remaining classes (D_v, the "
        "published masked outputs) has fallen more than this below the start ends the run "
        "and is never kept (the PGU authors' class-deletion threshold, 5 points, for every "
        "rule).",
    )
    equivalence_margin: float = Field(
        0.05,
        gt=0,
        le=0.5,
        description="How close to what a retrained model shows counts as reached: the "
        "loss AUC within 0.5 +- margin and the accuracy gap within +- margin, each at 95% "
        "confidence (two one-sided tests), each margin also at most `margin_share` of the "
        "starting model's own deviation; the class rule: the deleted classes' accuracy at "
        "most margin (point estimates).",
    )
    margin_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="The `distribution` rule: each measure's margin is at most this share "
        "of the starting model's own deviation on it (its member/non-member difference), so "
        "that reaching the target means removing at least the rest of that difference, "
        "whatever the network's train-test gap. Where the checks' samples are too few for "
        "the interval to fit inside (at 500, a starting deviation below about 0.06), the run "
        "ends by patience or the budget and keeps the closest state.",
    )


Batch = tuple[torch.Tensor, torch.Tensor]


def resolve_rule(rule: StopRule, class_labels: list[int] | None) -> str:
    if rule == "auto":
        return "class" if class_labels else "distribution"
    if rule == "class" and not class_labels:
        raise ValueError("the 'class' stop rule needs a class deletion (class_labels)")
    return rule


@dataclass(frozen=True)
class Measure:
    distance: float  # from the target; the kept state minimises it
    reached: bool  # at or past the target: stop
    braked: bool = False  # past the brake: stop, and never keep this state
    record: dict[str, float] = field(default_factory=dict)


EQUIVALENCE_Z = 1.6449  # two one-sided tests at 5% each: a 90% interval inside the margin


def weighted_auc(first: np.ndarray, second: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """(P(a value of ``first`` < a value of ``second``), its variance), ties 1/2, where
    ``second`` is drawn with ``weights`` and ``first`` uniformly. The variance is DeLong's,
    with the weighted side's effective sample size (equal weights: DeLong's own)."""
    if len(first) < 2 or len(second) < 2:
        return 0.5, 0.0
    order = np.argsort(second)
    ranked, mass = second[order], weights[order] / weights.sum()
    below = np.concatenate([[0.0], np.cumsum(mass)])
    low = np.searchsorted(ranked, first, side="left")
    high = np.searchsorted(ranked, first, side="right")
    # per forget value: the weighted share of held-out values above it (ties count 1/2)
    first_placements = 1.0 - below[high] + 0.5 * (below[high] - below[low])
    ordered = np.sort(first)
    low = np.searchsorted(ordered, second, side="left")
    high = np.searchsorted(ordered, second, side="right")
    # per held-out value: the share of forget values below it (ties count 1/2)
    second_placements = (low + 0.5 * (high - low)) / len(first)
    share = weights / weights.sum()
    effective = 1.0 / float((share**2).sum())
    spread = float((share * (second_placements - (share * second_placements).sum()) ** 2).sum())
    variance = float(first_placements.var(ddof=1)) / len(first) + spread / effective
    return float(first_placements.mean()), variance


def _rate_variance(rate: float, trials: float) -> float:
    """The sampling variance of an accuracy over ``trials`` samples, from the rate pulled
    toward 1/2 by one added success and one added failure (Laplace's rule of succession),
    so that an accuracy of 1.0 on 50 samples is not taken for a certainty."""
    pulled = (rate * trials + 1) / (trials + 2)
    return pulled * (1 - pulled) / trials


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.cross_entropy(logits.double(), labels, reduction="none").numpy()


def _masked_logits(logits: torch.Tensor, classes: list[int]) -> torch.Tensor:
    masked = logits.double().clone()
    masked[:, classes] = float("-inf")
    return masked


def _correct(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return (logits.argmax(1) == labels).double().numpy()


def matched_heldout(
    forget_labels: np.ndarray, heldout: SampleSet, *, size: int
) -> tuple[SampleSet, np.ndarray]:
    """Held-out samples in D_f's class mix: about ``size`` of them, per class in D_f's
    proportions the first of that class in ``heldout``'s order (shuffle it: see
    :func:`ranked`), and each one's weight, so that every class weighs what it does in D_f
    even where the held-out set has too few of it. Classes without any held-out sample are
    left out (their share is spread over the others)."""
    classes, counts = np.unique(forget_labels, return_counts=True)
    present = [c for c in classes if np.any(heldout.labels == c)]
    if not present:
        raise ValueError("the stop rule needs held-out samples of the classes D_f holds")
    shares = {c: n for c, n in zip(classes, counts, strict=True) if c in present}
    total = sum(shares.values())
    chosen: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for c in present:
        pool = np.flatnonzero(heldout.labels == c)
        share = shares[c] / total
        take = min(len(pool), max(1, round(size * share)))
        chosen.append(pool[:take])
        weights.append(np.full(take, share / take))
    rows = np.concatenate(chosen)
    order = np.argsort(rows)
    return heldout.take(rows[order]), np.concatenate(weights)[order]


def ranked(samples: SampleSet, *, seed: int) -> SampleSet:
    """``samples`` in one seeded random order. Every held-out subset a check reads is the
    first samples of this order that it may use, so subsets of one D_v share what they can
    (the brake's and the matched one are nearly the same samples under random deletion) and
    a check runs fewer forward passes (``_read_once``)."""
    return samples.take(np.random.default_rng(seed).permutation(len(samples)))


def _first(samples: SampleSet, size: int) -> SampleSet:
    return samples.take(np.arange(min(len(samples), size)))


@dataclass(frozen=True)
class _Rows:
    """One held-out subset: its rows among the samples a check runs, and its labels."""

    rows: torch.Tensor
    labels: torch.Tensor


def _read_once(
    subsets: list[SampleSet | None],
) -> tuple[torch.Tensor | None, list[_Rows | None]]:
    """(the inputs of every sample of ``subsets`` once, each subset's rows among them).
    The subsets are of one set (D_v), so a sample is known by its position."""
    present = [s for s in subsets if s is not None and len(s)]
    if not present:
        return None, [None for _ in subsets]
    positions = np.concatenate([s.positions for s in present])
    labels = np.concatenate([s.labels for s in present])
    keys = [key for s in present for key in s.keys]
    unique, first, inverse = np.unique(positions, return_index=True, return_inverse=True)
    union = SampleSet(present[0].adapter, unique, labels[first], [keys[i] for i in first])
    inputs, union_labels = union.tensors()
    rows: list[_Rows | None] = []
    start = 0
    for subset in subsets:
        if subset is None or not len(subset):
            rows.append(None)
            continue
        taken = torch.as_tensor(inverse[start : start + len(subset)], dtype=torch.long)
        rows.append(_Rows(taken, union_labels[taken]))
        start += len(subset)
    return inputs, rows


class EarlyStopping:
    """Measures models under one rule, keeps the best state, tells when to stop."""

    def __init__(
        self,
        rule: StopRule,
        *,
        forget: SampleSet,
        validation: SampleSet,
        eval_size: int,
        device: torch.device,
        class_labels: list[int] | None = None,
        seed: int = 0,
        margin: float = 0.05,
        margin_share: float = 0.5,
        brake: float = 0.05,
        masked_classes: Sequence[int] = (),
    ) -> None:
        if not 0 < margin <= 0.5:
            raise ValueError(f"Invalid margin: {margin}")
        if not 0 < margin_share <= 1:
            raise ValueError(f"Invalid margin_share: {margin_share}")
        if not 0 < brake <= 1:
            raise ValueError(f"Invalid brake: {brake}")
        self.rule = resolve_rule(rule, class_labels)
        self.device = device
        self.margin, self.margin_share, self.brake = margin, margin_share, brake
        # distribution rule: (AUC margin, gap margin), sized by the first check's model
        self._margins: tuple[float, float] | None = None
        self.classes = sorted(class_labels or [])
        self.history: list[dict[str, float]] = []
        self._best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        self._forget: Batch | None = None
        # The held-out subsets below are prefixes of one shuffled D_v and overlap: a check
        # runs each held-out sample once (``_heldout``) and every subset reads its rows of
        # those outputs.
        self._heldout: torch.Tensor | None = None
        self._same_class: _Rows | None = None  # class rule: held out, of the deleted classes
        self._others: _Rows | None = None  # held out: matched to D_f, or of D_f's classes
        self._weights: np.ndarray | None = None  # distribution rule: the matching weights
        self._utility: _Rows | None = None  # held out, of the remaining classes: the brake
        if self.rule == "none":
            return  # reads nothing
        forget_subset = forget.subset(eval_size, seed=seed)
        self._forget = forget_subset.tensors()
        # The brake reads the classes the model still predicts: neither this batch's nor
        # those an earlier deletion masked (their samples would sit at 0% and dilute it).
        self._gone = sorted({*self.classes, *masked_classes})
        shuffled = ranked(validation, seed=seed)
        remaining = shuffled.without_classes(self._gone)
        utility = _first(remaining, eval_size) if len(remaining) else None
        same_class = others = None
        if self.rule == "class":
            same = shuffled.take(np.flatnonzero(np.isin(shuffled.labels, self.classes)))
            same_class = _first(same, eval_size) if len(same) else None
        elif self.rule == "holdout_gap":
            held = shuffled.take(np.flatnonzero(np.isin(shuffled.labels, forget.labels)))
            if not len(held):
                raise ValueError(f"the {self.rule!r} stop rule needs held-out samples")
            others = _first(held, eval_size)
        else:
            others, self._weights = matched_heldout(forget_subset.labels, shuffled, size=eval_size)
        self._heldout, (self._utility, self._same_class, self._others) = _read_once(
            [utility, same_class, others]
        )

    @classmethod
    def for_params(cls, params: StopRuleParams, context: UnlearnContext) -> Self:
        """The stop rule ``params`` name, over an unlearning context's forget and
        validation sets."""
        return cls(
            params.stop,
            forget=context.forget,
            validation=context.validation,
            eval_size=params.validation_eval_size,
            device=context.device,
            class_labels=context.class_labels,
            seed=context.seed,
            margin=params.equivalence_margin,
            margin_share=params.margin_share,
            brake=params.utility_brake,
            masked_classes=context.masked_classes,
        )

    def _logits(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        # No autograd graph: the methods' weights require gradients while they step, and a
        # check that recorded one would spend time and memory on a backward never run.
        with torch.no_grad():
            return predict(model, inputs, device=self.device)

    def measure(self, model: nn.Module) -> Measure:
        """Where ``model`` stands under the rule."""
        assert self._forget is not None
        forget_logits, forget_labels = self._logits(model, self._forget[0]), self._forget[1]
        heldout = None if self._heldout is None else self._logits(model, self._heldout)
        forget_correct = _correct(forget_logits, forget_labels)
        record = {"forget_accuracy": float(forget_correct.mean())}
        if self._utility is not None:  # the brake comes first, under every rule
            assert heldout is not None
            logits = _masked_logits(heldout[self._utility.rows], self._gone)
            utility = float((logits.argmax(1) == self._utility.labels).float().mean())
            record["remaining_accuracy"] = utility
            start = self.history[0]["remaining_accuracy"] if self.history else utility
            if start - utility > self.brake:
                return Measure(float("inf"), True, braked=True, record=record)
        if self.rule == "class":
            return self._measure_class(heldout, forget_correct, record)
        assert self._others is not None and heldout is not None
        others_logits, others_labels = heldout[self._others.rows], self._others.labels
        others_correct = _correct(others_logits, others_labels)
        if self.rule == "holdout_gap":
            validation = float(others_correct.mean())
            gap = validation - record["forget_accuracy"]
            record |= {"validation_accuracy": validation, "gap": gap}
            return Measure(abs(gap), gap > 0, record=record)
        assert self._weights is not None
        share = self._weights / self._weights.sum()
        auc, auc_variance = weighted_auc(
            _loss(forget_logits, forget_labels), _loss(others_logits, others_labels), share
        )
        validation = float((share * others_correct).sum())
        gap = record["forget_accuracy"] - validation
        effective = 1.0 / float((share**2).sum())
        gap_variance = _rate_variance(record["forget_accuracy"], len(forget_correct))
        gap_variance += _rate_variance(validation, effective)
        auc_se, gap_se = float(np.sqrt(auc_variance)), float(np.sqrt(gap_variance))
        auc_margin, gap_margin = self._margins or self._sized_margins(auc - 0.5, gap)
        # the held-out accuracy lost since the start (the same samples at every check)
        start = self.history[0]["validation_accuracy"] if self.history else validation
        drop = max(0.0, start - validation)
        record |= {
            "validation_drop": drop,
            "validation_accuracy": validation,  # D_v in D_f's class mix
            "loss_auc": auc,
            "loss_auc_se": auc_se,
            "accuracy_gap": gap,
            "accuracy_gap_se": gap_se,
            "auc_margin": auc_margin,
            "gap_margin": gap_margin,
        }
        reached = _equivalent(auc - 0.5, auc_se, auc_margin) and _equivalent(
            gap, gap_se, gap_margin
        )
        return Measure(abs(auc - 0.5) + abs(gap) + drop, reached, record=record)

    def _sized_margins(self, auc_deviation: float, gap: float) -> tuple[float, float]:
        """The margins a starting model with these deviations sets: ``margin_share`` of
        each, at most ``margin``."""
        return (
            min(self.margin, self.margin_share * abs(auc_deviation)),
            min(self.margin, self.margin_share * abs(gap)),
        )

    def _measure_class(
        self, heldout: torch.Tensor | None, forget_correct: np.ndarray, record: dict[str, float]
    ) -> Measure:
        accuracies = [record["forget_accuracy"]]
        if self._same_class is not None:  # held-out samples of the deleted classes
            assert heldout is not None
            held_out = _correct(heldout[self._same_class.rows], self._same_class.labels)
            record["heldout_class_accuracy"] = float(held_out.mean())
            accuracies.append(record["heldout_class_accuracy"])
        record["margin"] = self.margin
        return Measure(sum(accuracies), max(accuracies) <= self.margin, record=record)

    def already_reached(self, model: nn.Module) -> bool:
        """Whether ``model`` is at the target before any step (never under ``none``, nor
        under ``distribution``, whose margins the starting model sizes: its interval never
        fits inside a share of its own deviation)."""
        return self.rule != "none" and self.measure(model).reached

    def observe(self, model: nn.Module, samples: int) -> Measure:
        """Measure ``model`` after ``samples`` forget samples, keep it if it is the best.
        The first observed model is the start: the distribution rule's margins are sized
        by it, and kept for every later check."""
        result = self.measure(model)
        if not self.history and "auc_margin" in result.record:
            self._margins = (result.record["auc_margin"], result.record["gap_margin"])
        self.history.append({"samples": float(samples), **result.record})
        best = self._best[0] if self._best else float("inf")
        if not result.braked and result.distance < best:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self._best = (result.distance, len(self.history) - 1, state)
        return result

    def checks_since_best(self) -> int:
        """How many checks have passed since the kept state's (0: the last one is it)."""
        return len(self.history) - 1 - self._best[1] if self._best else len(self.history)

    def restore_best(self, model: nn.Module) -> int | None:
        """Load the kept state into ``model``; returns the index of its check."""
        if self._best is None:
            return None
        model.load_state_dict(self._best[2])
        return self._best[1]


def _equivalent(deviation: float, se: float, margin: float) -> bool:
    """Two one-sided tests: the deviation's 90% interval lies inside +-margin."""
    return abs(deviation) + EQUIVALENCE_Z * se <= margin


def unlearn_steps(
    model: nn.Module,
    batches: Iterable[Batch],
    step: Callable[[float, torch.Tensor, torch.Tensor], None],
    stopping: EarlyStopping,
    *,
    max_steps: int,
    check_every: int,
    progress: Callable[[str, int, int], None],
    patience: int = PATIENCE,
    reshuffle: bool = False,
) -> dict[str, Any]:
    """Run ``step(t, inputs, labels)`` over ``batches``, cycling through them, for at most
    ``max_steps`` steps under ``stopping``; ``t`` in [0, 1] is the share of the budget spent
    (for schedules, so they do not depend on the size of D_f). It also stops once
    ``patience`` checks in a row have come no closer to the target than the kept state.
    The batches of the first pass are kept and cycled; with ``reshuffle`` ``batches`` (a
    shuffling DataLoader) is iterated afresh for every pass, as epochs of training are.

    Returns JSON-safe facts for the job row: steps and samples run, why it stopped, which
    check's state was kept, and every check's measures (index 0 = before any step).
    """
    if check_every < 1:
        raise ValueError(f"Invalid check_every: {check_every}")
    if max_steps < 1:
        raise ValueError(f"Invalid max_steps: {max_steps}")
    if not reshuffle:
        batches = list(batches)
    checking = stopping.rule != "none"
    facts: dict[str, Any] = {"steps": 0, "samples": 0, "stopped_by": "step budget"}
    measured = stopping.observe(model, 0) if checking else None
    steps = seen = since_check = 0
    passed = True  # the last pass yielded a batch
    while passed and steps < max_steps and not (measured and measured.reached):
        passed = False
        for inputs, labels in batches:
            passed = True
            step(steps / max(1, max_steps - 1), inputs, labels)
            steps += 1
            seen += len(labels)
            since_check += len(labels)
            if checking and (since_check >= check_every or steps == max_steps):
                since_check = 0
                measured = stopping.observe(model, seen)
                progress("steps", steps, max_steps)
                if measured.reached or stopping.checks_since_best() >= patience:
                    break
            if steps == max_steps:
                break
        if checking and stopping.checks_since_best() >= patience:
            facts["stopped_by"] = f"no closer to the target in {patience} checks"
            break
    if measured is not None and measured.reached:
        facts["stopped_by"] = _reason(stopping.rule, measured)
    facts |= {"steps": steps, "samples": seen}
    if checking:
        facts |= {"kept_check": stopping.restore_best(model), "checks": stopping.history}
    return facts


def _reason(rule: str, measured: Measure) -> str:
    if measured.braked:
        return "the utility brake: held-out accuracy of the remaining classes fell too far"
    return {
        "distribution": "forget losses and accuracy equivalent to held-out data of D_f's class mix",
        "holdout_gap": "holdout gap closed",
        "class": "the deleted classes are no longer predicted (unmasked outputs)",
    }[rule]
