"""DAU: Discriminative Adversarial Unlearning, a min-max game between an attacker and the
model (Sharma, Zhou, Ji and Chen 2024, "Discriminative Adversarial Unlearning"; seed
``dau_*``).

The attacker A is a membership-inference model in the style of Yuan & Zhang (2022). For a
sample (x, y) it reads the informed input D(x)' = [D(x), Delta(x), y] (section 3.1):

- D(x), the defender's softmax output;
- Delta(x) = 1/n sum_i |D(x) - D(x + eps_i)|, eps_i ~ N(0, noise_std^2 I), n = 10, the
  sensitivity to input perturbations;
- y, the one-hot label;

encodes it with a fully connected layer, runs a small transformer encoder (self-attention,
3 layers, 4 heads) and ends in one membership score. Its objective (the log-likelihood)
    L_A = E_{x_f in D_f, x_v in D_v} [log A(D(x_f)') + log(1 - A(D(x_v)'))]
calls D_f members and held-out samples non-members. The paper's D_v is here the shadow set
(``Need.SHADOW``), held-out samples disjoint from the stop rule's D_v and from the audit's
non-members: the attacker is never fitted on what judges the result.

The defender D (the model being unlearned), D = D_fc(D_enc(.)), minimises eq. 3:
    L_D + alpha L_A + beta V_ss,
    L_D = CE on a batch of D_r (keep the task),
    V_ss = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2 (Barlow Twins, eq. 2),
with C the cross-correlation, over the batch, between the mean-centred encoder features
(``ml.features``) of a D_f batch and a shadow batch; minimising alpha L_A makes the forget
samples' outputs look held out to the current attacker.

Algorithm 1, per iteration: draw a batch of D_f, of the shadow set and of D_r; one attacker
step up L_A (Adam, ``attacker_lr``), then one defender step down eq. 3 (SGD, ``lr``).
Before the
game the attacker is pre-trained (section 4.2, "Training Adjustments") for
``attacker_pretrain_steps`` steps on the original model's outputs, members drawn from
D = D_f U D_r, non-members from the shadow set; in class deletion alpha drops to 0 after
``class_alpha_iterations`` iterations (the paper's 30).

Parameters: see ``DAUParams``; the paper's defaults are kept except where noted below, and
each field's description names the paper's value.

Choices where the paper is silent (also in ``docs/unlearners.md``):

- Tokens. "FC, then self-attention" needs a sequence: the attacker sees one token per
  class k, (D(x)_k, Delta(x)_k, y_k), embedded by the FC layer, plus a learned embedding
  of k (the class is the token's position); the encoder's outputs are mean-pooled into
  the score. Delta's norm is taken per class, i.e. the absolute difference.
- Batches: L_A is estimated on mini-batches of ``batch_size`` forget and held-out samples
  (the paper's 1/B sum), not the whole sets; the Barlow Twins pairs are the i-th forget
  and the i-th held-out sample of the two batches, as drawn.
- Optimisers: plain SGD for the defender (Algorithm 1's update), Adam for the attacker;
  transformer width 32 with feed-forward 64 and no dropout.
- Pre-training reads the attacker's inputs once (the defender is frozen then, so one noise
  draw per sample); the pool is at most ``validation_eval_size`` samples of D_f and of the
  shadow set, and as many of D_r as of the shadow set.

Deviations:

- Every forward pass of the defender runs in eval mode: BatchNorm keeps the base model's
  statistics and dropout is off. In train mode the ten noisy copies per sample behind
  Delta(x) would move BatchNorm's running statistics (their running variance grew about 6x
  in a check), corrupting a BatchNorm network such as a ResNet; gradients flow the same.

- Each defender step is clipped to ``max_grad_norm`` (global L2), as gradient ascent's:
  the defender's share of L_A is unbounded below (log A -> -inf), and clipping bounds
  what one step against a sharp attacker can do to the retained accuracy.
- 200 attacker pre-training steps by default, not 1000: the attacker here is small and
  its inputs are fixed during pre-training, and on small data 1000 steps cost more than
  the game itself (``docs/benchmarks.md``, "Notes from development runs";
  ``attacker_pretrain_steps=1000`` restores the paper's).
- The paper runs a fixed number of iterations. Here the game also stops under the shared
  rules of ``ml.unlearners.early_stopping`` (by default once D_f's losses and accuracy are
  equivalent to held-out data of D_f's class mix; for class deletion, once the unmasked
  outputs no longer predict the deleted classes), checked every ``check_every`` forget
  samples, keeping the state closest to the target; ``stop="none"`` runs the paper's fixed
  budget. When D_f already sits at the rule's target (the class rule's; the distribution
  rule's starting model never does), the base weights come back at once, before the
  attacker is pre-trained.

``info`` reports the attacker's balanced accuracy on fixed subsets of D_f vs D_v (which
it never fitted on) before and after the game. For class deletion, ``run_unlearner`` masks
the forgotten classes (``ml.class_masking``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Self

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, model_validator
from torch import nn
from torch.utils.data import DataLoader

from ml.features import logits_and_features
from ml.samples import SampleSet
from ml.unlearners.base import (
    Need,
    UnlearnContext,
    Unlearner,
    UnlearnResult,
    raise_if_diverged,
    state_dict_of,
    unchanged,
)
from ml.unlearners.early_stopping import EarlyStopping, StopRuleParams, unlearn_steps
from ml.unlearners.registry import register_unlearner

__all__ = [
    "DAU",
    "DAUParams",
    "Attacker",
    "attacker_inputs",
    "attacker_log_likelihood",
    "barlow_twins",
]

Batch = tuple[torch.Tensor, torch.Tensor]


class DAUParams(StopRuleParams):
    model_config = ConfigDict(extra="forbid", strict=True)
    alpha: float = Field(
        0.9,
        ge=0,
        le=100,
        description="Weight of the attacker's objective L_A (paper: 0.9): forgetting "
        "pressure against retained accuracy.",
    )
    beta: float = Field(
        1e-3,
        ge=0,
        le=100,
        description="Weight of the Barlow Twins term V_ss (paper: 0.001): feature-level "
        "forgetting (higher UA and MIA-efficacy in the paper's ablation) against accuracy "
        "and time.",
    )
    redundancy: float = Field(
        5e-3,
        ge=0,
        le=10,
        description="lambda, the weight of V_ss's off-diagonal correlations (paper: 0.005, "
        "from Barlow Twins).",
    )
    lr: float = Field(
        1e-2,
        gt=0,
        le=1,
        description="eta_D, the defender's SGD step (paper: 0.01 for random deletion, 0.02 "
        "for classes).",
    )
    attacker_lr: float = Field(1e-3, gt=0, le=1, description="eta_A, the attacker's Adam step.")
    max_grad_norm: float = Field(
        1.0,
        gt=0,
        le=1e6,
        description="Each defender step is clipped to this global L2 norm.",
    )
    iterations: int = Field(
        100,
        ge=1,
        le=100_000,
        description="The budget of game iterations (one forget batch each).",
    )
    batch_size: int = Field(
        64, ge=2, le=4096, description="Samples of D_f, of the shadow set and of D_r per iteration."
    )
    perturbations: int = Field(
        10,
        ge=1,
        le=100,
        description="n, the noisy copies of an input behind its sensitivity Delta(x) "
        "(paper: 10): more are steadier and cost one forward pass each.",
    )
    noise_std: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Standard deviation of the perturbations' Gaussian noise (paper: 1).",
    )
    attacker_pretrain_steps: int = Field(
        200,
        ge=0,
        le=100_000,
        description="Attacker steps before the game, on the original model's outputs "
        "(paper: 1000): how sharp the attacker is when the game starts.",
    )
    attacker_width: int = Field(
        32,
        ge=4,
        le=512,
        description="Width of the attacker's transformer (its feed-forward layer is twice "
        "as wide); a multiple of `attacker_heads`.",
    )
    attacker_layers: int = Field(
        3, ge=1, le=12, description="Layers of the attacker's transformer (paper: 3)."
    )
    attacker_heads: int = Field(
        4, ge=1, le=16, description="Attention heads of the attacker's transformer (paper: 4)."
    )
    class_alpha_iterations: int = Field(
        30,
        ge=0,
        le=100_000,
        description="Class deletion: iterations before alpha drops to 0 (paper: 30).",
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Self:
        if self.attacker_width % self.attacker_heads:
            raise ValueError(
                f"attacker_width ({self.attacker_width}) must be a multiple of "
                f"attacker_heads ({self.attacker_heads})"
            )
        return self


class Attacker(nn.Module):
    """Membership score from per-class tokens (D(x)_k, Delta(x)_k, y_k): a logit, > 0 for
    "member"."""

    def __init__(self, num_classes: int, *, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.embed = nn.Linear(3, width)  # the FC layer
        self.classes = nn.Parameter(torch.zeros(num_classes, width))
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.score = nn.Linear(width, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.embed(tokens) + self.classes)
        return self.score(hidden.mean(1)).squeeze(-1)


def attacker_inputs(
    outputs: torch.Tensor,
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    perturbations: int,
    noise_std: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """D(x)' as tokens (batch, classes, 3), differentiable in the model; ``outputs`` are
    the model's logits for ``inputs`` (already computed by the caller)."""
    probabilities = outputs.softmax(1)
    noise = torch.randn(
        (perturbations, *inputs.shape),
        generator=generator,
        device=inputs.device,
        dtype=inputs.dtype,
    )
    noisy = model((inputs.unsqueeze(0) + noise_std * noise).flatten(0, 1)).softmax(1)
    sensitivity = (probabilities.unsqueeze(0) - noisy.view(perturbations, *outputs.shape)).abs()
    one_hot = F.one_hot(labels, outputs.shape[1]).to(probabilities.dtype)
    return torch.stack([probabilities, sensitivity.mean(0), one_hot], dim=-1)


