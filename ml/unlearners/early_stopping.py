"""When to stop unlearning by ascent on the forget set, shared by PGU and gradient ascent.

Rules (PGU section 3.2.3 and the authors' code), checked before the first epoch and after
every epoch on fixed random subsets (at most ``eval_size`` samples) of D_f and D_v, so
evaluation stays cheap however large the holdout is:

- ``holdout_gap`` (random deletion): gap = holdout accuracy - forget accuracy. Stop at
  the first positive gap and keep whichever of the last two models has the smaller |gap|:
  forgotten samples should look like unseen ones, not worse (driving forget accuracy to 0
  is the Streisand effect an attacker detects). A gap already positive before the first
  epoch leaves the model as it is (the authors' code exits there too).
- ``class`` (class deletion): stop once the forget accuracy is at or below chance
  (1 / number of outputs), measured on the unmasked logits. As a guard, also stop if the
  accuracy on holdout samples of the remaining classes has fallen more than 5 points
  since the start, keeping the model before that epoch. (The authors stop on the 5-point
  drop alone and keep the model that dropped; we stop on the target and use the drop only
  as a brake, and never publish a model past it.)
- ``none``: run the whole epoch cap.
- ``auto``: ``class`` when the batch deletes classes, else ``holdout_gap``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Self

import torch
from torch import nn

from ml.samples import SampleSet
from ml.training import predict

if TYPE_CHECKING:
    from ml.unlearners.base import UnlearnContext

__all__ = ["StopRule", "resolve_rule", "EarlyStopping", "Verdict", "unlearn_epochs"]

StopRule = Literal["auto", "holdout_gap", "class", "none"]
CLASS_RETAIN_DROP = 0.05  # the authors' class-deletion threshold (5 points)


def resolve_rule(rule: StopRule, class_labels: list[int] | None) -> str:
    if rule == "auto":
        return "class" if class_labels else "holdout_gap"
    if rule == "class" and not class_labels:
        raise ValueError("the 'class' stop rule needs a class deletion (class_labels)")
    return rule


@dataclass(frozen=True)
class Verdict:
    stop: bool
    keep_previous: bool = False
    reason: str = ""


Batch = tuple[torch.Tensor, torch.Tensor]


def _evaluate(model: nn.Module, data: Batch, device: torch.device) -> tuple[float, int]:
    """(top-1 accuracy, number of outputs) of ``model`` on (inputs, labels)."""
    inputs, labels = data
    logits = predict(model, inputs, device=device)
    return (logits.argmax(1) == labels).float().mean().item(), logits.shape[1]


class EarlyStopping:
    def __init__(
        self,
        rule: StopRule,
        *,
        forget: SampleSet,
        holdout: SampleSet,
        eval_size: int,
        device: torch.device,
        class_labels: list[int] | None = None,
        seed: int = 0,
    ) -> None:
        self.rule = resolve_rule(rule, class_labels)
        self.device = device
        self.history: list[dict[str, float]] = []
        self._forget: Batch | None = None
        self._holdout: Batch | None = None
        if self.rule == "none":
            return  # reads nothing
        self._forget = forget.subset(eval_size, seed=seed).tensors()
        if self.rule == "class":
            holdout = holdout.without_classes(class_labels or [])
        elif not len(holdout):
            raise ValueError("the 'holdout_gap' stop rule needs holdout samples")
        if len(holdout):
            self._holdout = holdout.subset(eval_size, seed=seed).tensors()

    @classmethod
    def for_context(cls, rule: StopRule, context: UnlearnContext, *, eval_size: int) -> Self:
        """The stop rule over an unlearning context's forget and holdout sets."""
        return cls(
            rule,
            forget=context.forget,
            holdout=context.holdout,
            eval_size=eval_size,
            device=context.device,
            class_labels=context.class_labels,
            seed=context.seed,
        )

    def check(self, model: nn.Module) -> Verdict:
        """Evaluate ``model`` (now the newest of the history) and decide."""
        if self._forget is None:  # the "none" rule
            return Verdict(False)
        forget, outputs = _evaluate(model, self._forget, self.device)
        holdout = _evaluate(model, self._holdout, self.device)[0] if self._holdout else None
        record = {"forget_accuracy": forget}
        if holdout is not None:
            record |= {"holdout_accuracy": holdout, "gap": holdout - forget}
        self.history.append(record)
        if self.rule == "holdout_gap":
            if record["gap"] <= 0:
                return Verdict(False)
            if len(self.history) == 1:
                return Verdict(True, reason="forget accuracy already at holdout accuracy")
            closer_before = abs(self.history[-2]["gap"]) < abs(record["gap"])
            return Verdict(True, keep_previous=closer_before, reason="holdout gap closed")
        if forget <= 1.0 / outputs:
            return Verdict(True, reason="forget accuracy at chance")
        if holdout is not None:
            start = self.history[0]["holdout_accuracy"]
            if start - holdout > CLASS_RETAIN_DROP:
                return Verdict(
                    True,
                    keep_previous=len(self.history) > 1,
                    reason="remaining-class holdout accuracy fell more than 5 points",
                )
        return Verdict(False)


def unlearn_epochs(
    model: nn.Module,
    train_epoch: Callable[[int], None],
    stopping: EarlyStopping,
    *,
    max_epochs: int,
    progress: Callable[[str, int, int], None],
) -> dict[str, Any]:
    """Run ``train_epoch(epoch)`` up to ``max_epochs`` times under ``stopping``.

    Returns JSON-safe facts for the job row: epochs run, the epoch whose weights were
    kept, why it stopped, and the accuracies seen after each epoch (index 0 = before).
    """
    verdict = stopping.check(model)
    epochs = kept = 0
    while not verdict.stop and epochs < max_epochs:
        previous = None
        if stopping.rule != "none":
            previous = {k: v.detach().clone() for k, v in model.state_dict().items()}
        train_epoch(epochs)
        epochs = kept = epochs + 1
        progress("epoch", epochs, max_epochs)
        verdict = stopping.check(model)
        if verdict.stop and verdict.keep_previous and previous is not None:
            model.load_state_dict(previous)
            kept = epochs - 1
    return {
        "epochs": epochs,
        "kept_epoch": kept,
        "stopped_by": verdict.reason or "epoch cap",
        "stop_history": stopping.history,
    }
