"""torchvision networks by builder name: every builder docs/models.md names builds for 1-
and 3-channel images at 28 and 32 pixels or is refused with its reason, as the table says;
its output layer is the classifier class deletion masks; the methods refuse it as the
table says; nothing is downloaded. Built on the meta device (shapes only) except a few
small networks run on a tiny batch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from ml import unlearners
from ml.architectures import ArchitectureError, build_model, check_fits, structure, validate_params
from ml.class_masking import output_layer
from ml.torchvision_models import builders
from ml.vib import VariationalBottleneck, vib_loss

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"
ROW = re.compile(
    r"^\| `(?P<builder>\w+)` \| (?P<family>[\w ]+) \| (?P<at28>yes|no) \| (?P<at32>yes|no) "
    r"\| `(?P<output>[\w.]+)` \| (?P<refused>[`\w, ]*) \|$",
    re.M,
)


def _documented() -> list[dict[str, str]]:
    rows = [m.groupdict() for m in ROW.finditer(DOC.read_text())]
    assert len(rows) >= 10, "docs/models.md lost its table of tested builders"
    return rows


DOCUMENTED = _documented()
BY_BUILDER = {row["builder"]: row for row in DOCUMENTED}


def _network(builder: str, shape: list[int], classes: int = 10, **params: object) -> nn.Module:
    return structure(
        "torchvision",
        validate_params("torchvision", {"builder": builder, **params}),
        shape,
        classes,
    )


def test_the_documented_families_are_there():
    families = {row["family"] for row in DOCUMENTED}
    assert {"ResNet", "MobileNetV3", "EfficientNet", "ConvNeXt", "ViT"} <= families
    assert all(row["builder"] in builders() for row in DOCUMENTED)


@pytest.mark.parametrize("row", DOCUMENTED, ids=lambda row: row["builder"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
def test_documented_builders_take_the_sizes_the_table_says(row, channels, size):
    shape = [channels, size, size]
    accepted = row[f"at{size}"] == "yes"
    if not accepted:
        with pytest.raises(ArchitectureError, match=str(shape).replace("[", r"\[")) as refused:
            check_fits(_network(row["builder"], shape), shape, 10)
        assert len(str(refused.value)) > 40  # the network's own reason, not a bare failure
        return
    network = _network(row["builder"], shape, classes=7)
    check_fits(network, shape, 7)
    with torch.no_grad():
        logits = network.eval()(torch.empty(3, *shape, device="meta"))
    assert logits.shape == (3, 7)
    first = next(m for m in network.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == channels


@pytest.mark.parametrize("row", DOCUMENTED, ids=lambda row: row["builder"])
def test_the_output_layer_is_the_classifier(row):
    network = _network(row["builder"], [3, 32, 32], classes=7)
    layer = output_layer(network)
    assert layer is network.get_submodule(row["output"])
    assert layer.out_features == 7


@pytest.mark.parametrize("row", DOCUMENTED, ids=lambda row: row["builder"])
def test_methods_refuse_the_builders_the_table_says(row):
    network = _network(row["builder"], [3, 32, 32])
    refused = {
        name
        for name in unlearners.list_unlearners()
        if unlearners.unlearner_class(name).unsuitable_for(network) is not None
    }
    assert refused == set(re.findall(r"`(\w+)`", row["refused"]))


def test_pgu_refuses_vit_for_its_multihead_attention_and_swin_for_its_functional_one():
    pgu = unlearners.unlearner_class("pgu")
    vit = pgu.unsuitable_for(_network("vit_b_16", [3, 32, 32]))
    assert vit is not None and "nn.MultiheadAttention" in vit and "encoder" in vit
    swin = pgu.unsuitable_for(_network("swin_t", [3, 32, 32]))
    assert swin is not None and "Swin" in swin and "features" in swin
    assert pgu.unsuitable_for(_network("resnet18", [1, 28, 28])) is None


@pytest.mark.parametrize(
    ("builder", "params"),
    [
        ("resnet18", {"small_input_stem": True}),
        ("mobilenet_v3_small", {}),
    ],
)
def test_small_networks_compute_logits_on_a_tiny_batch(builder, params):
    torch.manual_seed(0)
    network = build_model("torchvision", {"builder": builder, **params}, [1, 28, 28], 10)
    network.train()
    logits = network(torch.randn(2, 1, 28, 28))
    assert logits.shape == (2, 10)
    logits.sum().backward()  # it trains: every parameter gets a gradient
    assert all(p.grad is not None for p in network.parameters() if p.requires_grad)


def test_small_input_stem_replaces_a_resnets_stem_and_keeps_the_image_size():
    network = _network("resnet18", [1, 28, 28], small_input_stem=True)
    conv1 = network.conv1
    assert (conv1.in_channels, conv1.kernel_size, conv1.stride) == (1, (3, 3), (1, 1))
    assert isinstance(network.maxpool, nn.Identity)
    seen = []
    network.layer4.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
    network.eval()(torch.empty(2, 1, 28, 28, device="meta"))
    assert seen == [(4, 4)]  # a standard stem leaves 1x1 here
    standard = _network("resnet18", [1, 28, 28])
    assert (standard.conv1.kernel_size, standard.conv1.stride) == ((7, 7), (2, 2))


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"builder": "resnet19"}, "unknown torchvision builder"),
        ({"builder": "fasterrcnn_resnet50_fpn"}, "unknown torchvision builder"),
        ({"builder": "squeezenet1_0"}, "not an nn.Linear"),
        ({"builder": "regnet_y_400mf"}, "meta device"),
        ({"builder": "mobilenet_v3_small", "small_input_stem": True}, "ResNet"),
        ({"builder": "vit_b_16", "small_input_stem": True}, "ResNet"),
        ({"builder": "resnet18", "small_input_stem": "true"}, "boolean"),
        ({"builder": "resnet18", "weights": "IMAGENET1K_V1"}, "Extra inputs"),
        ({"builder": 18}, "string"),
    ],
)
def test_params_are_checked(params, reason):
    with pytest.raises(ValidationError, match=reason):
        validate_params("torchvision", params)


def test_defaults_are_a_resnet18_with_its_standard_stem():
    assert validate_params("torchvision", {}) == {
        "builder": "resnet18",
        "small_input_stem": False,
        "vib": None,
    }


@pytest.mark.parametrize(
    ("vib", "reason"),
    [({"z_dim": 0}, "greater than or equal to 1"), ({"z": 8}, "Extra inputs"), (8, "dict")],
)
def test_vib_params_are_checked(vib, reason):
    with pytest.raises(ValidationError, match=reason):
        validate_params("torchvision", {"builder": "resnet18", "vib": vib})


@pytest.mark.parametrize("builder", ["resnet18", "mobilenet_v3_small"])
def test_a_vib_head_makes_the_backbone_a_bottleneck_rfu_ss_takes(builder):
    """The backbone's output layer gives z's 2 x z_dim statistics, a linear approximator
    maps z to the classes, and that approximator is the output layer class deletion masks;
    RFU-SS takes the network, and the VIB loss trains it."""
    params = validate_params("torchvision", {"builder": builder, "vib": {"z_dim": 12}})
    assert params["vib"] == {"z_dim": 12}
    network = structure("torchvision", params, [1, 28, 28], 7)
    assert isinstance(network, VariationalBottleneck) and network.z_dim == 12
    check_fits(network, [1, 28, 28], 7)
    assert output_layer(network) is network.approximator
    assert (network.approximator.in_features, network.approximator.out_features) == (12, 7)
    assert unlearners.unlearner_class("rfu_ss").unsuitable_for(network) is None
    plain = _network(builder, [1, 28, 28], classes=7)
    assert unlearners.unlearner_class("rfu_ss").unsuitable_for(plain) is not None

    torch.manual_seed(0)
    real = build_model("torchvision", params, [1, 28, 28], 7).train()
    mean, std = real.encode(torch.randn(4, 1, 28, 28))
    assert mean.shape == std.shape == (4, 12) and bool((std > 0).all())
    vib_loss(real, torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]), beta=1e-3).backward()
    assert all(p.grad is not None for p in real.parameters())


def test_sizes_a_vit_cannot_take_are_refused_with_the_reason():
    with pytest.raises(ArchitectureError, match="multiple of 16"):
        _network("vit_b_16", [1, 28, 28])
    with pytest.raises(ArchitectureError, match="square"):
        _network("vit_b_32", [3, 32, 64])
    with pytest.raises(ArchitectureError, match=r"images \(C, H, W\)"):
        _network("resnet18", [64])
    vit = _network("vit_h_14", [1, 28, 28])
    assert vit.image_size == 28 and vit.conv_proj.in_channels == 1


def test_nothing_is_downloaded(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    network = build_model("torchvision", {"builder": "mobilenet_v3_small"}, [3, 32, 32], 10)
    assert output_layer(network).out_features == 10
