"""Random labels (RandL): relabel the forget set at random and fine-tune on it with D_r.

Each forget sample (x, y) gets a fixed random wrong label y' != y (never a forgotten class
in a class deletion); the model is then fine-tuned with cross-entropy on
D_f' U D_r, shuffled together:
    for epoch e < epochs: theta <- SGD step on CE over mini-batches of D_f' U D_r
so it unlearns the forget labels while rehearsing the retained data (Golatkar et al. 2020;
the "RL" baseline of Jia et al. 2023, SalUn). It reads all of D_r, like fine-tuning.
Optimiser settings other than lr, epochs and batch size come from the model's training
recipe, with its augmentation, label smoothing, clipping and precision but not its
schedule, as in ``finetune`` (``ml.training.sgd_recipe``). For class deletion,
``run_unlearner`` masks the forgotten classes in the published weights
(``ml.class_masking``), as for every method.
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ml.samples import SampleSet
from ml.training import sgd_recipe, train
from ml.unlearners.base import Need, UnlearnContext, Unlearner, UnlearnResult, state_dict_of
from ml.unlearners.registry import register_unlearner

__all__ = ["RandomLabels", "RandomLabelsParams", "random_wrong_labels"]


class RandomLabelsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    epochs: int = Field(
        2,
        ge=1,
        le=100,
        description="Passes over D_f' U D_r: forgetting against time (each reads all of D_r).",
    )
    lr: float = Field(
        1e-2,
        gt=0,
        le=1,
        description="The SGD learning rate, constant through the run (momentum, weight decay "
        "and the recipe's data and loss options come from the model's training recipe, not "
        "its schedule).",
    )
    batch_size: int = Field(128, ge=1, le=8192, description="Samples per step.")


def random_wrong_labels(
    labels: np.ndarray, num_classes: int, *, excluded: list[int], seed: int
) -> np.ndarray:
    """For every label y, one label drawn uniformly from the classes not y nor excluded."""
    rng = np.random.default_rng(seed)
    drawn = np.empty_like(labels)
    for i, label in enumerate(labels):
        allowed = [c for c in range(num_classes) if c != label and c not in excluded]
        if not allowed:
            raise ValueError("no class is left to relabel a forget sample with")
        drawn[i] = rng.choice(allowed)
    return drawn


@register_unlearner
class RandomLabels(Unlearner):
    name = "random_labels"
    Params = RandomLabelsParams
    needs = frozenset({Need.RETAIN})

    def unlearn(self, context: UnlearnContext) -> UnlearnResult:
        p = self.params
        assert isinstance(p, RandomLabelsParams)
        started = time.perf_counter()
        forget, retain = context.forget, context.retain
        if forget.adapter is not retain.adapter:
            raise ValueError("random_labels needs D_f and D_r from the same dataset adapter")
        relabelled = random_wrong_labels(
            forget.labels,
            forget.adapter.index().num_classes,
            excluded=context.class_labels or [],
            seed=context.seed,
        )
        mixed = SampleSet(
            forget.adapter,
            np.concatenate([forget.positions, retain.positions]),
            np.concatenate([relabelled, retain.labels]).astype(np.int64),
            forget.keys + retain.keys,
        )
        recipe = sgd_recipe(
            context.training, epochs=p.epochs, lr=p.lr, batch_size=p.batch_size, seed=context.seed
        )
        train(
            context.model,
            mixed,
            recipe,
            device=context.device,
            progress=context.progress,
            stage="epoch",
        )
        info = {
            "unlearning_seconds": time.perf_counter() - started,
            "epochs": p.epochs,
            "samples": p.epochs * len(mixed),
        }
        return UnlearnResult(
            state_dict_of(context.model), info=info, training=recipe.as_run_on(context.device)
        )
