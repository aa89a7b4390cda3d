"""Model architectures by name, shaped from the dataset's input shape and class count.

Registered here: ``mlp``, ``small_cnn``, the bottleneck networks ``vib_mlp`` and
``vib_cnn``, and ``torchvision`` (any torchvision classification builder,
``ml.torchvision_models``). Installed packages add their own through the entry-point group
``unlearnd.architectures`` (:func:`load_plugins`, run once at import): the API names an
architecture and its params, never code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ml import torchvision_models
from ml.class_masking import output_layer
from ml.registry import Registry
from ml.vib import VariationalBottleneck, ZDim

__all__ = [
    "PLUGIN_GROUP",
    "Architecture",
    "ArchitectureError",
    "PluginError",
    "architectures",
    "build_model",
    "check_fits",
    "load_plugins",
    "parameter_count",
    "structure",
    "validate_params",
]

PLUGIN_GROUP = "unlearnd.architectures"


class ArchitectureError(ValueError):
    """The architecture cannot be built for, or does not fit, a dataset's shape."""


class PluginError(RuntimeError):
    """An installed architecture plug-in cannot be registered (the process refuses to start)."""


class Architecture:
    """A builder with its own params schema: ``build(input_shape, num_classes, params)``
    returns an ``nn.Module`` whose ``forward`` gives logits; ``params`` is an instance of
    ``Params``."""

    Params: type[BaseModel]
    build: Callable[..., nn.Module]
    source: str  # "built-in", or the plug-in's distribution and version

    def __init__(
        self, params: type[BaseModel], build: Callable[..., nn.Module], source: str = "built-in"
    ) -> None:
        self.Params, self.build, self.source = params, build, source


architectures: Registry[Architecture] = Registry("architecture")


Width = Annotated[int, Field(ge=1, le=4096)]  # units of a linear layer
Channels = Annotated[int, Field(ge=1, le=1024)]  # feature maps of a conv layer


class MLPParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    hidden: list[Width] = Field(default_factory=lambda: [128, 64], min_length=1, max_length=8)


def _dense(width: int, hidden: list[int], out: int) -> list[nn.Module]:
    """Linear + ReLU per hidden width, then a linear layer to ``out`` units."""
    layers: list[nn.Module] = []
    for units in hidden:
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    return [*layers, nn.Linear(width, out)]


def _mlp(input_shape: list[int], num_classes: int, params: MLPParams) -> nn.Module:
    return nn.Sequential(nn.Flatten(), *_dense(math.prod(input_shape), params.hidden, num_classes))


architectures.register("mlp")(Architecture(MLPParams, _mlp))


class SmallCNNParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    channels: list[Channels] = Field(default_factory=lambda: [32, 64], min_length=2, max_length=2)
    hidden: int = Field(128, ge=8, le=4096)


