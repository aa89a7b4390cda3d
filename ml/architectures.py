"""Model architectures by name, shaped from the dataset's input shape and class count."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ml.registry import Registry

__all__ = ["Architecture", "architectures", "build_model", "parameter_count"]


class Architecture:
    """A builder with its own params schema."""

    Params: type[BaseModel]
    build: Callable[..., nn.Module]

    def __init__(self, params: type[BaseModel], build: Callable[..., nn.Module]) -> None:
        self.Params, self.build = params, build


architectures: Registry[Architecture] = Registry("architecture")


Width = Annotated[int, Field(ge=1, le=4096)]  # units of a linear layer
Channels = Annotated[int, Field(ge=1, le=1024)]  # feature maps of a conv layer


class MLPParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    hidden: list[Width] = Field(default_factory=lambda: [128, 64], min_length=1, max_length=8)


def _mlp(input_shape: list[int], num_classes: int, params: MLPParams) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for hidden in params.hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


architectures.register("mlp")(Architecture(MLPParams, _mlp))


class SmallCNNParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    channels: list[Channels] = Field(default_factory=lambda: [32, 64], min_length=2, max_length=2)
    hidden: int = Field(128, ge=8, le=4096)


def _small_cnn(input_shape: list[int], num_classes: int, params: SmallCNNParams) -> nn.Module:
    """Two 3x3 conv blocks with max-pooling, then two linear layers."""
    if len(input_shape) != 3:
        raise ValueError(f"small_cnn needs an image input (C, H, W), got {input_shape}")
    in_channels, height, width = input_shape
    c1, c2 = params.channels
    flat = c2 * (height // 4) * (width // 4)
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, params.hidden),
        nn.ReLU(),
        nn.Linear(params.hidden, num_classes),
    )


architectures.register("small_cnn")(Architecture(SmallCNNParams, _small_cnn))


def validate_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Checked params with defaults filled in (raises UnknownName or ValidationError)."""
    return architectures.get(name).Params.model_validate(params).model_dump(mode="json")


def parameter_count(
    name: str, params: dict[str, Any], input_shape: list[int], num_classes: int
) -> int:
    """How many parameters the network would have, without allocating them (built on the
    meta device), so a request cannot make the service allocate a huge model to find out."""
    with torch.device("meta"):
        network = build_model(name, params, input_shape, num_classes)
    return sum(p.numel() for p in network.parameters())


def build_model(
    name: str, params: dict[str, Any], input_shape: list[int], num_classes: int
) -> nn.Module:
    architecture = architectures.get(name)
    return architecture.build(input_shape, num_classes, architecture.Params.model_validate(params))
