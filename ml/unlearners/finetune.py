"""Fine-tuning (FT): continue training the base version on the retained samples only.

Forgetting comes from catastrophic forgetting of D_f while D_r is rehearsed; the
baseline of the unlearning literature (e.g. Golatkar et al. 2020, used by ConMU/SalUn).
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from ml.training import sgd_recipe, train
from ml.unlearners.base import Need, UnlearnContext, Unlearner, UnlearnResult, state_dict_of
from ml.unlearners.registry import register_unlearner

__all__ = ["Finetune"]


class FinetuneParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    epochs: int = Field(
        2,
        ge=1,
        le=100,
        description="Passes over D_r: more forgetting and more time; never targets D_f directly.",
    )
    lr: float = Field(
        1e-2,
        gt=0,
        le=1,
        description="The SGD learning rate, constant through the run (momentum, weight decay "
        "and the recipe's data and loss options come from the model's training recipe, not "
        "its schedule): faster forgetting against damage to what D_r taught.",
    )
    batch_size: int = Field(
        128, ge=1, le=8192, description="Samples of D_r per step: speed against noise."
    )


@register_unlearner
class Finetune(Unlearner):
    name = "finetune"
    Params = FinetuneParams
    needs = frozenset({Need.RETAIN})

    def unlearn(self, context: UnlearnContext) -> UnlearnResult:
        p = self.params
        assert isinstance(p, FinetuneParams)
        recipe = sgd_recipe(
            context.training, epochs=p.epochs, lr=p.lr, batch_size=p.batch_size, seed=context.seed
        )
        started = time.perf_counter()
        train(
            context.model,
            context.retain,
            recipe,
            device=context.device,
            progress=context.progress,
            stage="fine-tuning",
        )
        info = {
            "unlearning_seconds": time.perf_counter() - started,
            "epochs": p.epochs,
            "samples": p.epochs * len(context.retain),
            "stopped_by": "epoch budget (no stop rule: nothing measures D_f)",
        }
        return UnlearnResult(
            state_dict_of(context.model), info=info, training=recipe.as_run_on(context.device)
        )
