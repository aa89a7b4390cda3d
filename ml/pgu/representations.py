"""Which layers PGU updates, and the input representations they see (paper section 3.2.2).

Every ``nn.Linear`` and ``nn.Conv2d`` weight W is a layer; viewed as ``W.view(out, -1)``
it is an (out x d) matrix that multiplies d-vectors, and the weight gradient of any loss
lies in the span of those vectors (the property PGU builds on, its ref. [47]). A layer's
input representation R (d x n) has one column per vector W multiplies:

- ``Linear``: the layer input itself, d = in_features (leading dimensions are samples);
- ``Conv2d``: every patch the kernel multiplies, what ``F.unfold`` takes with the layer's
  kernel size, stride, dilation and padding, d = in_channels/groups x kh x kw in the
  channel-major order of ``weight.view(out, -1)``; every output position of every sample
  is one column, so R spans exactly the vectors the weight gradient is built from.

The cache is C = R R^T (Eq. 2), accumulated over mini-batches as sum_b R_b R_b^T. A
grouped convolution has one R per group, and so one C per group (``Layer.cache_shape``):
group g's filters, rows g*out/groups to (g+1)*out/groups of ``weight.view(out, -1)``,
multiply only group g's patches.

Implementation notes (differences from the paper and the authors' code):
- Representations are captured in the layers' own forward passes, on a copy of the model
  whose Linear and Conv2d modules accumulate their input's R R^T as they run, so any
  ``nn.Module`` works without tracing (the authors use torchvision's feature extractor
  and per-architecture tables of layer names). A module called several times in one
  forward pass contributes the inputs of every call.
- The forward passes run on a float64 copy of the model, not only the accumulation:
  a sample's representation is then the same to ~1e-16 whichever batch it is in, so
  subtracting R_f R_f^T removes what adding it put in (Eq. 3) to round-off. What makes
  that affordable on the CPU (where a float64 convolution is about 6x slower than a
  float32 one): a plain Conv2d computes its output from the patches the cache reads,
  read once in the channels-last layout (:func:`_rows`), and only the blocks of C on and
  below its diagonal are multiplied (:func:`_add_gram`), 64 samples at a time on the CPU
  (``CPU_COVARIANCE_BATCH``). The pass over 5,468 samples of small_cnn on Fashion-MNIST
  took 4.36 s against 9.52 s with ``F.unfold``, pre-hooks and PyTorch's own float64
  convolutions (2 threads, AMD EPYC; ``python -m benchmarks.cache_update``).
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
    "covariance_batch",
    "input_covariances",
]

READ_CHUNK = 4096  # samples read from the adapter at a time while building a cache
# The patches one layer holds at once. A batch's patches can be far bigger than its
# activations (at 28x28 one of ResNet-18's first convolutions unfolds 256 float64 samples
# into 0.9 GB), so the batch is read in slices of a few samples.
UNFOLD_BYTES = 64 * 2**20
# Samples per forward pass of the float64 copy (the sum is the same to round-off whatever
# the batching). On the CPU a small batch keeps a convolution's float64 activations in
# cache: small_cnn's first layer makes 200 KB of them per 28x28 image, 51 MB for 256. Its
# pass over 5,468 images took 4.7 s in batches of 64 against 6.1 to 6.4 s in batches of 256
# (48: 4.6 s, 96: 5.4 s); ResNet-18's the same either way (2 threads, AMD EPYC,
# ``python -m benchmarks.cache_update``). On CUDA it stays at 256 (not measured there).
CPU_COVARIANCE_BATCH = 64
CUDA_COVARIANCE_BATCH = 256


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
    per group (a single one but for grouped convolutions), in the order of the weight's
    columns."""
    rows = _rows(module, inputs)
    split = _tap_major_split(module)
    if split is None:
        return rows
    groups, n, _ = rows.shape
    return rows.view(groups, n, *split).transpose(2, 3).reshape(groups, n, -1)


