"""RFU-SS: representation-forgetting unlearning with parameter self-sharing (Wang et al.,
"Machine Unlearning via Representation Forgetting With Parameter Self-Sharing", IEEE TIFS
2023; seed ``rfu-ss_*``). Only for networks with a variational information bottleneck
(``ml.vib``: ``vib_mlp``, ``vib_cnn``, ``torchvision`` with ``vib``).

Inputs: theta = (theta^r, theta^a), the base version; D_f; D_r; the recipe's VIB beta.
theta_fix = a frozen copy of theta. Each step (Algorithm 1) takes a mini-batch of m from
D_f and m from D_r (paper m = 100) and computes, with z_i ~ q_theta(z|x_i):

    L_u = beta_u * mean KL(q(z|x_f) || N(0, I))          erasure of I(X_e; Z)      (Eq. 8)
        + mean KL(q_fix(z|x_f) || q(z|x_f))              limitation                (Eq. 8)
        + beta_u * mean log p(y_f | z_f)                 erasure of I(Y_e; Z)      (Eq. 9)
        + mean KL(p_fix(y|z_f) || p(y|z_f))              limitation                (Eq. 9)
    L_r = mean CE(p(y_r | z_r)) + beta * mean KL(q(z|x_r) || N(0, I))   the VIB loss (Eq. 2)
    g_u, g_r = grad L_u, grad L_r (all parameters, flattened)
    alpha = clip(((g_r - g_u) . g_r) / ||g_u - g_r||^2, 0, 1)                      (Eq. 14)
    theta <- Adam step on alpha * g_u + (1 - alpha) * g_r                     (Eq. 11, line 10)

``weighting="loss_ratio"`` replaces Eq. 14 by what the authors' public code does
(github wwq5-code/RFU-SS): alpha = L_u / (L_u + L_r) on the losses' detached values. L_u
holds a log-likelihood, so it can be negative; that ratio is clipped to [0, 1] here.

Differences from the paper:
- The paper runs E epochs. Here the run is budgeted by ``epochs`` over D_f and stopped
  by the shared rule of ``ml.unlearners.early_stopping`` (default ``auto``: stop once D_f's
  losses and accuracy are equivalent to held-out data of D_f's class mix, or for class
  deletion once the unmasked outputs no longer predict the deleted classes; the best state
  kept), because the erasure term
  log p(y_f|z_f) is unbounded and running on drives D_f below held-out accuracy (the
  Streisand effect). ``stop="none"`` runs the whole budget as the paper does.
- The combined step sets the parameters' gradient to alpha g_u + (1 - alpha) g_r from the
  two backward passes already taken for Eq. 14, which is the gradient of Eq. 11's loss
  without a third backward pass.
- Adam, as in the authors' code (the paper only names a learning rate eta: 1e-3 on
  MNIST, 5e-4 with a conv representer).
- BatchNorm (absent from the paper's networks, present in a torchvision backbone's) stays
  frozen while stepping (``ml.batchnorm``): every step reads a batch of D_f, whose
  statistics train mode would fold into the published running statistics.
For class deletion, ``run_unlearner`` masks the forgotten classes, as for every method.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from torch import nn

from ml.batchnorm import train_with_frozen_batchnorm
from ml.samples import SampleSet
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
from ml.vib import VariationalBottleneck, gaussian_kl, prior_kl, vib_loss

__all__ = ["RFUSS", "RFUSSParams", "closed_form_alpha", "forget_loss", "loss_ratio_alpha"]

Weighting = Literal["closed_form", "loss_ratio"]


class RFUSSParams(StopRuleParams):
    model_config = ConfigDict(extra="forbid", strict=True)
    epochs: int = Field(
        30,
        ge=1,
        le=1000,
        description="Passes over D_f: the budget (the paper runs E epochs); a stop rule may "
        "end the run sooner.",
    )
    lr: float = Field(
        1e-3,
        gt=0,
        le=1,
        description="Adam's learning rate (the paper's eta: 1e-3 on MNIST, 5e-4 with a conv "
        "representer): speed against noise.",
    )
    batch_size: int = Field(
        100,
        ge=1,
        le=8192,
        description="m, the samples taken from D_f and from D_r alike for each step (paper: 100).",
    )
    unlearning_rate: float = Field(
        0.1,
        ge=0,
        le=100,
        description="beta_u, the weight of the erasure terms against the limitation terms "
        "(paper: 0.1): more forgetting per step, more damage.",
    )
    weighting: Weighting = Field(
        "closed_form",
        description="How alpha mixes the two gradients. `closed_form`: the paper's Eq. 14, "
        "the min-norm (MGDA) mix, which descends both losses; `loss_ratio`: the authors' "
        "public code, alpha = L_u / (L_u + L_r), which forgets much faster and protects "
        "D_r less.",
    )


def _flat(
    gradients: tuple[torch.Tensor | None, ...], parameters: list[nn.Parameter]
) -> torch.Tensor:
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(gradients, parameters, strict=True)
        ]
    )


def closed_form_alpha(forget_gradient: torch.Tensor, remember_gradient: torch.Tensor) -> float:
    """Eq. 14: the alpha in [0, 1] minimising ||alpha g_u + (1 - alpha) g_r||^2 (the
    two-task MGDA step); 0.5 when the two gradients are equal (any alpha is a minimum)."""
    difference = forget_gradient.double() - remember_gradient.double()
    denominator = float(difference.dot(difference))
    if denominator == 0.0:
        return 0.5
    return min(1.0, max(0.0, float(-difference.dot(remember_gradient.double())) / denominator))


def loss_ratio_alpha(forget: float, remember: float) -> float:
    """The authors' code: alpha = L_u / (L_u + L_r), clipped to [0, 1] (L_u may be < 0)."""
    total = forget + remember
    return 0.5 if total == 0.0 else min(1.0, max(0.0, forget / total))


