"""Exact unlearning: train a fresh model from scratch on the retained samples D_r.

The gold reference every other method is measured against, and the slowest.
"""

from __future__ import annotations

import time

from ml.training import train
from ml.unlearners.base import Need, UnlearnContext, Unlearner, UnlearnResult, state_dict_of
from ml.unlearners.registry import register_unlearner

__all__ = ["Retrain"]


@register_unlearner
class Retrain(Unlearner):
    name = "retrain"
    needs = frozenset({Need.RETAIN})

    def unlearn(self, context: UnlearnContext) -> UnlearnResult:
        started = time.perf_counter()
        model = context.build_model()
        train(
            model,
            context.retain,
            context.training,
            device=context.device,
            progress=context.progress,
            stage="retraining",
        )
        info = {
            "unlearning_seconds": time.perf_counter() - started,
            "epochs": context.training.epochs,
            "samples": context.training.epochs * len(context.retain),
        }
        return UnlearnResult(
            state_dict_of(model), info=info, training=context.training.as_run_on(context.device)
        )
