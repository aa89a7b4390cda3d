"""An example unlearnd architecture: a tiny convolutional network.

unlearnd finds it through the entry point ``tiny_convnet`` of the group
``unlearnd.architectures`` (pyproject.toml), which names :class:`TinyConvNet`: an object
with a pydantic ``Params`` class and a ``build`` function. What unlearnd asks of it:

- ``Params`` is strict and forbids unknown keys, so a typo in a model's ``params`` answers
  422 instead of being ignored; every field has a default and bounds (they are what
  ``GET /v1/architectures`` shows).
- ``build(input_shape, num_classes, params)`` returns a fresh, randomly initialised
  ``torch.nn.Module`` whose ``forward`` maps a batch of ``input_shape`` inputs to
  ``(N, num_classes)`` logits. Building and ``forward`` must work on the meta device (no
  ``.item()``, ``.tolist()`` or branches on tensor values): the service sizes the network
  there and runs it once on a batch of the dataset's shape before allocating anything.
- The last ``nn.Linear`` is the output layer (class deletion masks its rows), and layers
  are called as modules (PGU reads their inputs with forward hooks).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

__all__ = ["TinyConvNet", "TinyConvNetParams", "build"]

Channels = Annotated[int, Field(ge=1, le=256)]


class TinyConvNetParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    channels: list[Channels] = Field(
        default_factory=lambda: [8, 16],
        min_length=1,
        max_length=4,
        description="feature maps of each 3x3 convolution; each stage halves the image",
    )


def build(input_shape: list[int], num_classes: int, params: TinyConvNetParams) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"tiny_convnet takes images (C, H, W), got {input_shape}")
    layers: list[nn.Module] = []
    width = input_shape[0]
    for channels in params.channels:
        layers += [nn.Conv2d(width, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        width = channels
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)
    )


class TinyConvNet:
    """What the entry point names."""

    Params = TinyConvNetParams
    build = staticmethod(build)