def forget_loss(
    model: VariationalBottleneck,
    fixed: VariationalBottleneck,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    unlearning_rate: float,
) -> torch.Tensor:
    """L_u of Algorithm 1, lines 6-7 (Eqs. 8 and 9 per sample), on one batch of D_f."""
    mean, std = model.encode(inputs)
    with torch.no_grad():
        fixed_mean, fixed_std = fixed.encode(inputs)
    z = model.sample(mean, std)
    log_p = F.log_softmax(model.approximator(z), dim=1)
    with torch.no_grad():
        fixed_log_p = F.log_softmax(fixed.approximator(z), dim=1)
    representation = (
        unlearning_rate * prior_kl(mean, std).mean()
        + gaussian_kl(fixed_mean, fixed_std, mean, std).mean()
    )
    approximation = unlearning_rate * log_p.gather(1, labels[:, None]).mean() + F.kl_div(
        log_p, fixed_log_p, log_target=True, reduction="batchmean"
    )
    return representation + approximation


def _batches_forever(
    samples: SampleSet, batch_size: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled mini-batches of ``samples``, reshuffled each pass; read at the first batch."""
    for epoch in itertools.count():
        yield from samples.loader(batch_size, shuffle=True, seed=seed + epoch)


@register_unlearner
class RFUSS(Unlearner):
    name = "rfu_ss"
    Params = RFUSSParams
    needs = frozenset({Need.RETAIN, Need.VALIDATION})

    @classmethod
    def unsuitable_for(cls, network: nn.Module) -> str | None:
        if isinstance(network, VariationalBottleneck):
            return None
        return (
            "RFU-SS forgets the representation of a variational information bottleneck "
            "(a representer giving the mean and variance of z, an approximator from z to "
            "the classes) and this network has none; choose a bottleneck architecture "
            "(vib_mlp, vib_cnn, or torchvision with a vib head)"
        )

    def unlearn(self, context: UnlearnContext) -> UnlearnResult:
        p = self.params
        assert isinstance(p, RFUSSParams)
        model, device = context.model, context.device
        reason = self.unsuitable_for(model)
        if reason is not None:
            raise ValueError(reason)
        assert isinstance(model, VariationalBottleneck)
        started = time.perf_counter()
        fixed = copy.deepcopy(model).eval().requires_grad_(False)
        stopping = EarlyStopping.for_params(p, context)
        parameters = [q for q in model.parameters() if q.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=p.lr)
        beta = context.training.beta
        alphas: list[float] = []
        remembered = _batches_forever(context.retain, p.batch_size, context.seed + 1)

        def step(spent: float, inputs: torch.Tensor, labels: torch.Tensor) -> None:
            retain_inputs, retain_labels = next(remembered)
            train_with_frozen_batchnorm(model)  # half of every step's inputs are D_f's
            forget = forget_loss(
                model, fixed, inputs.to(device), labels.to(device), p.unlearning_rate
            )
            remember = vib_loss(model, retain_inputs.to(device), retain_labels.to(device), beta)
            g_u = _flat(torch.autograd.grad(forget, parameters, allow_unused=True), parameters)
            g_r = _flat(torch.autograd.grad(remember, parameters, allow_unused=True), parameters)
            if p.weighting == "closed_form":
                alpha = closed_form_alpha(g_u, g_r)
            else:
                alpha = loss_ratio_alpha(forget.item(), remember.item())
            alphas.append(alpha)
            combined = alpha * g_u + (1.0 - alpha) * g_r
            offset = 0
            for parameter in parameters:
                size = parameter.numel()
                parameter.grad = combined[offset : offset + size].view_as(parameter).clone()
                offset += size
            optimizer.step()
            model.eval()

        facts: dict[str, Any] = {"steps": 0, "stopped_by": "empty forget set"}
        if len(context.forget) and len(context.retain):
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
        raise_if_diverged(model, "RFU-SS", lr=p.lr)
        info = {
            "unlearning_seconds": time.perf_counter() - started,
            "weighting": p.weighting,
            "alpha_mean": sum(alphas) / len(alphas) if alphas else None,
            "alpha_range": [min(alphas), max(alphas)] if alphas else None,
            **facts,
        }
        return UnlearnResult(state_dict_of(model), info=info)