def _conv_blocks(name: str, input_shape: list[int], channels: list[int]) -> list[nn.Module]:
    """Two 3x3 conv blocks with max-pooling, flattened (``_conv_width`` features)."""
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs an image input (C, H, W), got {input_shape}")
    c1, c2 = channels
    return [
        nn.Conv2d(input_shape[0], c1, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    ]


def _conv_width(input_shape: list[int], channels: list[int]) -> int:
    return channels[1] * (input_shape[1] // 4) * (input_shape[2] // 4)


def _small_cnn(input_shape: list[int], num_classes: int, params: SmallCNNParams) -> nn.Module:
    """Two 3x3 conv blocks with max-pooling, then two linear layers."""
    return nn.Sequential(
        *_conv_blocks("small_cnn", input_shape, params.channels),
        *_dense(_conv_width(input_shape, params.channels), [params.hidden], num_classes),
    )


architectures.register("small_cnn")(Architecture(SmallCNNParams, _small_cnn))


class VIBMLPParams(BaseModel):
    """The RFU-SS authors' MNIST VIB by default: representer 784-96-2x49, approximator
    49-96-10."""

    model_config = ConfigDict(extra="forbid", strict=True)
    representer: list[Width] = Field(default_factory=lambda: [96], max_length=8)
    z_dim: ZDim = 49
    approximator: list[Width] = Field(default_factory=lambda: [96], max_length=8)


def _vib_mlp(input_shape: list[int], num_classes: int, params: VIBMLPParams) -> nn.Module:
    representer = nn.Sequential(
        nn.Flatten(), *_dense(math.prod(input_shape), params.representer, 2 * params.z_dim)
    )
    approximator = nn.Sequential(*_dense(params.z_dim, params.approximator, num_classes))
    return VariationalBottleneck(representer, approximator, params.z_dim)


architectures.register("vib_mlp")(Architecture(VIBMLPParams, _vib_mlp))


class VIBCNNParams(BaseModel):
    """small_cnn's conv blocks as the representer, then a linear layer to z's statistics;
    a linear approximator by default (the paper's CIFAR-10 shape: a conv representer, a
    linear approximator)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    channels: list[Channels] = Field(default_factory=lambda: [32, 64], min_length=2, max_length=2)
    z_dim: ZDim = 64
    approximator: list[Width] = Field(default_factory=list, max_length=8)


def _vib_cnn(input_shape: list[int], num_classes: int, params: VIBCNNParams) -> nn.Module:
    representer = nn.Sequential(
        *_conv_blocks("vib_cnn", input_shape, params.channels),
        nn.Linear(_conv_width(input_shape, params.channels), 2 * params.z_dim),
    )
    approximator = nn.Sequential(*_dense(params.z_dim, params.approximator, num_classes))
    return VariationalBottleneck(representer, approximator, params.z_dim)


architectures.register("vib_cnn")(Architecture(VIBCNNParams, _vib_cnn))

architectures.register("torchvision")(
    Architecture(torchvision_models.TorchvisionParams, torchvision_models.build)
)

_PLUGIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def _plugin_architecture(point: EntryPoint, loaded: object) -> Architecture:
    """What an entry point names, as an Architecture: one already, or any object with a
    pydantic ``Params`` class and a callable ``build``."""
    params, build = getattr(loaded, "Params", None), getattr(loaded, "build", None)
    if isinstance(params, type) and issubclass(params, BaseModel) and callable(build):
        source = f"{point.dist.name} {point.dist.version}" if point.dist else point.value
        return Architecture(params, build, source=f"plug-in {source}")
    raise PluginError(
        f"architecture plug-in {point.name!r} ({point.value}) names neither an "
        "ml.architectures.Architecture nor an object with a pydantic Params class and a "
        "build(input_shape, num_classes, params) function"
    )


def load_plugins(
    registry: Registry[Architecture], found: Iterable[EntryPoint] | None = None
) -> list[str]:
    """Register every architecture that installed packages declare in the entry-point group
    ``unlearnd.architectures`` (``found``: those entry points; by default the installed
    ones); returns their names. A name already taken (a built-in one or another
    plug-in's), a plug-in that fails to import or names no architecture raises
    :class:`PluginError`: a process never starts with an architecture it cannot name."""
    names = []
    for point in entry_points(group=PLUGIN_GROUP) if found is None else found:
        source = f"{point.value} of {point.dist.name}" if point.dist else point.value
        if not _PLUGIN_NAME.fullmatch(point.name):
            raise PluginError(
                f"architecture plug-in {point.name!r} ({source}): a name is 1-100 letters, "
                "digits, '_', '.' or '-'"
            )
        if point.name in registry:
            raise PluginError(
                f"architecture plug-in {point.name!r} ({source}) clashes with the "
                f"architecture already registered as {point.name!r}; rename its entry point"
            )
        try:
            loaded = point.load()
        except Exception as error:
            raise PluginError(
                f"architecture plug-in {point.name!r} ({source}) failed to load: {error}"
            ) from error
        registry.register(point.name)(_plugin_architecture(point, loaded))
        names.append(point.name)
    return names


def validate_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Checked params with defaults filled in (raises UnknownName or ValidationError)."""
    return architectures.get(name).Params.model_validate(params).model_dump(mode="json")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def check_fits(network: nn.Module, input_shape: list[int], num_classes: int) -> None:
    """Raise :class:`ArchitectureError` unless ``network`` (on the meta device: nothing is
    computed) maps a batch of ``input_shape`` inputs to ``num_classes`` logits, and its
    output layer as ``ml.class_masking`` finds it (the last ``nn.Linear``) has one row per
    class, so class deletion masks the right rows."""
    training = network.training
    network.eval()  # a batch of 2 in eval mode: BatchNorm takes it whatever the spatial size
    try:
        with torch.no_grad():
            logits = network(torch.empty(2, *input_shape, device="meta"))
    except Exception as error:
        raise ArchitectureError(
            f"the network cannot take inputs of shape {input_shape}: {_first_line(error)}"
        ) from None
    finally:
        network.train(training)
    shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
    if shape != [2, num_classes]:
        raise ArchitectureError(
            f"the network must return logits of shape (N, {num_classes}); for N=2 it "
            f"returned {shape}"
        )
    try:
        layer = output_layer(network)
    except ValueError as error:
        raise ArchitectureError(str(error)) from None
    if layer.out_features != num_classes:
        raise ArchitectureError(
            f"the last nn.Linear layer has {layer.out_features} outputs, not one per class "
            f"({num_classes}): class deletion masks the rows of the last nn.Linear, which "
            "must be the output layer"
        )


def parameter_count(
    name: str, params: dict[str, Any], input_shape: list[int], num_classes: int
) -> int:
    """How many parameters the network would have, without allocating them (built on the
    meta device), so a request cannot make the service allocate a huge model to find out."""
    network = structure(name, params, input_shape, num_classes)
    return sum(p.numel() for p in network.parameters())


def structure(
    name: str, params: dict[str, Any], input_shape: list[int], num_classes: int
) -> nn.Module:
    """The network's modules on the meta device (nothing allocated), for checks. Whatever
    stops a builder (a plug-in's too) is an :class:`ArchitectureError` naming the shape."""
    architecture = architectures.get(name)
    checked = architecture.Params.model_validate(params)
    try:
        with torch.device("meta"):
            return architecture.build(input_shape, num_classes, checked)
    except Exception as error:
        raise ArchitectureError(
            f"architecture {name!r} cannot be built for inputs of shape {input_shape} and "
            f"{num_classes} classes: {_first_line(error)}"
        ) from None


def build_model(
    name: str, params: dict[str, Any], input_shape: list[int], num_classes: int
) -> nn.Module:
    architecture = architectures.get(name)
    return architecture.build(input_shape, num_classes, architecture.Params.model_validate(params))


load_plugins(architectures)