def _rows(module: nn.Linear | nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    """:func:`input_representation`'s rows, a convolution's in tap-major order: kernel
    position (i, j) first, then channel, where the weight's own order is channel first.

    Read in that order from the channels-last layout, a patch is kh x kw runs of
    contiguous channels: one batch of 256 at small_cnn's second convolution copied in
    0.045 to 0.050 s, against 0.076 to 0.087 s in the weight's order and 0.118 s by
    ``F.unfold`` and its reordering (2 threads, AMD EPYC). The covariance is accumulated
    in tap-major order and reordered once (:func:`_tap_major_split`)."""
    if isinstance(module, nn.Linear):
        return inputs.reshape(1, -1, module.in_features)
    out_h, out_w = _output_size(module, *inputs.shape[2:])
    pads = module._reversed_padding_repeated_twice  # what Conv2d pads, its mode included
    if any(pads):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        inputs = F.pad(inputs, pads, mode=mode)
    inputs = inputs.contiguous(memory_format=torch.channels_last)
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    n, channels = inputs.shape[:2]
    sn, sc, sy, sx = inputs.stride()
    windows = inputs.as_strided(  # every patch the kernel multiplies, one per output position
        (n, out_h, out_w, kh, kw, module.groups, channels // module.groups),
        (sn, sy * sh, sx * sw, sy * dh, sx * dw, sc * channels // module.groups, sc),
    )  # groups own contiguous channels
    per_group = windows.permute(5, 0, 1, 2, 3, 4, 6)
    return per_group.reshape(module.groups, n * out_h * out_w, -1)


def _output_size(module: nn.Conv2d, height: int, width: int) -> tuple[int, int]:
    """(H', W') of ``module`` on an input of this size, before its padding."""
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    left, right, top, bottom = module._reversed_padding_repeated_twice
    height, width = height + top + bottom, width + left + right
    return (height - dh * (kh - 1) - 1) // sh + 1, (width - dw * (kw - 1) - 1) // sw + 1


def _tap_major_split(module: nn.Linear | nn.Conv2d) -> tuple[int, int] | None:
    """(taps, channels per group): a tap-major column t * channels + c is the weight's
    column c * taps + t, so a transpose of these two axes turns one order into the other;
    None where the orders are the same."""
    if isinstance(module, nn.Linear):
        return None
    taps = module.kernel_size[0] * module.kernel_size[1]
    channels = module.in_channels // module.groups
    return None if taps == 1 or channels == 1 else (taps, channels)


def _add_gram(covariance: torch.Tensor, rows: torch.Tensor) -> None:
    """covariance (groups, d, d) += rows^T rows for rows (groups, n, d), on and below the
    diagonal blocks only (:func:`_mirror_upper`): C is symmetric, and skipping the blocks
    above the diagonal saves a quarter of the products with 2 blocks, 3/8 with 4 (0.88x
    the time at d = 288, 0.64x to 0.73x at d = 3,136, on a 2-core AMD EPYC)."""
    d = rows.shape[-1]
    edges = _block_edges(d)
    for i in range(len(edges) - 1):
        below = rows[..., edges[i] : edges[i + 1]].mT
        for j in range(i + 1):
            block = covariance[:, edges[i] : edges[i + 1], edges[j] : edges[j + 1]]
            block.baddbmm_(below, rows[..., edges[j] : edges[j + 1]])


def _mirror_upper(covariance: torch.Tensor) -> None:
    """Fill the blocks :func:`_add_gram` skipped, above the diagonal, from those below."""
    edges = _block_edges(covariance.shape[-1])
    for i in range(len(edges) - 1):
        for j in range(i):
            lower = covariance[:, edges[i] : edges[i + 1], edges[j] : edges[j + 1]]
            covariance[:, edges[j] : edges[j + 1], edges[i] : edges[i + 1]] = lower.mT


def _block_edges(d: int) -> list[int]:
    """Up to 4 blocks at least 128 wide: narrower ones lose more in GEMM efficiency than
    they save (measured at d = 288 to 4,608)."""
    blocks = min(4, max(1, d // 128))
    return [round(i * d / blocks) for i in range(blocks + 1)]


def covariance_batch(device: torch.device) -> int:
    """The samples per forward pass :func:`input_covariances` runs on ``device``."""
    return CPU_COVARIANCE_BATCH if device.type == "cpu" else CUDA_COVARIANCE_BATCH


@torch.no_grad()
def input_covariances(
    model: nn.Module,
    samples: SampleSet,
    *,
    device: torch.device,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """C = R R^T (Eq. 2) for every layer over ``samples``, float64, keyed by weight name
    (``Layer.cache_shape``: one per group of a grouped convolution).

    Runs a float64 copy of ``model``, ``batch_size`` samples at a time (by default
    :func:`covariance_batch`); ``model`` itself is not changed. ``progress`` is called
    with (samples done, samples in all) after every chunk read.
    """
    batch_size = batch_size or covariance_batch(device)
    twin = copy.deepcopy(model).to(device=device, dtype=torch.float64).eval()
    layers = discover_layers(twin)
    covariances = {
        layer.name: torch.zeros(layer.cache_shape, dtype=torch.float64, device=device)
        for layer in layers
    }
    for layer in layers:  # the twin is ours: its layers' forward passes accumulate C
        layer.module.forward = _accumulating_forward(  # type: ignore[method-assign]
            layer, covariances[layer.name]
        )
    try:
        for start in range(0, len(samples), READ_CHUNK):
            chunk = samples.take(np.arange(start, min(start + READ_CHUNK, len(samples))))
            inputs, _ = chunk.tensors()
            for batch in inputs.split(batch_size):
                twin(batch.to(device=device, dtype=torch.float64))
            if progress is not None:
                progress(start + len(chunk), len(samples))
    finally:
        for layer in layers:
            del layer.module.forward  # the closures refer to their modules
    for layer in layers:
        covariance = covariances[layer.name]
        _mirror_upper(covariance.view(-1, layer.dim, layer.dim))
        split = _tap_major_split(layer.module)
        if split is not None:  # from the tap-major order it was accumulated in, in one copy
            per_axis = covariance.view(-1, *split, *split).permute(0, 2, 1, 4, 3)
            covariances[layer.name] = per_axis.reshape(layer.cache_shape)
    return covariances


def _accumulating_forward(layer: Layer, covariance: torch.Tensor) -> Callable[..., torch.Tensor]:
    """``layer.module``'s forward pass that also adds its input's R R^T to ``covariance``,
    the patches read a few samples at a time (``UNFOLD_BYTES``).

    A plain ``nn.Conv2d`` computes its output from those patches, R W^T, as its own
    float64 convolution would (the same products: PyTorch's CPU float64 convolution
    unfolds too) without unfolding them a second time. Any other module, a subclass of
    Conv2d that may change its weight in its forward pass included, runs its own forward
    pass on the whole batch."""
    module = layer.module
    own_forward = module.forward
    per_group = covariance.view(-1, layer.dim, layer.dim)
    # a plain Conv2d computes its output from the patches (isinstance would admit subclasses)
    conv = module if type(module) is nn.Conv2d else None

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        if conv is not None:
            height, width = _output_size(conv, *inputs.shape[2:])
            patch = layer.dim * layer.groups  # every group's patch at one position
            sample_bytes = height * width * patch * inputs.element_size()
            outputs = _Convolved(conv, len(inputs), height, width)
        else:
            sample_bytes = inputs[:1].numel() * inputs.element_size()
            outputs = None
        per_slice = max(1, UNFOLD_BYTES // sample_bytes)
        done = 0
        for part in inputs.split(per_slice):
            rows = _rows(module, part)  # tap-major (the covariance is reordered at the end)
            _add_gram(per_group, rows)
            if outputs is not None:
                outputs.add(rows, done)
            done += len(part)
        return outputs.result() if outputs is not None else own_forward(inputs)

    return forward


class _Convolved:
    """A convolution's output (N, out, H', W'), contiguous as Conv2d's own is (a model may
    ``view`` it), filled from its input's patches (groups, n H' W', d), tap-major
    (:func:`_rows`), n samples at a time: group g's filters times each sample's patches
    of group g, plus the bias. For an ungrouped convolution one batched product per slice
    writes the outputs in place (about half the time of one product and a reordering
    copy at small_cnn's convolutions)."""

    def __init__(self, module: nn.Conv2d, samples: int, height: int, width: int) -> None:
        self.positions = height * width
        groups, taps = module.groups, module.kernel_size[0] * module.kernel_size[1]
        per_group = module.weight.view(groups, module.out_channels // groups, -1, taps)
        self.weight = per_group.transpose(2, 3).flatten(2)  # (groups, out / groups, d)
        bias = module.bias
        self.bias = None if bias is None else bias.view(groups, 1, -1, 1)
        self.outputs = self.weight.new_empty(samples, groups, self.weight.shape[1], self.positions)
        self.shape = (samples, module.out_channels, height, width)

    def add(self, rows: torch.Tensor, first_sample: int) -> None:
        groups, per_group, d = self.weight.shape
        n = rows.shape[1] // self.positions
        patches = rows.view(groups, n, self.positions, d).mT  # (groups, n, d, H' W')
        target = self.outputs[first_sample : first_sample + n]  # (n, groups, out/groups, H' W')
        if groups == 1:
            weight = self.weight[0].expand(n, per_group, d)
            if self.bias is None:
                torch.bmm(weight, patches[0], out=target[:, 0])
            else:
                torch.baddbmm(self.bias[0], weight, patches[0], out=target[:, 0])
            return
        products = torch.matmul(self.weight[:, None], patches)  # (groups, n, out/groups, H' W')
        if self.bias is not None:
            products += self.bias
        target.copy_(products.transpose(0, 1))

    def result(self) -> torch.Tensor:
        return self.outputs.view(self.shape)
