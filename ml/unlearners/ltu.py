"""LTU: Learning to Unlearn, meta-learning with a small accessible part of the retained
data (Huang, Foo and Liu, ECCV 2024, "Learning to Unlearn for Robust Machine Unlearning"; seed
``ltu_*``).

Inputs: the model theta, the forget set D_f, an accessible share D_r' of D_r
(``retain_fraction``, the paper's 30%; only those samples are read) and the validation set
the held-out samples: the shadow set for the membership models, D_v for the stop rule
(disjoint, so the membership models are never fitted on what the stop rule reads).

Per iteration, with a mini-batch B_f of D_f:

1. Remembering feedback (sections 3.1, 3.2.1). Support S = B_f with random labels
   (eq. 6); three query sets drawn from D_r' (eqs. 7-10), each |B_f| samples: the
   nearest to B_f in a light feature space, the nearest in label space, and random ones.
   Meta-tune (eqs. 1-2):  theta' = theta - eta grad CE(S; theta)
   Meta-test (eq. 3):     L_test(theta') = sum_j CE(Q_j; theta')
   Meta-gradient (eqs. 4-5): g_r = grad_theta [CE(S; theta) + L_test(theta')].
2. Forgetting feedback (section 3.2.2). ``mi_models`` small differentiable
   membership-inference models, pre-trained before unlearning on the original model's
   softmax outputs (members: D_r'; non-members: the shadow set), each scoring a sample as
   member.
   Eq. 11: L_k(theta) = BCE(M_k(f_theta(B_f)), non-member). One model drawn as support
   (a), a different one as query (b); the same meta-optimisation gives
   g_f = grad_theta [L_a(theta) + L_b(theta - eta grad L_a(theta))].
   The audit's own attack (``ml.audit``) is never one of them: forgetting tuned against
   the audit's attack would game the audit.
3. Gradient harmonisation (section 3.3, eq. 12): if cos(g_r, g_f) < 0, then
   g_f <- g_f - (g_f . g_r) / ||g_r||^2 g_r, so the harmonised g_f never has a negative
   inner product with g_r; meta-update theta <- theta - beta (g_r + g_f).

Meta-gradients are second-order by default (``torch.func``: the gradient flows through the
meta-tune step, (I - eta H) grad L_test(theta')); ``order="first"`` drops the Hessian
term, as first-order MAML does.

Choices where the paper is silent (also in ``docs/unlearners.md``):

- Random labels: each forget sample gets one fixed random *wrong* label (never a deleted
  class), as in ``random_labels``: a draw equal to the true label would teach, not forget.
- Feature space (eq. 8): the original model's own features (the input of its output layer,
  ``ml.features``), computed once with the weights frozen, the lightest extractor at hand;
  the feature sampler takes the retained samples with the smallest distance to any sample
  of B_f.
- Label space (eq. 9): labels vectorised one-hot, so the nearest retained samples are
  those of the same class; for each sample of B_f one retained sample of its class, at
  random (a random retained sample when D_r' holds none of that class).
- Membership models: MLPs of different shapes and inputs, (64) on the softmax vector, (32,
  32) on the sorted softmax vector, (128, 64) on the softmax vector with the one-hot label,
  then repeating; each trained ``mi_steps`` Adam steps with its own seed.
- Step sizes: eta (``meta_lr``) and beta (``lr``) 0.01 and plain SGD meta-updates; each
  harmonised step is clipped to ``max_grad_norm`` (global L2).
- Mode: the model stays in eval mode throughout, so BatchNorm keeps the base version's
  running statistics (``ml.batchnorm``: D_f's batches never enter them) and dropout is off.

Deviation: the paper unlearns for a fixed number of iterations. Here the loop also stops
under the shared rules of ``ml.unlearners.early_stopping`` (by default once D_f's losses
and accuracy are equivalent to held-out data of D_f's class mix; for class deletion, once
the unmasked outputs no longer predict the deleted classes), keeping the state closest to
the target; ``stop="none"`` runs the fixed budget. When D_f already sits at the rule's
target (the class rule's; the distribution rule's starting model never does), the base
weights come back at once, before any membership model is trained. For
class deletion, ``run_unlearner`` masks the forgotten classes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from torch import nn
from torch.func import functional_call

from ml.features import logits_and_features
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
from ml.unlearners.random_labels import random_wrong_labels
from ml.unlearners.registry import register_unlearner

__all__ = [
    "LTU",
    "LTUParams",
    "MembershipModel",
    "meta_gradient",
    "harmonise",
    "QuerySampler",
]

Params = dict[str, torch.Tensor]
Loss = Callable[[Params], torch.Tensor]
MI_SHAPES: tuple[tuple[int, ...], ...] = ((64,), (32, 32), (128, 64))
MI_VIEWS = ("probabilities", "sorted", "with_label")


class LTUParams(StopRuleParams):
    model_config = ConfigDict(extra="forbid", strict=True)
    retain_fraction: float = Field(
        0.3,
        gt=0,
        le=1,
        description="gamma, the accessible share of D_r, the only retained samples read "
        "(paper: 30%): more keeps accuracy better and costs reading time and memory.",
    )
    iterations: int = Field(
        100,
        ge=1,
        le=100_000,
        description="The budget of meta-updates (one per forget batch, cycling over D_f).",
    )
    batch_size: int = Field(
        32,
        ge=1,
        le=4096,
        description="|B_f|, the forget samples per iteration, and the size of each query set.",
    )
    lr: float = Field(
        1e-2,
        gt=0,
        le=10,
        description="beta, the meta-update step: faster forgetting against collateral damage.",
    )
    meta_lr: float = Field(
        1e-2,
        ge=0,
        le=10,
        description="eta, the meta-tune step: how far the simulated forgetting step looks "
        "ahead; 0 makes the meta-test plain retain CE.",
    )
    order: Literal["second", "first"] = Field(
        "second",
        description="`second` differentiates through the meta-tune step (`torch.func`); "
        "`first` drops the Hessian term, as first-order MAML does: cheaper, and within "
        "O(eta) of it.",
    )
    mi_models: int = Field(
        3,
        ge=2,
        le=8,
        description="Membership models giving the forgetting feedback (at least 2: support "
        "and query must differ).",
    )
    mi_steps: int = Field(
        200, ge=1, le=100_000, description="Adam steps of each membership model's pre-training."
    )
    max_grad_norm: float = Field(
        1.0,
        gt=0,
        le=1e6,
        description="Each harmonised step is clipped to this global L2 norm.",
    )


class MembershipModel(nn.Module):
    """A small MLP membership model on softmax outputs: a logit, > 0 for "member"."""

    def __init__(self, num_classes: int, *, hidden: tuple[int, ...], view: str) -> None:
        super().__init__()
        if view not in MI_VIEWS:
            raise ValueError(f"Invalid view: {view}")
        self.view, self.num_classes = view, num_classes
        width = 2 * num_classes if view == "with_label" else num_classes
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.view == "sorted":
            probabilities = probabilities.sort(dim=1, descending=True).values
        elif self.view == "with_label":
            one_hot = F.one_hot(labels, self.num_classes).to(probabilities.dtype)
            probabilities = torch.cat([probabilities, one_hot], dim=1)
        return self.net(probabilities).squeeze(-1)


def meta_gradient(
    support: Loss, query: Loss, params: Params, *, inner_lr: float, second_order: bool
) -> Params:
    """grad_theta [support(theta) + query(theta - inner_lr grad support(theta))] (eqs. 1-5).

    Second order differentiates through the meta-tune step with ``torch.func``; first
    order treats theta' as a constant, i.e. grad support(theta) + grad query(theta')."""
    if second_order:

        def objective(p: Params) -> torch.Tensor:
            inner = torch.func.grad(support)(p)
            return support(p) + query({k: p[k] - inner_lr * inner[k] for k in p})

        return torch.func.grad(objective)(params)
    inner = torch.func.grad(support)(params)
    adapted = {k: (params[k] - inner_lr * inner[k]).detach() for k in params}
    outer = torch.func.grad(query)(adapted)
    return {k: inner[k] + outer[k] for k in params}


def harmonise(remember: torch.Tensor, forget: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Eq. 12 on flat gradients: (g_f with its component against g_r removed when they
    conflict, whether it was projected)."""
    dot = torch.dot(forget, remember)
    squared = torch.dot(remember, remember)
    if dot >= 0 or squared == 0:
        return forget, False
    return forget - (dot / squared) * remember, True


