"""Projected-Gradient Unlearning (PGU), the service's headline method.

Paper: T. Hoang, S. Rana, S. Gupta, S. Venkatesh, "Learn to Unlearn for Deep Neural
Networks: Minimizing Unlearning Interference with Gradient Projection", WACV 2024
(authors' code github.com/hnanhtuan/projected_gradient_unlearning). It reads the forget
set D_f and a small fixed sample of the validation set D_v, never the retained data D_r.

Layers l: every Conv2d and Linear weight W^l, viewed as (out x d) (``ml.pgu``); each group
of a grouped convolution is a layer of its own (its own C, core space and projection).

``prepare`` (a ``cache`` job, once per basis version), Eq. 2:
    C^l = R^l R^l^T = sum over mini-batches b of D of R_b^l R_b^l^T   (float64)
    stored as the artifact ``pgu_cache``: one d x d tensor per layer keyed by the weight's
    name (groups x d x d for a grouped convolution), meta {"basis_version": the version
    whose forward passes made R, "layers": the weight names, "samples": how many samples
    C covers}.

``unlearn``, given the base version's cache C (basis version b):
    1. C_r^l = C^l - R_f^l R_f^l^T                                          (Eq. 3)
       R_f from version b's forward passes (``context.load_version(b)``, or the base
       model itself when b is the base version), so the subtraction removes exactly the
       columns that were added. D_f holds only samples the base version still knows (the
       worker leaves out keys already forgotten), so nothing is subtracted twice.
    2. s = sqrt(max(eig(C_r^l), 0)) descending; M^l = the first k eigenvectors, k the
       smallest with sum_{i<=k} s_i >= gamma^l sum_i s_i                 (section 3.2.2)
       A layer with gamma^l = 1.0 is frozen entirely (authors' code) and costs no
       decomposition. The eigendecomposition is LAPACK's symmetric one in float64, after
       the rows of C_r that are exactly zero are split off (``ml.pgu.core_space``: exact,
       as C_r is then block-diagonal with a zero block); on the CPU, above 2,048 wide, it
       computes every eigenvalue but only the eigenvectors of the smaller side of the cut
       (the projector is I - M M^T = U_rest U_rest^T), not the full decomposition.
    3. Steps over mini-batches of D_f (at most ``gradient_samples`` of it, seeded; the
       cache downdate of step 1 always uses all of it), cycling, for at most ``max_steps``
       steps; with p = softmax(f(x)) and y the label:
           L = mean_i [ -log(1 - (p_iy - offset)) + lambda sum_c p_ic log p_ic ]   (Eq. 1)
           G_perp^l = G^l - G^l M^l M^l^T,  G^l = dL/dW^l                        (Eq. 4)
           W^l <- W^l - eta_t G_perp^l
       (biases and BatchNorm frozen; no momentum, no weight decay). ``step`` "normalized"
       (default): eta_t = s_t ||W|| / ||G_perp|| over all updated layers together, so the
       weights move by the share s_t of their norm per step, s_t decaying exponentially
       from ``step_start`` to ``step_end`` over the budget; "sgd": eta_t = the paper's
       learning rate, ``lr_start`` -> ``lr_end``. Every ``check_every`` forget samples the
       stop rule (``ml.unlearners.early_stopping``) measures the model; the state closest
       to its target is kept. Random deletion: D_f's losses and accuracy against held-out
       samples of D_f's class mix, stopping once the loss AUC is equivalent to 0.5 and the
       accuracy gap to 0 within margins sized by the starting model's own difference
       (what a retrained model shows, up to sampling noise), or after 5 checks that came
       no closer; the closest state is kept.
    4. Class deletion (``context.class_labels`` set; the worker makes D_f every active
       training sample of those classes): the rule reads the unmasked outputs and stops
       once they no longer predict the deleted classes, on D_f and on held-out samples of
       them, braked first by a 5-point fall of the remaining classes' held-out accuracy;
       the forgotten classes are then masked in the output layer of the published
       weights by ``run_unlearner`` (``ml.class_masking``), as for every method.
    Returns the new weights and the new version's ``pgu_cache`` = C_r, still relative to
    basis version b: by Eq. 5 the update barely moves W r for retained r, so version b's
    representations stay valid and the next batch subtracts again (section 3.2.4). A
    deletion costs O(|D_f|) forward passes plus O(d^3) per layer, whatever |D|; the job's
    info times each stage (cache_update_seconds, core_space_seconds, steps_seconds,
    checks_seconds).

Parameters: see ``PGUParams`` (each field's description; ``docs/unlearners.md`` renders
them).

Differences from the paper, each on purpose:
- Sign of the entropy term. Eq. 1 prints "- lambda p log p", which, minimised, would
  *lower* the entropy for lambda > 0, while the text says lambda > 0 maximises it and
  the authors' code minimises RCE - lambda * entropy. We follow the text and the code:
  L = RCE + lambda sum_c p log p (= RCE - lambda H(p)).
- The loss is averaged over the mini-batch (authors' code), not summed (Eq. 1).
- eps is applied as the authors do, -log(1 - (p_y - offset)), with offset 0.05.
- R_f comes from the basis version, not from the current model as in the authors'
  incremental code (which leans on Eq. 5); the cache algebra is then exact.
- Convolutions are unfolded at their own stride and dilation; the authors' code unfolds
  every one at stride 1 and dilation 1, which caches patches a strided or dilated layer
  never multiplies (``ml.pgu.representations``).
- The cache keeps C itself (float64), not U and S: the same information (C = U S^2 U^T),
  and Eq. 3 becomes a plain subtraction.
- The model stays in eval mode while unlearning: BatchNorm statistics frozen as in the
  authors' code, and dropout off (they leave it on).
- A normalised step instead of the paper's learning rate (0.05 -> 0.01 over 100 epochs):
  the projection keeps a share of the gradient that depends on the network and the data,
  so any fixed rate needs tuning per network, while moving the weights by a fixed share of
  their norm needs none; ``step`` "sgd" keeps the paper's rule.
- A step budget rather than epochs, checks every ``check_every`` forget samples rather
  than after each epoch, and the best state kept: an epoch is too coarse a unit to stop
  on (on class deletion forget accuracy collapsed within two).
- The stop rules target what a retrained model shows, not accuracy alone: for random
  deletion the loss distribution of D_f against held-out data of D_f's class mix *and*
  their accuracy gap (each of the two alone stopped in the wrong place), equivalent within
  a margin by two one-sided tests; for class deletion, the unmasked outputs no longer
  predicting the deleted classes (masking is applied after, so it cannot meet the rule).
  The authors stop class deletion on the 5-point fall alone; here it is a brake, checked
  first under every rule, and a state past it is never published. ``stop`` "holdout_gap" keeps the
  authors' random-deletion rule.
- The gradient steps may read a sample of D_f (``gradient_samples``): a deleted class
  needs far fewer steps than it has samples, while the downdate of step 1, which must
  remove every forgotten sample from the cache, reads all of them.
- The eigendecomposition runs in float64 (``ml.pgu.core_space``; the gamma cut sits
  among eigenvalues ~1e-6 of the largest, below float32's resolution), and only once a
  step is about to run: a forget set already at the class rule's target costs no eigh.
  It is the eigendecomposition of C_r = R_r R_r^T, not an SVD of R_r as in the authors'
  code: the same U and singular values, from a d x d matrix instead of a d x |D| one.
- De-poisoning in the paper uses TRGP on the last linear layer; here lambda < 0 runs the
  plain Eq. 4 projection in every layer.

What development runs measured behind these choices is in ``docs/benchmarks.md``, "Notes
from development runs".
"""

