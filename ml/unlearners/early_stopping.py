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

- ``distribution`` (random deletion; the default): two measures of D_f against D_v, both
  restricted to the classes D_f holds. The loss-attack AUC, P(loss on a forget sample <
  loss on a held-out one): a retrained model scores 0.5 up to sampling noise, the original
  model more; its band is one standard error of the Mann-Whitney statistic under "no
  difference", sqrt((n_f + n_v + 1) / (12 n_f n_v)) for the two subsets measured. And the
  accuracy gap, accuracy on D_f - accuracy on D_v: about 0 for a retrained model. The
  target is reached once the AUC is within its band of 0.5 *and* D_f is no better
  classified than D_v; the first such state is kept: closer than the noise no test can
  tell apart, and driving further only forgets more than a retrained model would (on a
  forget set that happens to be easy, a retrained model itself scores above 0.5 by about
  that much). The AUC matches the whole distribution of confidences, where accuracy alone
  stops while the outputs are still too sure or already too flat; the accuracy gap
  catches the case the AUC misses, a well-generalising model whose forget losses already
  rank like held-out ones in bulk while a few more points of D_f sit on the right side of
  the boundary (what the UA and LiRA audits see; ``docs/benchmarks.md``, "Notes from
  development runs", has the run that showed it). Each measure counts toward the distance
  only outside its band: the AUC's around 0.5, the accuracy gap's from minus one binomial
  standard error of the difference up to 0; so a state that overshoots either one is not
  kept over an earlier one that did not.
- ``holdout_gap`` (the PGU authors' rule): gap = accuracy on D_v - accuracy on D_f; stop at
  the first positive gap; keep the state with the smallest |gap|.
- ``class`` (class deletion): the published model masks the deleted classes, so the rule
  reads the outputs over the remaining classes only, as the audit does. The target is
  like-for-like: D_f against held-out samples *of the same classes*, ranked by the masked
  loss (log-sum-exp of the remaining logits, the loss attack's ranking on a masked model);
  a retrained model never saw the class, so its AUC is 0.5, and the band around it is the
  same as the distribution rule's. The brake comes first: a state
  whose accuracy on held-out samples of the remaining classes (masked outputs) has fallen
  more than 5 points below the start ends the run and is never kept.
- ``none``: run the whole budget, keep the last state.
- ``auto``: ``class`` when the batch deletes classes, else ``distribution``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
import torch
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from sklearn.metrics import roc_auc_score
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
    "unlearn_steps",
]

StopRule = Literal["auto", "distribution", "holdout_gap", "class", "none"]
CLASS_RETAIN_DROP = 0.05  # the PGU authors' class-deletion threshold (5 points)
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


def _auc_lower_first(first: np.ndarray, second: np.ndarray) -> float:
    """P(a value of ``first`` < a value of ``second``), ties 1/2 (0.5 when one is empty)."""
    if not len(first) or not len(second):
        return 0.5
    labels = np.r_[np.ones(len(first)), np.zeros(len(second))]
    return float(roc_auc_score(labels, -np.r_[first, second]))


def _chance_band(first: int, second: int) -> float:
    """One standard error of the Mann-Whitney AUC of two samples of these sizes drawn from
    one distribution (Hanley & McNeil 1982 at AUC = 0.5)."""
    if not first or not second:
        return 0.0
    return float(np.sqrt((first + second + 1) / (12 * first * second)))


def _gap_band(accuracy: float, first: int, second: int) -> float:
    """One standard error of the difference of two accuracies of these sample sizes when
    both have the rate ``accuracy`` (binomial), at least one sample's worth."""
    if not first or not second:
        return 0.0
    spread = float(np.sqrt(accuracy * (1 - accuracy) * (1 / first + 1 / second)))
    return max(spread, 1 / min(first, second))


def _towards_chance(auc: float, band: float) -> Measure:
    """How far an AUC is from chance, counting the band as there: the first state inside
    it has distance 0 and stays kept."""
    return Measure(max(0.0, abs(auc - 0.5) - band), auc <= 0.5 + band)


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.cross_entropy(logits.double(), labels, reduction="none").numpy()


def _masked_logits(logits: torch.Tensor, classes: list[int]) -> torch.Tensor:
    masked = logits.double().clone()
    masked[:, classes] = float("-inf")
    return masked


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
    ) -> None:
        self.rule = resolve_rule(rule, class_labels)
        self.device = device
        self.classes = sorted(class_labels or [])
        self.history: list[dict[str, float]] = []
        self._best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        self._forget: Batch | None = None
        self._same_class: Batch | None = None  # class rule: held out, of the deleted classes
        self._others: Batch | None = None  # held out, of the classes D_f holds / remaining
        if self.rule == "none":
            return  # reads nothing
        self._forget = forget.subset(eval_size, seed=seed).tensors()
        if self.rule == "class":
            same = validation.take(np.flatnonzero(np.isin(validation.labels, self.classes)))
            others = validation.without_classes(self.classes)
            self._same_class = same.subset(eval_size, seed=seed).tensors() if len(same) else None
        else:
            others = validation.take(np.flatnonzero(np.isin(validation.labels, forget.labels)))
            if not len(others):
                raise ValueError(f"the {self.rule!r} stop rule needs held-out samples")
        if len(others):
            self._others = others.subset(eval_size, seed=seed).tensors()

    @classmethod
    def for_context(cls, rule: StopRule, context: UnlearnContext, *, eval_size: int) -> Self:
        """The stop rule over an unlearning context's forget and validation sets."""
        return cls(
            rule,
            forget=context.forget,
            validation=context.validation,
            eval_size=eval_size,
            device=context.device,
            class_labels=context.class_labels,
            seed=context.seed,
        )

    def _logits(self, model: nn.Module, data: Batch) -> torch.Tensor:
        return predict(model, data[0], device=self.device)

    def measure(self, model: nn.Module) -> Measure:
        """Where ``model`` stands under the rule."""
        assert self._forget is not None
        forget_logits, forget_labels = self._logits(model, self._forget), self._forget[1]
        record = {
            "forget_accuracy": float((forget_logits.argmax(1) == forget_labels).float().mean())
        }
        if self.rule == "class":
            return self._measure_class(model, forget_logits, record)
        assert self._others is not None
        others_logits, others_labels = self._logits(model, self._others), self._others[1]
        validation = float((others_logits.argmax(1) == others_labels).float().mean())
        record["validation_accuracy"] = validation
        if self.rule == "holdout_gap":
            gap = validation - record["forget_accuracy"]
            record["gap"] = gap
            return Measure(abs(gap), gap > 0, record=record)
        auc = _auc_lower_first(
            _loss(forget_logits, forget_labels), _loss(others_logits, others_labels)
        )
        band = _chance_band(len(forget_labels), len(others_labels))
        excess = record["forget_accuracy"] - validation  # a retrained model: about 0
        excess_band = _gap_band(validation, len(forget_labels), len(others_labels))
        record |= {"loss_auc": auc, "band": band}
        record |= {"accuracy_excess": excess, "excess_band": excess_band}
        by_auc = _towards_chance(auc, band)
        distance = by_auc.distance + max(0.0, excess) + max(0.0, -excess - excess_band)
        return Measure(distance, by_auc.reached and excess <= 0.0, record=record)

    def _measure_class(
        self, model: nn.Module, forget_logits: torch.Tensor, record: dict[str, float]
    ) -> Measure:
        if self._others is not None:
            logits = _masked_logits(self._logits(model, self._others), self.classes)
            accuracy = float((logits.argmax(1) == self._others[1]).float().mean())
            record["remaining_accuracy"] = accuracy
            start = self.history[0]["remaining_accuracy"] if self.history else accuracy
            if start - accuracy > CLASS_RETAIN_DROP:
                return Measure(float("inf"), True, braked=True, record=record)
        if self._same_class is None:  # nothing to compare D_f with: the masking is all
            return Measure(0.0, True, record=record)
        masked_loss = torch.logsumexp(_masked_logits(forget_logits, self.classes), dim=1).numpy()
        held_out = _masked_logits(self._logits(model, self._same_class), self.classes)
        auc = _auc_lower_first(masked_loss, torch.logsumexp(held_out, dim=1).numpy())
        band = _chance_band(len(masked_loss), len(held_out))
        record |= {"masked_loss_auc": auc, "band": band}
        return dataclasses.replace(_towards_chance(auc, band), record=record)

    def already_reached(self, model: nn.Module) -> bool:
        """Whether ``model`` is at the target before any step (never under ``none``)."""
        return self.rule != "none" and self.measure(model).reached

    def observe(self, model: nn.Module, samples: int) -> Measure:
        """Measure ``model`` after ``samples`` forget samples, keep it if it is the best."""
        result = self.measure(model)
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
) -> dict[str, Any]:
    """Run ``step(t, inputs, labels)`` over ``batches``, cycling through them, for at most
    ``max_steps`` steps under ``stopping``; ``t`` in [0, 1] is the share of the budget spent
    (for schedules, so they do not depend on the size of D_f). It also stops once
    ``patience`` checks in a row have come no closer to the target than the kept state.

    Returns JSON-safe facts for the job row: steps and samples run, why it stopped, which
    check's state was kept, and every check's measures (index 0 = before any step).
    """
    if check_every < 1:
        raise ValueError(f"Invalid check_every: {check_every}")
    if max_steps < 1:
        raise ValueError(f"Invalid max_steps: {max_steps}")
    batches = list(batches)
    checking = stopping.rule != "none"
    facts: dict[str, Any] = {"steps": 0, "samples": 0, "stopped_by": "step budget"}
    measured = stopping.observe(model, 0) if checking else None
    steps = seen = since_check = 0
    while batches and steps < max_steps and not (measured and measured.reached):
        for inputs, labels in batches:
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
        return "remaining-class accuracy fell more than 5 points"
    return {
        "distribution": "forget losses and accuracy look held out",
        "holdout_gap": "holdout gap closed",
        "class": "forget outputs look like held-out samples of the class",
    }[rule]