def attacker_log_likelihood(members: torch.Tensor, nonmembers: torch.Tensor) -> torch.Tensor:
    """L_A = mean log A(member) + mean log(1 - A(non-member)), from the attacker's logits."""
    return F.logsigmoid(members).mean() + F.logsigmoid(-nonmembers).mean()


def barlow_twins(first: torch.Tensor, second: torch.Tensor, *, redundancy: float) -> torch.Tensor:
    """V_ss (eq. 2) between two feature batches paired row by row."""
    rows = min(len(first), len(second))
    a = first[:rows] - first[:rows].mean(0)
    b = second[:rows] - second[:rows].mean(0)
    norms = a.norm(dim=0).unsqueeze(1) * b.norm(dim=0).unsqueeze(0)
    correlation = (a.T @ b) / norms.clamp_min(1e-8)
    diagonal = torch.diagonal(correlation)
    off_diagonal = correlation.pow(2).sum() - diagonal.pow(2).sum()
    return (1 - diagonal).pow(2).sum() + redundancy * off_diagonal


def _cycle(loader: DataLoader) -> Iterator[Batch]:
    while True:
        yield from loader


def _accuracy(attacker: Attacker, members: torch.Tensor, nonmembers: torch.Tensor) -> float:
    """Balanced accuracy of the attacker's member / non-member calls."""
    with torch.no_grad():
        hit_members = (attacker(members) > 0).float().mean()
        hit_nonmembers = (attacker(nonmembers) <= 0).float().mean()
    return float((hit_members + hit_nonmembers) / 2)