from __future__ import annotations

import copy
import math
import time
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, model_validator
from torch import nn

from ml.pgu import (
    Layer,
    Projection,
    cache_bytes,
    discover_layers,
    input_covariances,
    layer_projector,
    project_out,
)
from ml.samples import SampleSet, key_hashes
from ml.unlearners.base import (
    Artifact,
    Need,
    UnlearnContext,
    Unlearner,
    UnlearnResult,
    state_dict_of,
)
from ml.unlearners.early_stopping import EarlyStopping, StopRuleParams, unlearn_steps
from ml.unlearners.registry import register_unlearner

__all__ = ["PGU", "PGUParams", "CACHE_ARTIFACT", "unlearning_loss"]

CACHE_ARTIFACT = "pgu_cache"
MEMBERS = "members"  # the cache's tensor of its samples' key hashes (int64, sorted)
Gamma = Annotated[float, Field(gt=0, le=1)]
StepRule = Literal["normalized", "sgd"]


class PGUParams(StopRuleParams):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )
    gamma: Gamma = Field(
        0.9,
        description="The share of a layer's singular values (of the retained inputs) that "
        "its core gradient space M carries (paper: 0.9; 0.95 for small VGG-like nets): a "
        "larger core space protects D_r more and leaves less room to forget.",
    )
    layer_gamma: dict[str, Gamma] = Field(
        default_factory=dict,
        description="Module name (e.g. `features.0`) -> gamma, overriding `gamma` for that "
        "layer; 1.0 freezes it (the authors do for some layers).",
    )
    lambda_: float = Field(
        0.2,
        alias="lambda",
        ge=-10,
        le=10,
        description="Weight of the entropy term (paper: 0.2): > 0 flattens the outputs on "
        "D_f; < 0 for de-poisoning, where the poisoned samples should be confidently "
        "re-classified rather than made uncertain (the stop rules then measure against the "
        "poisoned labels, so de-poisoning usually wants `stop` `none` and a chosen "
        "`max_steps`).",
    )
    step: StepRule = Field(
        "normalized",
        description="`normalized`: each step moves the updated weights, taken together, by "
        "a share of their norm (`step_start` -> `step_end`), which needs no tuning per "
        "network; `sgd`: the paper's learning-rate rule (`lr_start` -> `lr_end`).",
    )
    step_start: float = Field(
        0.02,
        gt=0,
        le=1,
        description="`step` `normalized`: the share of the weights' norm the first step "
        "moves them by, decaying exponentially to `step_end` over `max_steps`.",
    )
    step_end: float = Field(
        0.002,
        gt=0,
        le=1,
        description="`step` `normalized`: the share at the end of the budget (at most "
        "`step_start`).",
    )
    lr_start: float = Field(
        1.0,
        gt=0,
        le=100,
        description="`step` `sgd`: the learning rate of the first step, decaying "
        "exponentially to `lr_end` over `max_steps` (paper: 0.05 -> 0.01).",
    )
    lr_end: float = Field(
        0.2,
        gt=0,
        le=100,
        description="`step` `sgd`: the learning rate at the end of the budget (at most "
        "`lr_start`).",
    )
    max_steps: int = Field(
        300, ge=1, le=1_000_000, description="The step budget the schedules decay over."
    )
    gradient_samples: int = Field(
        2048,
        ge=1,
        le=10_000_000,
        description="The steps read at most this many samples of D_f (seeded); the cache "
        "downdate always reads all of it.",
    )
    batch_size: int = Field(32, ge=1, le=8192, description="Forget samples per step.")
    offset: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="The paper's eps in -log(1 - (p_y - offset)): keeps the reverse "
        "cross-entropy finite.",
    )

    @model_validator(mode="after")
    def _schedules_decay(self) -> PGUParams:
        if self.lr_end > self.lr_start:
            raise ValueError(f"Invalid lr_end: {self.lr_end} > lr_start {self.lr_start}")
        if self.step_end > self.step_start:
            raise ValueError(f"Invalid step_end: {self.step_end} > step_start {self.step_start}")
        return self


