"""Gradient ascent (GA): climb the cross-entropy of the forget set D_f.

For epoch e < epochs and each mini-batch of D_f:
    theta <- theta + lr * clip(grad_theta CE(f_theta(x_f), y_f), max_grad_norm)
with plain SGD over every parameter, so the model unlearns D_f by making its own
predictions on D_f worse; nothing protects D_r, which is why it is a baseline
(Thudi et al. 2022; Jia et al. 2023 "SalUn" list it among the standard ones).

The ascent is unbounded (CE grows without limit as p_y -> 0), so each step's gradient
is clipped to ``max_grad_norm`` (global L2 norm), and weights that still turn non-finite
fail the job instead of being published.

It reads D_f and, for the optional early stop, a fixed sample of the validation set D_v:
the same rules as PGU (``ml.unlearners.early_stopping``: stop once D_f's losses and
accuracy are equivalent to held-out data of D_f's class mix, or, for class deletion, once
the unmasked outputs no longer predict the deleted classes, braked by the remaining
classes' accuracy; checked every ``check_every`` forget samples, the best state kept),
without which GA runs on to destroy the model.
For class deletion, ``run_unlearner`` masks the forgotten classes in the published weights
(``ml.class_masking``), as for every method.

Deviation: the ascent runs in train mode with BatchNorm frozen (``ml.batchnorm``). The
usual implementations (e.g. SalUn's) ascend in plain train mode, which normalises by the
forget batch's statistics and folds them into the running ones: the published model would
carry D_f's statistics, for a class deletion one class's in place of all.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field

from ml.batchnorm import train_with_frozen_batchnorm
from ml.unlearners.base import (
    Need,
    UnlearnContext,
    Unlearner,
    UnlearnResult,
    raise_if_diverged,
    state_dict_of,
)
from ml.unlearners.early_stopping import EarlyStopping, StopRuleParams, unlearn_steps
from ml.unlearners.registry import register_unlearner

__all__ = ["GradientAscent", "GradientAscentParams"]


class GradientAscentParams(StopRuleParams):
    model_config = ConfigDict(extra="forbid", strict=True)
    epochs: int = Field(
        10, ge=1, le=1000, description="Passes over D_f: the budget when a stop rule is on."
    )
    lr: float = Field(
        1e-2,
        gt=0,
        le=10,
        description="The ascent's SGD step: speed against overshoot (the kept state limits "
        "the damage).",
    )
    batch_size: int = Field(64, ge=1, le=8192, description="Forget samples per step.")
    max_grad_norm: float = Field(
        1.0,
        gt=0,
        le=1e6,
        description="Each step's gradient is clipped to this global L2 norm: the ascent's "
        "gradients grow without bound as p_y -> 0.",
    )


@register_unlearner
class GradientAscent(Unlearner):
    name = "gradient_ascent"
    Params = GradientAscentParams
    needs = frozenset({Need.VALIDATION})

    def unlearn(self, context: UnlearnContext) -> UnlearnResult:
        p = self.params
        assert isinstance(p, GradientAscentParams)
        started = time.perf_counter()
        model, device = context.model, context.device
        stopping = EarlyStopping.for_params(p, context)
        optimizer = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=0.0)

        def step(spent: float, inputs: torch.Tensor, labels: torch.Tensor) -> None:
            train_with_frozen_batchnorm(model)  # D_f's statistics stay out of BatchNorm's
            optimizer.zero_grad(set_to_none=True)
            ascent = -F.cross_entropy(model(inputs.to(device)), labels.to(device))
            ascent.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), p.max_grad_norm)
            optimizer.step()
            model.eval()

        facts: dict[str, Any] = {"steps": 0, "stopped_by": "empty forget set"}
        if len(context.forget):
            loader = context.forget.loader(p.batch_size, shuffle=True, seed=context.seed)
            facts = unlearn_steps(
                model,
                loader,
                step,
                stopping,
                max_steps=p.epochs * len(loader),
                check_every=p.check_every,
                progress=context.progress,
            )
        raise_if_diverged(model, "gradient ascent", lr=p.lr)
        info = {"unlearning_seconds": time.perf_counter() - started, **facts}
        return UnlearnResult(state_dict_of(model), info=info)
