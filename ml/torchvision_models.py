"""torchvision's classification networks by builder name, shaped for a dataset.

``build`` makes ``torchvision.models.get_model(builder, weights=None, num_classes=...)``
(never pretrained weights: nothing is downloaded) and adapts it to the dataset:

- the first ``nn.Conv2d`` (a ResNet's ``conv1``, the stem of MobileNet, EfficientNet and
  ConvNeXt, a ViT's or Swin's patch embedding) is replaced by one of the same
  hyper-parameters taking the dataset's channels, when they differ from its 3;
- a ViT gets ``image_size`` and a MaxViT ``input_size`` from the dataset's input size;
- GoogLeNet and Inception v3 lose their auxiliary classifiers (they would change what
  ``forward`` returns while training);
- ``small_input_stem`` (ResNets only) replaces a ResNet's 7x7 stride-2 stem and its
  max-pool with a 3x3 stride-1 convolution and no pooling: the CIFAR convention of the
  papers the methods come from, which keeps 28 and 32 pixel images from shrinking to 1x1
  before the last stage;
- ``vib`` makes the network a variational information bottleneck (``ml.vib``), the shape
  RFU-SS unlearns: the backbone is the representer, its classifier's last ``nn.Linear``
  giving the mean and scale of z (2 x ``z_dim``) instead of the classes, and a linear
  approximator maps z to the classes (the RFU-SS paper's CIFAR-10 shape: a convolutional
  representer, a linear approximator; ``vib_cnn``'s too).

Whether a builder takes a dataset's input size is decided by trying it on the meta device
(``ml.architectures.check_fits``), so sizes a network cannot take are refused with its
own reason. torchvision is imported on first use: importing it costs about as much again
as importing torch, and most processes never build one of these networks.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from ml.vib import VariationalBottleneck, ZDim

__all__ = ["BottleneckParams", "TorchvisionParams", "build", "builders", "refusal", "is_resnet"]

RESNETS = ("resnet", "resnext", "wide_resnet")
# Builders refused by name, with the reason (a prefix of the builder's name).
REFUSED = {
    "squeezenet": "its classifier is a 1x1 convolution, not an nn.Linear layer; class "
    "deletion masks the rows of the output layer, which must be the last nn.Linear",
    "regnet": "it computes its stage widths with tensors, which cannot run on the meta "
    "device where the service sizes a network before allocating it",
}


@functools.cache
def builders() -> tuple[str, ...]:
    """Every classification builder torchvision registers (not detection or video ones)."""
    import torchvision.models as models

    return tuple(models.list_models(module=models))


def refusal(builder: str) -> str | None:
    """Why ``builder`` is not offered, or None when it is."""
    return next((why for prefix, why in REFUSED.items() if builder.startswith(prefix)), None)


def is_resnet(builder: str) -> bool:
    return builder.startswith(RESNETS)


def _supported() -> list[str]:
    return [name for name in builders() if refusal(name) is None]


def _list_builders(schema: dict[str, Any]) -> None:
    schema["enum"] = _supported()


class BottleneckParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    z_dim: ZDim = Field(256, description="dimensions of the bottleneck z")


class TorchvisionParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    builder: str = Field(
        "resnet18",
        max_length=100,
        description="a torchvision classification builder (torchvision.models.list_models); "
        "built with weights=None",
        json_schema_extra=_list_builders,
    )
    small_input_stem: bool = Field(
        False,
        description="ResNets only: a 3x3 stride-1 first convolution and no max-pool "
        "(the CIFAR convention for 28-32 pixel images)",
    )
    vib: BottleneckParams | None = Field(
        None,
        description="a variational information bottleneck on the backbone's features "
        "(what rfu_ss unlearns): the classifier's last linear layer gives z's mean and "
        "scale, a linear layer maps z to the classes; trained with the VIB loss "
        "(training.beta)",
    )

    @field_validator("builder")
    @classmethod
    def _known(cls, builder: str) -> str:
        if builder not in builders():
            raise ValueError(
                f"unknown torchvision builder {builder!r}; known: {', '.join(_supported())}"
            )
        reason = refusal(builder)
        if reason is not None:
            raise ValueError(f"torchvision builder {builder!r} is not supported: {reason}")
        return builder

    @model_validator(mode="after")
    def _stem_for_resnets(self) -> TorchvisionParams:
        if self.small_input_stem and not is_resnet(self.builder):
            raise ValueError(
                f"small_input_stem replaces a ResNet's stem (resnet*, resnext*, wide_resnet*); "
                f"{self.builder!r} has none"
            )
        return self


def _options(builder: str, height: int, width: int) -> dict[str, Any]:
    """The builder's keyword arguments that depend on the dataset's input size."""
    if builder.startswith("vit_"):
        if height != width:
            raise ValueError(f"{builder} takes square images; the dataset's are {height}x{width}")
        patch = int(builder.rsplit("_", 1)[1])  # vit_b_16: 16x16 patches
        if height % patch:
            raise ValueError(
                f"{builder} cuts images into {patch}x{patch} patches; their side must be a "
                f"multiple of {patch}, the dataset's is {height}"
            )
        return {"image_size": height}
    if builder.startswith("maxvit_"):
        return {"input_size": (height, width)}
    if builder in ("googlenet", "inception_v3"):
        return {"aux_logits": False, "init_weights": True}
    return {}


def _first_conv(network: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in network.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError("the network has no nn.Conv2d whose input channels could be adapted")


def _last_linear(network: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier's output layer: the last nn.Linear (``ml.class_masking``'s rule)."""
    found = [(n, m) for n, m in network.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError("the network has no nn.Linear classifier to put a bottleneck on")
    return found[-1]


def _replace(network: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attribute = name.rpartition(".")
    setattr(network.get_submodule(parent) if parent else network, attribute, module)


def _with_channels(conv: nn.Conv2d, channels: int) -> nn.Conv2d:
    """A convolution like ``conv`` (freshly initialised) taking ``channels`` inputs."""
    if conv.groups != 1:
        raise ValueError(f"the first convolution is grouped ({conv.groups}); cannot adapt it")
    return nn.Conv2d(
        channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=1,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )


def _small_stem(network: nn.Module, channels: int) -> None:
    conv1 = network.conv1
    assert isinstance(conv1, nn.Conv2d)
    stem = nn.Conv2d(channels, conv1.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")  # ResNet's own
    network.conv1 = stem
    network.maxpool = nn.Identity()


def _with_bottleneck(network: nn.Module, z_dim: int, num_classes: int) -> VariationalBottleneck:
    """``network`` as the representer of a bottleneck: its output layer now gives the
    2 x ``z_dim`` statistics of q(z|x); a linear approximator maps z to the classes."""
    name, head = _last_linear(network)
    _replace(network, name, nn.Linear(head.in_features, 2 * z_dim))
    return VariationalBottleneck(network, nn.Linear(z_dim, num_classes), z_dim)


def build(input_shape: list[int], num_classes: int, params: TorchvisionParams) -> nn.Module:
    import torchvision.models as models

    if len(input_shape) != 3:
        raise ValueError(f"torchvision networks take images (C, H, W), got {input_shape}")
    channels, height, width = input_shape
    options = _options(params.builder, height, width)
    try:
        network = models.get_model(params.builder, weights=None, num_classes=num_classes, **options)
    except (ValueError, AssertionError, RuntimeError) as error:
        raise ValueError(f"{params.builder}: {error}") from None
    if params.small_input_stem:
        _small_stem(network, channels)
    else:
        name, conv = _first_conv(network)
        if conv.in_channels != channels:
            _replace(network, name, _with_channels(conv, channels))
    if params.vib is not None:
        return _with_bottleneck(network, params.vib.z_dim, num_classes)
    return network