def unlearning_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, lambda_: float, offset: float
) -> torch.Tensor:
    """Eq. 1, batch mean: reverse cross-entropy plus lambda times the negative entropy."""
    log_p = F.log_softmax(logits, dim=1)
    p = log_p.exp()
    p_true = p.gather(1, labels[:, None]).squeeze(1)
    reverse_ce = -torch.log1p(offset - p_true)  # -log(1 - (p_y - offset))
    negative_entropy = (p * log_p).sum(dim=1)  # sum_c p log p; 0 log 0 stays 0 here
    return (reverse_ce + lambda_ * negative_entropy).mean()


def _unknown_layers(params: PGUParams, layers: list[Layer]) -> str | None:
    known = {layer.module_name for layer in layers}
    unknown = sorted(set(params.layer_gamma) - known)
    if unknown:
        return f"layer_gamma names unknown layers {unknown}; known: {sorted(known)}"
    return None


def _layer_gammas(params: PGUParams, layers: list[Layer]) -> dict[str, float]:
    problem = _unknown_layers(params, layers)
    if problem is not None:
        raise ValueError(problem)
    return {layer.name: params.layer_gamma.get(layer.module_name, params.gamma) for layer in layers}


def _step_size(
    params: PGUParams, spent: float, weights: list[torch.Tensor], directions: list[torch.Tensor]
) -> float:
    """The factor on the projected gradient at this point of the budget (``spent`` in [0, 1]),
    decaying exponentially from start to end. ``sgd``: the learning rate itself.
    ``normalized``: the step moves the updated weights, taken together, by a share of their
    norm, whatever the gradient's scale: the share of a gradient the projection keeps
    differs from one net to another, and a normalised step needs no per-network learning
    rate."""
    if params.step == "sgd":
        return params.lr_start * (params.lr_end / params.lr_start) ** spent
    share = params.step_start * (params.step_end / params.step_start) ** spent
    weight_norm = math.sqrt(sum(float((w.double() ** 2).sum()) for w in weights))
    direction_norm = math.sqrt(sum(float((d.double() ** 2).sum()) for d in directions))
    if direction_norm <= 0:
        return 0.0
    return share * weight_norm / direction_norm


