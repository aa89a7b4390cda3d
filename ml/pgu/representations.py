"""Which layers PGU updates, and the input representations they see (paper section 3.2.2).

Every ``nn.Linear`` and ``nn.Conv2d`` weight W is a layer; viewed as ``W.view(out, -1)``
it is an (out x d) matrix that multiplies d-vectors, and the weight gradient of any loss
lies in the span of those vectors (the property PGU builds on, its ref. [47]). A layer's
input representation R (d x n) has one column per vector W multiplies:

- ``Linear``: the layer input itself, d = in_features (leading dimensions are samples);
- ``Conv2d``: every patch the kernel multiplies, taken by ``F.unfold`` with the layer's
  kernel size, stride, dilation and padding, d = in_channels/groups x kh x kw in the
  channel-major order of ``weight.view(out, -1)``; every output position of every sample
  is one column, so R spans exactly the vectors the weight gradient is built from.

The cache is C = R R^T (Eq. 2), accumulated over mini-batches as sum_b R_b R_b^T. A
grouped convolution has one R per group, and so one C per group (``Layer.cache_shape``):
group g's filters, rows g*out/groups to (g+1)*out/groups of ``weight.view(out, -1)``,
multiply only group g's patches.

Implementation notes (differences from the paper and the authors' code):
- Representations are captured with forward pre-hooks on the modules themselves, so any
  ``nn.Module`` works without tracing (the authors use torchvision's feature extractor
  and per-architecture tables of layer names). A module called several times in one
  forward pass contributes the inputs of every call.
- The forward passes run on a float64 copy of the model, not only the accumulation:
  a sample's representation is then the same to ~1e-16 whichever batch it is in, so
  subtracting R_f R_f^T removes what adding it put in (Eq. 3) to round-off.
- The model runs in eval mode (BatchNorm running statistics, no dropout); the authors
  leave dropout active while building the cache.
- Convolutions are unfolded with their own stride and dilation. The authors' code unfolds
  every convolution with stride 1 and dilation 1: for a strided layer that adds the
  patches between its output positions, which it never multiplies (a ResNet's 1x1
  stride-2 shortcut sees a quarter of the positions it would cache), and for a dilated one
  it caches other patches than those it multiplies. Both change the singular values the
  gamma cut reads, so the core space would protect directions of inputs the layer never
  sees.
- Grouped convolutions (MobileNet's and EfficientNet's depthwise ones, ResNeXt's): each
  group gets its own C, core space and projection, as if its filters were a layer of
  their own, which is what PGU's maths asks of them. One C summed over the groups would
  let the gamma cut drop the directions of a group whose inputs are small beside the
  others', and a step would then move that group's outputs on retained data.
- Non-zero padding modes (reflect, replicate, circular) and string paddings pad the
  input the way ``Conv2d`` does before unfolding.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.samples import SampleSet

__all__ = [
    "Layer",
    "cache_bytes",
    "discover_layers",
    "input_representation",
    "input_covariances",
]

READ_CHUNK = 4096  # samples read from the adapter at a time while building a cache
# The unfolded patches one layer holds at once. A batch's patches can be far bigger than its
# activations (at 28x28 one of ResNet-18's first convolutions unfolds 256 float64 samples
# into 0.9 GB, twice over with the reordering copy), so the batch is unfolded in slices.
UNFOLD_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Layer:
    name: str  # the weight parameter's name, e.g. "features.0.weight" (the cache key)
    module_name: str  # e.g. "features.0" (the key of a per-layer gamma override)
    module: nn.Linear | nn.Conv2d

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight

    @property
    def dim(self) -> int:
        """d: the length of one column of R (one row of ``weight.view(out, -1)``)."""
        return self.module.weight[0].numel()

    @property
    def groups(self) -> int:
        return self.module.groups if isinstance(self.module, nn.Conv2d) else 1

    @property
    def cache_shape(self) -> tuple[int, ...]:
        """(d, d), or (groups, d, d) for a grouped convolution: one C per group."""
        square = (self.dim, self.dim)
        return square if self.groups == 1 else (self.groups, *square)


def discover_layers(model: nn.Module) -> list[Layer]:
    """Every Linear and Conv2d of ``model`` in registration order, one entry per weight."""
    layers: list[Layer] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        if not isinstance(module, nn.Linear | nn.Conv2d):
            continue
        if id(module.weight) in seen:  # a weight tied to an earlier layer's
            continue
        seen.add(id(module.weight))
        name = f"{module_name}.weight" if module_name else "weight"
        layers.append(Layer(name, module_name, module))
    return layers


def cache_bytes(model: nn.Module) -> int:
    """The size of one version's cache of ``model``: every layer's float64 C
    (``Layer.cache_shape``), whatever the number of samples (their key hashes, 8 bytes
    each, aside). ``model`` may live on the meta device."""
    return sum(math.prod(layer.cache_shape) * 8 for layer in discover_layers(model))


def input_representation(module: nn.Linear | nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    """The columns of R for this input batch, as rows: (groups, n, d), one (n x d) matrix
    per group (a single one but for grouped convolutions)."""
    if isinstance(module, nn.Linear):
        return inputs.reshape(1, -1, module.in_features)
    padding: tuple[int, ...] | int = module.padding  # type: ignore[assignment]
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        # What Conv2d itself does for these cases (see Conv2d._conv_forward).
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        inputs = F.pad(inputs, module._reversed_padding_repeated_twice, mode=mode)
        padding = 0
    patches = F.unfold(
        inputs,
        module.kernel_size,
        dilation=module.dilation,
        padding=padding,
        stride=module.stride,
    )  # (N, C*kh*kw, L): one column per output position, channel-major like the weight
    n, _, positions = patches.shape
    patches = patches.view(n, module.groups, -1, positions)  # groups own contiguous channels
    return patches.permute(1, 0, 3, 2).reshape(module.groups, n * positions, -1)


@torch.no_grad()
def input_covariances(
    model: nn.Module,
    samples: SampleSet,
    *,
    batch_size: int,
    device: torch.device,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """C = R R^T (Eq. 2) for every layer over ``samples``, float64, keyed by weight name
    (``Layer.cache_shape``: one per group of a grouped convolution).

    Runs a float64 copy of ``model``; ``model`` itself is not changed. ``progress`` is
    called with (samples done, samples in all) after every chunk read.
    """
    twin = copy.deepcopy(model).to(device=device, dtype=torch.float64).eval()
    layers = discover_layers(twin)
    covariances = {
        layer.name: torch.zeros(layer.cache_shape, dtype=torch.float64, device=device)
        for layer in layers
    }

    def accumulate(name: str):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            inputs = args[0]
            one = input_representation(module, inputs[:1])  # type: ignore[arg-type]
            per_slice = max(1, UNFOLD_BYTES // (one.numel() * one.element_size()))
            for part in inputs.split(per_slice):
                columns = input_representation(module, part)  # type: ignore[arg-type]
                d = columns.shape[-1]
                per_group = covariances[name].view(-1, d, d)  # (d, d) is one group of them
                per_group.baddbmm_(columns.transpose(1, 2), columns)  # += R_b R_b^T

        return hook

    handles = [layer.module.register_forward_pre_hook(accumulate(layer.name)) for layer in layers]
    try:
        for start in range(0, len(samples), READ_CHUNK):
            chunk = samples.take(np.arange(start, min(start + READ_CHUNK, len(samples))))
            inputs, _ = chunk.tensors()
            for batch in inputs.split(batch_size):
                twin(batch.to(device=device, dtype=torch.float64))
            if progress is not None:
                progress(start + len(chunk), len(samples))
    finally:
        for handle in handles:
            handle.remove()
    return covariances