class QuerySampler:
    """The three query samplers over D_r' (eqs. 8-10), for a support batch of D_f."""

    def __init__(
        self,
        features: torch.Tensor,  # D_r' in the light feature space
        labels: torch.Tensor,
        *,
        seed: int,
    ) -> None:
        self.features, self.labels = features, labels
        self.rng = np.random.default_rng(seed)
        labels_np = labels.cpu().numpy()
        self.by_class = {int(c): np.flatnonzero(labels_np == c) for c in np.unique(labels_np)}

    def feature_space(self, support_features: torch.Tensor, size: int) -> np.ndarray:
        distance = torch.cdist(self.features, support_features).min(dim=1).values
        size = min(size, len(distance))
        return torch.topk(distance, size, largest=False).indices.cpu().numpy()

    def label_space(self, support_labels: torch.Tensor) -> np.ndarray:
        rows = []
        for label in support_labels.tolist():
            pool = self.by_class.get(int(label))
            if pool is None:
                rows.append(int(self.rng.integers(len(self.labels))))
            else:
                rows.append(int(self.rng.choice(pool)))
        return np.asarray(rows)

    def random(self, size: int) -> np.ndarray:
        return self.rng.choice(len(self.labels), min(size, len(self.labels)), replace=False)


def _membership_models(
    members: tuple[torch.Tensor, torch.Tensor],
    nonmembers: tuple[torch.Tensor, torch.Tensor],
    *,
    count: int,
    steps: int,
    seed: int,
    device: torch.device,
) -> list[MembershipModel]:
    """``count`` membership models trained on fixed (softmax outputs, labels) pairs."""
    num_classes = members[0].shape[1]
    models = []
    for k in range(count):
        torch.manual_seed(seed + 1000 + k)
        model = MembershipModel(
            num_classes, hidden=MI_SHAPES[k % len(MI_SHAPES)], view=MI_VIEWS[k % len(MI_VIEWS)]
        ).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        batch = 128
        for _ in range(steps):
            m = torch.randint(len(members[0]), (batch,), device=device)
            n = torch.randint(len(nonmembers[0]), (batch,), device=device)
            logits = torch.cat(
                [model(members[0][m], members[1][m]), model(nonmembers[0][n], nonmembers[1][n])]
            )
            targets = torch.cat([torch.ones(batch), torch.zeros(batch)]).to(device)
            optimizer.zero_grad(set_to_none=True)
            F.binary_cross_entropy_with_logits(logits, targets).backward()
            optimizer.step()
        models.append(model.eval().requires_grad_(False))
    return models