@register_unlearner
class DAU(Unlearner):
    name = "dau"
    Params = DAUParams
    needs = frozenset({Need.RETAIN, Need.VALIDATION, Need.SHADOW})

    def unlearn(self, context: UnlearnContext) -> UnlearnResult:
        p = self.params
        assert isinstance(p, DAUParams)
        started = time.perf_counter()
        model, device = context.model, context.device
        if not len(context.forget):
            return unchanged(model, started, "empty forget set")
        if not len(context.shadow):
            raise ValueError("dau needs held-out samples (the shadow set) for its attacker")
        stopping = EarlyStopping.for_params(p, context)
        if stopping.already_reached(model):
            return unchanged(model, started, "D_f already at the stop rule's target")
        num_classes = context.forget.adapter.index().num_classes
        torch.manual_seed(context.seed)
        generator = torch.Generator(device=device).manual_seed(context.seed)
        attacker = Attacker(
            num_classes, width=p.attacker_width, layers=p.attacker_layers, heads=p.attacker_heads
        ).to(device)
        attacker_optimizer = torch.optim.Adam(attacker.parameters(), lr=p.attacker_lr)

        def tokens(samples: SampleSet) -> torch.Tensor:
            inputs, labels = (t.to(device) for t in samples.tensors())
            with torch.no_grad():
                return torch.cat(
                    [
                        attacker_inputs(
                            model(x),
                            model,
                            x,
                            y,
                            perturbations=p.perturbations,
                            noise_std=p.noise_std,
                            generator=generator,
                        )
                        for x, y in zip(inputs.split(256), labels.split(256), strict=True)
                    ]
                )

        size = p.validation_eval_size
        model.eval()  # and so it stays: BatchNorm's statistics are the base model's (below)
        eval_members = tokens(context.forget.subset(size, seed=context.seed))
        shadow_nonmembers = tokens(context.shadow.subset(size, seed=context.seed))
        retained_pool = context.retain.subset(len(shadow_nonmembers), seed=context.seed)
        pool = torch.cat([eval_members, tokens(retained_pool)])
        half = p.batch_size
        for _ in range(p.attacker_pretrain_steps):
            members = pool[torch.randint(len(pool), (half,), device=device)]
            nonmembers = shadow_nonmembers[
                torch.randint(len(shadow_nonmembers), (half,), device=device)
            ]
            scores = attacker(torch.cat([members, nonmembers]))  # one pass for both sides
            attacker_optimizer.zero_grad(set_to_none=True)
            (-attacker_log_likelihood(scores[:half], scores[half:])).backward()
            attacker_optimizer.step()
        # The attacker's accuracy is measured on D_v, which it was never fitted on.
        eval_nonmembers = tokens(context.validation.subset(size, seed=context.seed))
        accuracy_before = _accuracy(attacker, eval_members, eval_nonmembers)

        optimizer = torch.optim.SGD(model.parameters(), lr=p.lr)
        retained = _cycle(context.retain.loader(p.batch_size, shuffle=True, seed=context.seed))
        shadows = _cycle(context.shadow.loader(p.batch_size, shuffle=True, seed=context.seed))
        iteration = 0
        norms: list[float] = []

        def step(spent: float, inputs: torch.Tensor, labels: torch.Tensor) -> None:
            nonlocal iteration
            alpha = p.alpha
            if context.class_labels and iteration >= p.class_alpha_iterations:
                alpha = 0.0
            iteration += 1
            x_f, y_f = inputs.to(device), labels.to(device)
            x_s, y_s = (t.to(device) for t in next(shadows))
            x_r, y_r = (t.to(device) for t in next(retained))

            def informed(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                logits, features = logits_and_features(model, x)
                return attacker_inputs(
                    logits,
                    model,
                    x,
                    y,
                    perturbations=p.perturbations,
                    noise_std=p.noise_std,
                    generator=generator,
                ), features

            forget_tokens, forget_features = informed(x_f, y_f)
            held_tokens, held_features = informed(x_s, y_s)
            # Attacker: one ascent step on L_A, on the defender's current outputs.
            attacker_optimizer.zero_grad(set_to_none=True)
            likelihood = attacker_log_likelihood(
                attacker(forget_tokens.detach()), attacker(held_tokens.detach())
            )
            (-likelihood).backward()
            attacker_optimizer.step()
            # Defender: one descent step on eq. 3, against the updated attacker.
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_r), y_r)
            if alpha:
                loss = loss + alpha * attacker_log_likelihood(
                    attacker(forget_tokens), attacker(held_tokens)
                )
            if p.beta:
                loss = loss + p.beta * barlow_twins(
                    forget_features, held_features, redundancy=p.redundancy
                )
            attacker.requires_grad_(False)
            try:
                loss.backward()
            finally:
                attacker.requires_grad_(True)
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), p.max_grad_norm)))
            optimizer.step()

        facts: dict[str, Any] = unlearn_steps(
            model,
            context.forget.loader(p.batch_size, shuffle=True, seed=context.seed),
            step,
            stopping,
            max_steps=p.iterations,
            check_every=p.check_every,
            progress=context.progress,
        )
        raise_if_diverged(model, "dau", lr=p.lr)
        model.eval()
        if norms:  # none when D_f already looked held out before the first step
            facts["defender_grad_norm"] = {"median": float(np.median(norms)), "max": max(norms)}
        facts["attacker_accuracy"] = {
            "before": accuracy_before,
            "after": _accuracy(
                attacker,
                tokens(context.forget.subset(size, seed=context.seed)),
                tokens(context.validation.subset(size, seed=context.seed)),
            ),
        }
        info = {"unlearning_seconds": time.perf_counter() - started, **facts}
        return UnlearnResult(state_dict_of(model), info=info)