def _check_cache(cache: Artifact, layers: list[Layer]) -> None:
    expected = {layer.name: layer.cache_shape for layer in layers}
    found = {name: tuple(t.shape) for name, t in cache.tensors.items() if name != MEMBERS}
    if found != expected:
        raise RuntimeError(
            f"the {CACHE_ARTIFACT!r} artifact does not match the model's layers "
            f"(cache {found}, model {expected}); rebuild it with a cache job"
        )


def _subtracted(cache: Artifact, forget: SampleSet) -> tuple[SampleSet, torch.Tensor | None]:
    """(the samples of ``forget`` the cache covers, the members the new cache keeps). A
    cache only ever subtracts what it added: a sample another model forgot before this
    cache was built (or a rebuild left out) is not in it. A cache from before caches kept
    their members covers, as then, every sample of D_f."""
    members = cache.tensors.get(MEMBERS)
    if members is None:
        return forget, None
    hashes = key_hashes(forget.keys)
    covered = np.isin(hashes, members.numpy())
    kept = members[torch.from_numpy(~np.isin(members.numpy(), hashes[covered]))]
    return forget.take(np.flatnonzero(covered)), kept


# Modules that multiply by their submodules' weights without calling them (named, so
# that the check does not import torchvision).
FUNCTIONAL_ATTENTION = frozenset(
    {
        "torchvision.models.swin_transformer.ShiftedWindowAttention",
        "torchvision.models.swin_transformer.ShiftedWindowAttentionV2",
    }
)


