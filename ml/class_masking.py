"""Class deletion's guarantee, shared by every unlearner: forgotten classes are never predicted.

``mask_classes`` rewrites the output layer of the weights that will be published: the
rows of the forgotten classes become 0 and their bias entries ``MASKED_LOGIT`` (-1e4), so
those logits equal -1e4 whatever the input and softmax gives them probability 0 (exp(-1e4)
underflows). The mask lives in the weights, so a published version is self-contained:
loaded into the same architecture it already refuses the classes, with no mask to carry
beside it. This is the PGU paper's "remove the rows corresponding to forgetting classes in
the last linear layer" (section 4.3) without changing the layer's shape.

The output layer is taken to be the last ``nn.Linear`` in registration order, which holds
for the architectures of ``ml.architectures`` (torchvision's classifiers included: a
ResNet's ``fc``, the last layer of MobileNet's, EfficientNet's and ConvNeXt's
``classifier``, a ViT's ``heads.head``). ``ml.architectures.check_fits`` refuses, when a
model is created, a network whose last ``nn.Linear`` does not have one output per class
(a plug-in's, or a torchvision network whose classifier is a convolution).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["MASKED_LOGIT", "output_layer", "mask_classes"]

MASKED_LOGIT = -1e4


def output_layer(model: nn.Module) -> nn.Linear:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None:
        raise ValueError("the model has no Linear layer whose classes could be masked")
    return last


@torch.no_grad()
def mask_classes(model: nn.Module, classes: Iterable[int]) -> nn.Module:
    """Mask ``classes`` in ``model``'s output layer in place; returns the model."""
    layer = output_layer(model)
    rows = sorted(set(classes))
    if layer.bias is None:
        raise ValueError("masking classes needs a bias on the output layer")
    if any(not 0 <= c < layer.out_features for c in rows):
        raise ValueError(f"Invalid classes {rows} for an output layer of {layer.out_features}")
    layer.weight[rows] = 0.0
    layer.bias[rows] = MASKED_LOGIT
    return model