@torch.no_grad()
def _outputs(
    model: nn.Module, inputs: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax outputs, features) of the frozen original model, in batches."""
    model.eval()
    pairs = [logits_and_features(model, x.to(device)) for x in inputs.split(512)]
    return (
        torch.cat([logits.softmax(1) for logits, _ in pairs]),
        torch.cat([features for _, features in pairs]),
    )


@register_unlearner
class LTU(Unlearner):
    name = "ltu"
    Params = LTUParams
    needs = frozenset({Need.RETAIN, Need.VALIDATION, Need.SHADOW})

    def unlearn(self, context: UnlearnContext) -> UnlearnResult:
        p = self.params
        assert isinstance(p, LTUParams)
        started = time.perf_counter()
        model, device, seed = context.model, context.device, context.seed
        forget = context.forget
        if not len(forget):
            return unchanged(model, started, "empty forget set")
        if not len(context.shadow):
            raise ValueError("ltu needs held-out samples (the shadow set): its membership models")
        accessible = context.retain.subset(
            max(1, math.ceil(p.retain_fraction * len(context.retain))), seed=seed
        )
        if not len(accessible):
            raise ValueError("ltu needs retained samples (D_r) for its query sets")
        stopping = EarlyStopping.for_params(p, context)
        if stopping.already_reached(model):
            return unchanged(model, started, "D_f already at the stop rule's target")
        num_classes = forget.adapter.index().num_classes

        # Everything the original model tells, read once with its weights frozen.
        x_r, y_r = (t.to(device) for t in accessible.tensors())
        x_f, y_f = (t.to(device) for t in forget.tensors())
        x_s, y_s = (
            t.to(device) for t in context.shadow.subset(len(accessible), seed=seed).tensors()
        )
        retain_probabilities, retain_features = _outputs(model, x_r, device)
        _, forget_features = _outputs(model, x_f, device)
        shadow_probabilities, _ = _outputs(model, x_s, device)
        membership = _membership_models(
            (retain_probabilities, y_r),
            (shadow_probabilities, y_s),
            count=p.mi_models,
            steps=p.mi_steps,
            seed=seed,
            device=device,
        )
        random_labels = torch.as_tensor(
            random_wrong_labels(
                forget.labels, num_classes, excluded=context.class_labels or [], seed=seed
            ),
            device=device,
        )
        sampler = QuerySampler(retain_features, y_r, seed=seed)
        rng = np.random.default_rng(seed)
        buffers = dict(model.named_buffers())
        names = [name for name, _ in model.named_parameters()]

        def logits(params: Params, inputs: torch.Tensor) -> torch.Tensor:
            return functional_call(model, ({**params, **buffers},), (inputs,))

        projected = 0

        def step(spent: float, _inputs: torch.Tensor, rows: torch.Tensor) -> None:
            nonlocal projected
            rows = rows.to(device)
            inputs, labels = x_f[rows], y_f[rows]
            queries = [
                sampler.feature_space(forget_features[rows], len(rows)),
                sampler.label_space(labels),
                sampler.random(len(rows)),
            ]
            query_sets = [
                (x_r[q], y_r[q]) for q in (torch.as_tensor(q, device=device) for q in queries)
            ]

            def support(params: Params) -> torch.Tensor:
                return F.cross_entropy(logits(params, inputs), random_labels[rows])

            def test(params: Params) -> torch.Tensor:
                return sum(  # type: ignore[return-value]
                    (F.cross_entropy(logits(params, x), y) for x, y in query_sets),
                    torch.zeros((), device=device),
                )

            a, b = rng.choice(len(membership), 2, replace=False)

            def not_member(mi: MembershipModel) -> Loss:
                def loss(params: Params) -> torch.Tensor:
                    scores = mi(logits(params, inputs).softmax(1), labels)
                    return F.binary_cross_entropy_with_logits(scores, torch.zeros_like(scores))

                return loss

            params = {name: parameter.detach() for name, parameter in model.named_parameters()}
            second = p.order == "second"
            remember = meta_gradient(support, test, params, inner_lr=p.meta_lr, second_order=second)
            forgetting = meta_gradient(
                not_member(membership[a]),
                not_member(membership[b]),
                params,
                inner_lr=p.meta_lr,
                second_order=second,
            )
            g_r = torch.cat([remember[n].flatten() for n in names])
            g_f, was_projected = harmonise(g_r, torch.cat([forgetting[n].flatten() for n in names]))
            projected += was_projected
            update = g_r + g_f
            scale = min(1.0, p.max_grad_norm / (float(update.norm()) + 1e-12))
            with torch.no_grad():
                current = nn.utils.parameters_to_vector(model.parameters())
                nn.utils.vector_to_parameters(current - p.lr * scale * update, model.parameters())

        # The batches carry each forget sample's row (for its random label and features).
        rows = torch.randperm(len(forget), generator=torch.Generator().manual_seed(seed))
        batches = [
            (rows[i : i + p.batch_size], rows[i : i + p.batch_size])
            for i in range(0, len(rows), p.batch_size)
        ]
        facts: dict[str, Any] = unlearn_steps(
            model,
            batches,
            step,
            stopping,
            max_steps=p.iterations,
            check_every=p.check_every,
            progress=context.progress,
        )
        raise_if_diverged(model, "ltu", lr=p.lr)
        facts |= {"harmonised_steps": projected, "accessible_retain": len(accessible)}
        info = {"unlearning_seconds": time.perf_counter() - started, **facts}
        return UnlearnResult(state_dict_of(model), info=info)