@register_unlearner
class PGU(Unlearner):
    name = "pgu"
    Params = PGUParams
    needs = frozenset({Need.CACHE, Need.VALIDATION})

    @classmethod
    def unsuitable_for(cls, network: nn.Module) -> str | None:
        """PGU reads each layer's inputs in its own forward pass. ``nn.MultiheadAttention`` (a
        ViT's) multiplies by its ``in_proj`` and ``out_proj`` weights inside
        ``F.multi_head_attention_forward``, and torchvision's Swin attention passes its
        ``qkv`` and ``proj`` weights to ``F.linear``: those layers' own forward passes
        never run, so their caches would stay empty and their core spaces protect
        nothing."""
        attention = [
            name or "(the network)"
            for name, module in network.named_modules()
            if isinstance(module, nn.MultiheadAttention)
            or f"{type(module).__module__}.{type(module).__name__}" in FUNCTIONAL_ATTENTION
        ]
        if attention:
            return (
                "PGU cannot read the inputs of attention layers that call their projections "
                "functionally (nn.MultiheadAttention, torchvision's Swin attention; their "
                f"layers' own forward passes never run), found at: {', '.join(attention[:5])}"
            )
        return None

    def refuses(self, network: nn.Module) -> str | None:
        """Also: ``layer_gamma`` may only name the network's Conv2d and Linear modules."""
        assert isinstance(self.params, PGUParams)
        return super().refuses(network) or _unknown_layers(self.params, discover_layers(network))

    def cache_bytes(self, network: nn.Module) -> int:
        """Every layer's float64 C: d^2 x 8 bytes per layer (per group of a grouped
        convolution), whatever the dataset's size; ResNet-18's is 704 MiB. The cache job and
        a deletion peak at about three times this (C_r, the unfolded patches, the
        projectors and the eigendecompositions' work space; docs/unlearners.md, "pgu")."""
        return cache_bytes(network)

    def prepare(self, context: UnlearnContext) -> dict[str, Artifact]:
        """The cache of ``context.model`` over ``context.retain`` (every active sample)."""
        p = self.params
        assert isinstance(p, PGUParams)
        covariances = input_covariances(
            context.model,
            context.retain,
            device=context.device,
            progress=lambda done, total: context.progress("cache", done, total),
        )
        meta = {
            "basis_version": context.base_version,
            "layers": list(covariances),
            "samples": len(context.retain),
        }
        tensors = {k: v.cpu() for k, v in covariances.items()}
        tensors[MEMBERS] = torch.from_numpy(np.sort(key_hashes(context.retain.keys)))
        return {CACHE_ARTIFACT: Artifact(tensors, meta)}

    def unlearn(self, context: UnlearnContext) -> UnlearnResult:
        p = self.params
        assert isinstance(p, PGUParams)
        cache = context.artifacts(CACHE_ARTIFACT)
        if cache is None:
            raise RuntimeError(
                f"PGU needs the {CACHE_ARTIFACT!r} artifact of version {context.base_version}; "
                "the service runs a cache job for every version before its first batch"
            )
        layers = discover_layers(context.model)
        _check_cache(cache, layers)
        gammas = _layer_gammas(p, layers)
        device = context.device

        # 1. Eq. 3: C_r = C - R_f R_f^T, R_f from the basis version's forward passes.
        started = time.perf_counter()
        context.progress("cache", 0, 1)
        basis_version = int(cache.meta["basis_version"])
        basis_model = (
            context.model
            if basis_version == context.base_version
            else context.load_version(basis_version)
        )
        subtracted, members = _subtracted(cache, context.forget)
        retained = input_covariances(  # R_f R_f^T, turned into C_r in place below
            basis_model, subtracted, device=device
        )
        for name, downdated in retained.items():  # -R_f R_f^T + C, exactly C - R_f R_f^T,
            # in place: with C dropped below, the rest of the deletion holds one cache
            downdated.neg_().add_(cache.tensors[name].to(device=device, dtype=torch.float64))
        cached_samples = int(cache.meta.get("samples", 0))
        del cache  # the worker's copy of C goes: from here a deletion holds C_r alone
        context.progress("cache", 1, 1)
        cache_seconds = time.perf_counter() - started

        # 2-3. Projected descent on Eq. 1 over (a seeded sample of) D_f under the stop
        # rule. The core spaces (eigendecompositions, the costly part) are built as the
        # first step is about to run, so a forget set already at the target (the class
        # rule's; the distribution rule's start never is) costs none.
        started = time.perf_counter()
        student = copy.deepcopy(context.model).eval()  # eval: BatchNorm stays frozen
        student.requires_grad_(False)
        trainable = [layer for layer in discover_layers(student) if gammas[layer.name] < 1.0]
        for layer in trainable:  # gamma 1.0: the layer is frozen
            layer.weight.requires_grad_(True)
        stopping = EarlyStopping.for_params(p, context)
        projections: dict[str, Projection] = {}
        core_dims: dict[str, int] = {}
        core_space_seconds = steps_seconds = 0.0

        def build_core_spaces() -> None:
            """M per layer by the gamma rule, kept as the projection I - M M^T (Eq. 4)."""
            nonlocal core_space_seconds
            begun = time.perf_counter()
            for number, layer in enumerate(trainable, start=1):
                projection, k = layer_projector(retained[layer.name], gammas[layer.name])
                projections[layer.name] = projection.to(torch.float32)
                core_dims[layer.name] = k  # summed over the groups of a grouped convolution
                context.progress("core-space", number, len(trainable))
            core_space_seconds = time.perf_counter() - begun

        facts: dict[str, Any] = {"steps": 0, "stopped_by": "nothing to update"}
        checks_seconds = 0.0
        if trainable and len(context.forget):
            steps_on = context.forget.subset(p.gradient_samples, seed=context.seed)
            weights = [layer.weight for layer in trainable]

            def step(spent: float, inputs: torch.Tensor, labels: torch.Tensor) -> None:
                nonlocal steps_seconds
                if not projections:
                    build_core_spaces()
                begun = time.perf_counter()
                logits = student(inputs.to(device))
                loss = unlearning_loss(
                    logits, labels.to(device), lambda_=p.lambda_, offset=p.offset
                )
                gradients = torch.autograd.grad(loss, weights)
                with torch.no_grad():
                    projected = [
                        project_out(gradient, projections[layer.name])
                        for layer, gradient in zip(trainable, gradients, strict=True)
                    ]
                    size = _step_size(p, spent, weights, projected)
                    for weight, direction in zip(weights, projected, strict=True):
                        weight.sub_(size * direction)
                steps_seconds += time.perf_counter() - begun

            stepping = time.perf_counter()
            facts = unlearn_steps(
                student,
                steps_on.loader(p.batch_size, shuffle=True, seed=context.seed),
                step,
                stopping,
                max_steps=p.max_steps,
                check_every=p.check_every,
                progress=context.progress,
            )
            # What unlearn_steps spent besides the steps: the stop rule's checks (forward
            # passes over the fixed evaluation subsets), keeping the best state, and
            # reading D_f's batches.
            checks_seconds = time.perf_counter() - stepping - steps_seconds - core_space_seconds
        student.requires_grad_(True)

        kept = {name: c.cpu() for name, c in retained.items()}
        if members is not None:
            kept[MEMBERS] = members
        new_cache = Artifact(
            kept,
            {
                "basis_version": basis_version,
                "layers": [layer.name for layer in layers],
                "samples": cached_samples - len(subtracted),
            },
        )
        info = {
            # The stages, in the order they run: the downdate (Eq. 3), the core spaces
            # (only once a step is about to run), the steps (forward, backward, projection,
            # update) and the stop rule's checks; unlearning_seconds is the last three
            # and the bookkeeping around them.
            "cache_update_seconds": cache_seconds,
            "core_space_seconds": core_space_seconds,
            "steps_seconds": steps_seconds,
            "checks_seconds": checks_seconds,
            "unlearning_seconds": time.perf_counter() - started,
            "core_dims": core_dims,  # k per updated layer (empty when no step ran)
            "basis_version": basis_version,
            "cache_subtracted": len(subtracted),  # D_f's samples the cache held
            **facts,
        }
        return UnlearnResult(state_dict_of(student), {CACHE_ARTIFACT: new_cache}, info)
