"""A classifier's features: the input of its output layer.

DAU's Barlow Twins term compares the encoder features D_enc(x) of forget and held-out
samples, and LTU's feature-space sampler measures distances in a light feature space. For
any model of ``ml.architectures`` the network splits as D(x) = D_fc(D_enc(x)) with D_fc the
output layer (the last ``nn.Linear``, the one class masking rewrites), so the features
are what enters that layer, flattened. They are read with a forward pre-hook, so the model
runs once and gradients flow through both outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from ml.class_masking import output_layer

__all__ = ["logits_and_features"]


def logits_and_features(
    model: nn.Module, inputs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(model(inputs), the input of its output layer flattened to (batch, features))."""
    seen: list[torch.Tensor] = []

    def keep(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append(args[0])

    handle = output_layer(model).register_forward_pre_hook(keep)
    try:
        logits = model(inputs)
    finally:
        handle.remove()
    return logits, seen[-1].flatten(1)
