"""PGU: layer discovery, the cache algebra, the projection, and unlearning on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from ml.architectures import structure
from ml.class_masking import MASKED_LOGIT
from ml.pgu import (
    Projection,
    cache_bytes,
    core_gradient_space,
    discover_layers,
    input_covariances,
    layer_projector,
    project_out,
    residual_projector,
)
from ml.pgu.core_space import singular_values
from ml.pgu.representations import input_representation
from ml.training import predict
from ml.unlearners import early_stopping, get_unlearner, run_unlearner, validate_params
from ml.unlearners import pgu as pgu_module
from ml.unlearners.pgu import CACHE_ARTIFACT, unlearning_loss
from tests.helpers.unlearning import (
    DEVICE,
    RetainGuard,
    accuracy_of,
    context_for,
    digits_setup,
)

FAST = {"max_steps": 6, "stop": "none"}


# --- layer discovery and input representations ---------------------------------------


def test_discovers_every_conv_and_linear_weight():
    setup = digits_setup()
    layers = discover_layers(setup.model())
    assert [layer.name for layer in layers] == ["0.weight", "3.weight", "7.weight", "9.weight"]
    assert [layer.module_name for layer in layers] == ["0", "3", "7", "9"]
    assert [layer.dim for layer in layers] == [1 * 9, 16 * 9, 32 * 2 * 2, 64]


def test_discovery_walks_nested_modules_and_skips_tied_weights():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
            self.head = nn.ModuleDict({"fc": nn.Linear(5, 5), "tied": nn.Linear(5, 5)})
            self.head["tied"].weight = self.head["fc"].weight

    names = [layer.name for layer in discover_layers(Net())]
    assert names == ["body.0.weight", "head.fc.weight"]


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Conv2d(3, 4, (3, 2), padding=(2, 1), dilation=(1, 2), stride=2),
        nn.Conv2d(3, 4, 3, padding="same", padding_mode="reflect"),
        nn.Conv2d(4, 6, 3, padding=1, groups=2),
    ],
    ids=["padded", "strided-dilated", "same-reflect", "grouped"],
)
def test_conv_patches_follow_the_weight_layout(conv):
    """Each patch row r gives the convolution's own output (its stride, dilation and
    padding) as W.view(out, -1) r: one row per output position the layer computes."""
    torch.manual_seed(0)
    inputs = torch.randn(2, conv.in_channels, 7, 6, dtype=torch.float64)
    conv = conv.double()
    rows = input_representation(conv, inputs)
    with torch.no_grad():
        expected = conv(inputs) - conv.bias[:, None, None]  # (N, out, H', W')
    n, out, h, w = expected.shape
    groups, per_group = conv.groups, out // conv.groups
    assert rows.shape == (groups, n * h * w, conv.weight[0].numel())
    rows = rows.view(groups, n, h * w, -1)
    for g in range(groups):
        weight = conv.weight[g * per_group : (g + 1) * per_group].reshape(per_group, -1)
        got = rows[g] @ weight.T  # (N, positions, per_group)
        want = expected[:, g * per_group : (g + 1) * per_group].flatten(2).transpose(1, 2)
        torch.testing.assert_close(got, want)


def _brute_force_patches(conv: nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    """The vectors ``conv`` multiplies, read pixel by pixel: one (C*kh*kw) row per sample
    and output position, zero outside the image (zero padding)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
    )
    n, channels, height, width = inputs.shape
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    rows = []
    for sample in range(n):
        for i in range(out_h):
            for j in range(out_w):
                patch = torch.zeros(channels, kh, kw, dtype=inputs.dtype)
                for a in range(kh):
                    for b in range(kw):
                        y, x = i * sh - ph + a * dh, j * sw - pw + b * dw
                        if 0 <= y < height and 0 <= x < width:
                            patch[:, a, b] = inputs[sample, :, y, x]
                rows.append(patch.flatten())
    return torch.stack(rows)


def test_a_strided_dilated_convs_cache_holds_exactly_the_patches_it_multiplies():
    """Stride 2, padding 1, dilation 2: the cache's C equals the covariance of the patches
    read pixel by pixel at the layer's own output positions (a stride-1 unfold, as the
    authors', would add the positions in between)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=2).double()
    inputs = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    patches = _brute_force_patches(conv, inputs)
    assert patches.shape == (2 * 4 * 3, 27)  # 4x3 output positions per sample
    (rows,) = input_representation(conv, inputs)
    torch.testing.assert_close(rows.T @ rows, patches.T @ patches)


def test_a_projected_gradient_leaves_a_strided_convs_cached_outputs_unchanged():
    """PGU's promise on a strided, dilated, padded convolution: a step along the projected
    gradient changes the layer's outputs on the cached inputs by nothing (to first order;
    the layer is linear in W, so exactly), while the step itself is not zero. With gamma
    just under 1 the core space spans every cached patch (the round-off eigenvalues of the
    empty directions weigh ~1e-8 of the sum); there are fewer patches (2 samples x 16
    positions) than dimensions (8 x 3 x 3), so room to move is left. Unfolded at stride 1
    (98 patches) they would fill all 72 dimensions and leave none."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 4, 3, stride=2, padding=1, dilation=2, bias=False).double()
    inputs = torch.randn(2, 8, 9, 9, dtype=torch.float64)
    (rows,) = input_representation(conv, inputs)
    assert rows.shape == (32, 72)
    core = core_gradient_space(rows.T @ rows, 1 - 1e-6)
    assert core.shape[1] == 32
    gradient = torch.randn_like(conv.weight)
    projected = project_out(gradient, Projection(core, spans_range=False))
    assert torch.linalg.norm(projected) > 0.5 * torch.linalg.norm(gradient)
    moved = F.conv2d(inputs, projected, stride=2, padding=1, dilation=2)
    with torch.no_grad():
        assert torch.linalg.norm(moved) < 1e-10 * torch.linalg.norm(conv(inputs))


def test_a_grouped_conv_caches_one_covariance_per_group():
    """Group g's C is the covariance of the patches of group g's input channels alone."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 1), nn.Conv2d(6, 4, 3, padding=1, groups=2))
    samples = digits_setup().train.subset(5, seed=0)
    cache = input_covariances(model, samples, batch_size=2, device=DEVICE)["1.weight"]
    assert cache.shape == (2, 27, 27)
    with torch.no_grad():
        inputs = model.double()[0](samples.tensors()[0].double())  # what the grouped conv sees
    for g in range(2):
        patches = _brute_force_patches(model[1], inputs[:, 3 * g : 3 * (g + 1)])
        torch.testing.assert_close(cache[g], patches.T @ patches)


def test_each_group_is_protected_by_its_own_core_space():
    """Group 1's inputs are 1e-7 times group 0's. With one core space per group a step
    leaves both groups' outputs on the cached inputs unchanged; one core space of the
    summed covariance would drop group 1's directions below the gamma cut."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False).double()
    inputs = torch.randn(1, 4, 3, 3, dtype=torch.float64)  # 9 patches per group, d = 18
    inputs[:, 2:] *= 1e-7
    rows = input_representation(conv, inputs)
    projection, k = layer_projector(rows.transpose(1, 2) @ rows, 1 - 1e-6)
    assert projection.basis.shape[:2] == (2, 18) and k == 18
    gradient = torch.randn_like(conv.weight)
    projected = project_out(gradient, projection)
    assert torch.linalg.norm(projected[2:]) > 0.5 * torch.linalg.norm(gradient[2:])
    moved = F.conv2d(inputs, projected, padding=1, groups=2)
    with torch.no_grad():
        outputs = conv(inputs)
    for rows_of_group in (slice(0, 2), slice(2, 4)):
        relative = torch.linalg.norm(moved[:, rows_of_group])
        assert relative < 1e-10 * torch.linalg.norm(outputs[:, rows_of_group])
    summed = Projection(core_gradient_space((rows.transpose(1, 2) @ rows).sum(0), 0.9), False)
    leaked = F.conv2d(inputs, project_out(gradient, summed), padding=1, groups=2)
    assert torch.linalg.norm(leaked[:, 2:]) > 0.1 * torch.linalg.norm(outputs[:, 2:])


def test_groups_whose_thinner_factors_differ_are_stacked_on_one_side():
    """At one gamma a group with a flat spectrum keeps most directions (U_rest is thinner)
    and one with a steep spectrum few (M is): the stack flips one of them and pads it, and
    each group's projector is still its own."""
    torch.manual_seed(0)
    d = 12
    flat = torch.randn(d, 200, dtype=torch.float64)
    steep = torch.randn(d, 200, dtype=torch.float64) * torch.logspace(0, -4, d)[:, None]
    groups = torch.stack([flat @ flat.T, steep @ steep.T])
    singles = [layer_projector(group, 0.9) for group in groups]
    assert singles[0][0].spans_range and not singles[1][0].spans_range
    stacked, k = layer_projector(groups, 0.9)
    assert stacked.basis.shape[0] == 2 and k == singles[0][1] + singles[1][1]
    for matrix, (single, _) in zip(stacked.matrix(), singles, strict=True):
        torch.testing.assert_close(matrix, single.matrix(), rtol=0, atol=1e-12)
    gradient = torch.randn(4, 2, 2, 3, dtype=torch.float64)  # 2 groups of 2 rows, d = 12
    rows = gradient.reshape(2, 2, d)
    expected = torch.stack([rows[g] @ singles[g][0].matrix() for g in range(2)])
    torch.testing.assert_close(project_out(gradient, stacked), expected.view_as(gradient))


def test_pgu_unlearns_a_network_with_a_depthwise_convolution():
    """MobileNet's building block, a depthwise 3x3 conv (groups = channels), through the
    whole method: its cache holds one 9 x 9 covariance per channel, and a step runs."""
    setup = digits_setup()
    torch.manual_seed(0)
    network = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    ).eval()
    pgu = get_unlearner("pgu", FAST)
    empty = setup.train.take(np.arange(0))
    cache = pgu.prepare(context_for(setup, network, forget=empty, retain=setup.train))
    assert cache[CACHE_ARTIFACT].tensors["2.weight"].shape == (8, 9, 9)
    result = pgu.unlearn(
        context_for(setup, network, forget=setup.forget, retain=setup.retain, artifacts=cache)
    )
    assert result.info["steps"] == FAST["max_steps"]
    assert 0 < result.info["core_dims"]["2.weight"] <= 8 * 9
    assert not torch.equal(result.state_dict["2.weight"], network.state_dict()["2.weight"])
    assert result.artifacts[CACHE_ARTIFACT].tensors["2.weight"].shape == (8, 9, 9)


def test_the_cache_of_resnet18_is_704_mib_whatever_the_image_size():
    """d depends on channels and kernels, not on the image: docs/unlearners.md's figure."""
    for shape in ([1, 28, 28], [3, 32, 32]):
        params = {"builder": "resnet18", "small_input_stem": True}
        network = structure("torchvision", params, shape, 10)
        layers = discover_layers(network)
        assert cache_bytes(network) == sum(layer.dim**2 * 8 for layer in layers)
        assert round(cache_bytes(network) / 2**20) == 704
        assert get_unlearner("pgu").cache_bytes(network) == cache_bytes(network)
    assert get_unlearner("finetune").cache_bytes(network) == 0


def test_linear_representation_takes_every_leading_position():
    linear = nn.Linear(5, 3)
    inputs = torch.randn(2, 4, 5)
    (rows,) = input_representation(linear, inputs)
    assert rows.shape == (8, 5)
    torch.testing.assert_close(rows @ linear.weight.T + linear.bias, linear(inputs).view(8, 3))


def test_covariance_is_r_r_transpose_accumulated_in_float64():
    setup = digits_setup()
    model = setup.model()
    samples = setup.train.subset(40, seed=3)
    covariances = input_covariances(model, samples, batch_size=7, device=DEVICE)
    assert all(c.dtype == torch.float64 for c in covariances.values())
    # The last layer's input is the hidden activation: recompute R directly.
    inputs, _ = samples.tensors()
    hidden = model.double()[:9](inputs.double())
    torch.testing.assert_close(covariances["9.weight"], hidden.T @ hidden, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("width", [64, 300, 600])  # 1, 2 and 4 blocks (_add_gram)
def test_a_wide_layers_covariance_is_whole_and_symmetric(width):
    """The products are accumulated on and below the diagonal blocks, the blocks above
    copied from below at the end: C is all there."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
    samples = digits_setup().train.subset(50, seed=3)
    cache = input_covariances(model, samples, batch_size=16, device=DEVICE)["3.weight"]
    with torch.no_grad():
        hidden = model.double()[:3](samples.tensors()[0].double())
    torch.testing.assert_close(cache, hidden.T @ hidden, rtol=1e-12, atol=1e-9)


class _DoubledConv(nn.Conv2d):
    """A convolution that changes its weight in its own forward pass (as weight
    standardisation does): its cache must see what this forward pass computes."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(inputs, 2 * self.weight, self.bias)


class _ViewFlatten(nn.Module):
    """Flattens with ``view``, as LeNet-style models do: it needs a contiguous input."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs.view(len(inputs), -1)


def test_a_grouped_convs_patches_are_read_within_unfold_bytes(monkeypatch):
    """A slice holds every group's patches: its samples are counted with all of them."""
    from ml.pgu import representations

    depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    model = nn.Sequential(nn.Conv2d(1, 4, 1), depthwise)
    one_sample = 8 * 8 * (4 * 9) * 8  # H' W' x every group's C kh kw x float64 bytes
    monkeypatch.setattr(representations, "UNFOLD_BYTES", 2 * one_sample)
    read = []
    rows_of = representations._rows

    def spy(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        rows = rows_of(module, inputs)  # type: ignore[arg-type]
        read.append(rows.numel() * rows.element_size())
        return rows

    monkeypatch.setattr(representations, "_rows", spy)
    samples = digits_setup().train.subset(5, seed=3)
    input_covariances(model, samples, batch_size=5, device=DEVICE)
    assert max(read) == 2 * one_sample


@pytest.mark.parametrize("unfold_bytes", [1, 64 * 2**20], ids=["sample-slices", "one-slice"])
@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(4, 3, 3, padding=1),
        nn.Conv2d(4, 3, (3, 2), padding=(2, 1), dilation=(1, 2), stride=2),
        nn.Conv2d(4, 3, 3, padding="same", padding_mode="reflect"),
        nn.Conv2d(4, 3, 4, padding="same", bias=False),  # padded more on one side
        nn.Conv2d(4, 6, 3, padding=1, groups=2),
        _DoubledConv(4, 3, 3, padding=1),
    ],
    ids=["padded", "strided-dilated", "same-reflect", "even-same", "grouped", "subclass"],
)
def test_the_cache_passes_hold_the_convolutions_own_outputs(conv, unfold_bytes, monkeypatch):
    """A plain Conv2d's output in the cache's float64 pass is computed from the patches the
    cache reads (in their tap-major order), any other its own forward pass: either way the
    convolution's C holds its input patches (in the weight's order) and the next layer's
    C the convolution's real outputs."""
    from ml.pgu import representations

    monkeypatch.setattr(representations, "UNFOLD_BYTES", unfold_bytes)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 1), conv, nn.ReLU(), _ViewFlatten())
    samples = digits_setup().train.subset(9, seed=3)
    inputs = samples.tensors()[0].double()
    model = model.double()
    with torch.no_grad():
        width = model(inputs[:1]).shape[1]
    model.append(nn.Linear(width, 2).double())
    caches = input_covariances(model, samples, batch_size=4, device=DEVICE)
    with torch.no_grad():
        seen = model[0](inputs)
        rows = input_representation(conv, seen)  # (groups, n, d), the weight's order
        hidden = model[:4](inputs)
    torch.testing.assert_close(
        caches["1.weight"].view(-1, *rows.shape[-1:] * 2), rows.mT @ rows, rtol=1e-12, atol=1e-9
    )
    torch.testing.assert_close(caches["4.weight"], hidden.T @ hidden, rtol=1e-12, atol=1e-9)


def test_unfolding_in_slices_gives_the_same_covariances(monkeypatch):
    """The patches are unfolded a few samples at a time (``UNFOLD_BYTES``); the sum is the
    same to round-off however the batch is sliced."""
    from ml.pgu import representations

    setup = digits_setup()
    samples = setup.train.subset(40, seed=3)
    whole = input_covariances(setup.model(), samples, batch_size=40, device=DEVICE)
    monkeypatch.setattr(representations, "UNFOLD_BYTES", 1)  # one sample per slice
    sliced = input_covariances(setup.model(), samples, batch_size=40, device=DEVICE)
    for name, covariance in whole.items():
        torch.testing.assert_close(sliced[name], covariance, rtol=1e-12, atol=1e-10)


# --- the cache algebra (Eq. 2, 3) -------------------------------------------------------


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return (torch.linalg.matrix_norm(got - want) / torch.linalg.matrix_norm(want)).item()


def test_incremental_cache_equals_cache_built_on_what_remains():
    """Delete A then B; each layer's C equals the basis model's C over D minus A and B."""
    setup = digits_setup()
    pgu = get_unlearner("pgu", FAST)
    version_1 = setup.model()
    empty = setup.train.take(np.arange(0))
    cache_1 = pgu.prepare(context_for(setup, version_1, forget=empty, retain=setup.train))
    assert cache_1[CACHE_ARTIFACT].meta == {
        "basis_version": 1,
        "layers": ["0.weight", "3.weight", "7.weight", "9.weight"],
        "samples": len(setup.train),
    }

    rows = np.random.default_rng(5).permutation(len(setup.train))
    a, b, rest = rows[:30], rows[30:70], rows[70:]
    first = pgu.unlearn(
        context_for(
            setup,
            setup.model(),
            forget=setup.train.take(np.sort(a)),
            retain=setup.train.take(np.sort(np.concatenate([b, rest]))),
            artifacts=cache_1,
        )
    )
    version_2 = setup.build()
    version_2.load_state_dict(first.state_dict)
    loaded: list[int] = []

    def load_version(number: int) -> nn.Module:
        loaded.append(number)
        return setup.model()

    second = pgu.unlearn(
        context_for(
            setup,
            version_2,
            forget=setup.train.take(np.sort(b)),
            retain=setup.train.take(np.sort(rest)),
            base_version=2,
            artifacts=first.artifacts,
            load_version=load_version,
        )
    )
    assert loaded == [1]  # R_f of the second batch came from the basis version
    cache_3 = second.artifacts[CACHE_ARTIFACT]
    assert cache_3.meta["basis_version"] == 1
    assert cache_3.meta["samples"] == len(rest)

    direct = input_covariances(
        version_1, setup.train.take(np.sort(rest)), batch_size=64, device=DEVICE
    )
    for name, covariance in direct.items():
        assert _relative_error(cache_3.tensors[name], covariance) < 1e-9, name
        # The chain's core spaces are those of the cache rebuilt from scratch (the bound of
        # tests/ml/test_core_space.py holds with room; these layers' gaps are wide).
        chained, k = layer_projector(cache_3.tensors[name], 0.9)
        rebuilt, k_rebuilt = layer_projector(covariance, 0.9)
        assert k == k_rebuilt, name
        difference = chained.matrix() - rebuilt.matrix()
        assert float(torch.linalg.matrix_norm(difference, ord=2)) < 1e-6, name

    # The test can fail: version 2 moved, so its representations of B are not version 1's.
    moved = input_covariances(version_2, setup.train.take(np.sort(b)), batch_size=64, device=DEVICE)
    basis = input_covariances(version_1, setup.train.take(np.sort(b)), batch_size=64, device=DEVICE)
    assert max(_relative_error(moved[n], basis[n]) for n in basis) > 1e-6


def test_a_cache_only_subtracts_the_samples_it_added():
    """Another model forgot sample s before this cache was built (the rebuild left it out);
    this model still knows s, so its next batch holds s and A. The cache subtracts A only."""
    setup = digits_setup()
    pgu = get_unlearner("pgu", FAST)
    rows = np.random.default_rng(7).permutation(len(setup.train))
    s_rows, a_rows, rest = rows[:5], rows[5:25], rows[25:]
    covered = setup.train.take(np.sort(np.concatenate([a_rows, rest])))
    cache = pgu.prepare(
        context_for(setup, setup.model(), forget=covered.take(np.arange(0)), retain=covered)
    )
    forget = setup.train.take(np.sort(np.concatenate([s_rows, a_rows])))
    result = pgu.unlearn(
        context_for(
            setup,
            setup.model(),
            forget=forget,
            retain=setup.train.take(np.sort(rest)),
            artifacts=cache,
        )
    )
    assert result.info["cache_subtracted"] == len(a_rows)
    kept = result.artifacts[CACHE_ARTIFACT]
    assert kept.meta["samples"] == len(rest)
    direct = input_covariances(
        setup.model(), setup.train.take(np.sort(rest)), batch_size=64, device=DEVICE
    )
    for name, covariance in direct.items():
        assert _relative_error(kept.tensors[name], covariance) < 1e-9, name
    assert len(kept.tensors["members"]) == len(rest)


def test_pgu_refuses_networks_with_multihead_attention():
    class Attending(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
            self.head = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.attention(x, x, x)[0].mean(1))

    reason = get_unlearner("pgu").unsuitable_for(Attending())
    assert reason is not None and "attention" in reason and "MultiheadAttention" in reason
    assert get_unlearner("pgu").unsuitable_for(digits_setup().model()) is None


def test_unlearn_without_a_cache_is_refused():
    setup = digits_setup()
    context = context_for(setup, setup.model(), forget=setup.forget, retain=setup.retain)
    with pytest.raises(RuntimeError, match="pgu_cache"):
        get_unlearner("pgu").unlearn(context)


# --- the core gradient space and the projection (Eq. 4) ------------------------------------


def test_gamma_rule_keeps_the_fewest_singular_values_reaching_gamma():
    torch.manual_seed(0)
    r = torch.randn(12, 40, dtype=torch.float64) * torch.logspace(0, -3, 12)[:, None]
    covariance = r @ r.T
    s, _ = singular_values(covariance)
    torch.testing.assert_close(s, torch.linalg.svdvals(r))
    for gamma in (0.3, 0.9, 0.99):
        k = core_gradient_space(covariance, gamma).shape[1]
        share = s.cumsum(0) / s.sum()
        assert share[k - 1] >= gamma
        assert k == 1 or share[k - 2] < gamma


def largest_angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest principal angle, in degrees, between the column spaces of two orthonormal
    bases of one size: its sine is ||(I - A A^T) B||_2 (accurate for small angles, where
    arccos of the cosines is not)."""
    sine = torch.linalg.matrix_norm(b - a @ (a.T @ b), ord=2).clamp(max=1.0)
    return float(torch.rad2deg(torch.arcsin(sine)))


def test_coordinates_r_never_fills_are_split_off_exactly(monkeypatch):
    # A conv on a 1x1 map only multiplies padding with 8 of its 9 taps: those rows of C
    # are zero. The split decomposition must give the full one's singular values and core
    # spaces, and a complete orthonormal U (the zero rows' unit vectors at the end).
    torch.manual_seed(0)
    d, filled = 45, torch.arange(4, 45, 9)  # every 9th coordinate, as the centre taps
    r = torch.zeros(d, 30, dtype=torch.float64)
    r[filled] = (
        torch.randn(len(filled), 30, dtype=torch.float64) * torch.logspace(0, -2, 5)[:, None]
    )
    covariance = r @ r.T
    real_eigh, sizes = torch.linalg.eigh, []
    monkeypatch.setattr(torch.linalg, "eigh", lambda m: sizes.append(m.shape[0]) or real_eigh(m))
    s, u = singular_values(covariance)
    assert sizes == [len(filled)]  # only the filled block is decomposed
    torch.testing.assert_close(s[: len(filled)], torch.linalg.svdvals(r)[: len(filled)])
    assert torch.all(s[len(filled) :] == 0)
    torch.testing.assert_close(u.T @ u, torch.eye(d, dtype=torch.float64))
    torch.testing.assert_close(u @ torch.diag(s**2) @ u.T, covariance)
    full = real_eigh(covariance).eigenvectors.flip(1)
    for gamma in (0.5, 0.9, 0.99):
        core = core_gradient_space(covariance, gamma)
        assert core.shape[1] <= len(filled)
        assert largest_angle(core, full[:, : core.shape[1]]) < 1e-8


def test_an_eigendecomposition_that_does_not_converge_falls_back_to_the_svd(monkeypatch):
    torch.manual_seed(0)
    r = torch.randn(20, 60, dtype=torch.float64) * torch.logspace(0, -3, 20)[:, None]
    covariance = r @ r.T
    expected_s, expected_u = singular_values(covariance)

    def never_converges(matrix: torch.Tensor):  # MKL's syevd giving up, as on ResNet-18
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "eigh", never_converges)
    s, u = singular_values(covariance)
    torch.testing.assert_close(s, expected_s)
    torch.testing.assert_close(u.T @ u, torch.eye(20, dtype=torch.float64))
    for k in (1, 5, 10):
        assert largest_angle(u[:, :k], expected_u[:, :k]) < 1e-8
    assert core_gradient_space(covariance, 0.9).shape[1] == int(
        torch.searchsorted(expected_s.cumsum(0), 0.9 * expected_s.sum()) + 1
    )


@pytest.mark.parametrize("factor", ["core", "rest"])
def test_projected_gradient_has_no_component_in_the_core_space(factor):
    """Whichever factor a :class:`Projection` keeps, M (P = I - M M^T) or the eigenvectors
    past the cut (P = U_rest U_rest^T), it applies the same projector."""
    torch.manual_seed(0)
    r = torch.randn(18, 200, dtype=torch.float64) * torch.logspace(0, -2, 18)[:, None]
    core = core_gradient_space(r @ r.T, 0.9)
    assert 0 < core.shape[1] < 18
    _, u = singular_values(r @ r.T)
    projection = (
        Projection(core, spans_range=False)
        if factor == "core"
        else Projection(u[:, core.shape[1] :], spans_range=True)
    )
    torch.testing.assert_close(projection.matrix(), residual_projector(core))
    gradient = torch.randn(4, 2, 3, 3, dtype=torch.float64)  # a conv weight's shape, d = 18
    projected = project_out(gradient, projection)
    assert projected.shape == gradient.shape
    assert torch.linalg.norm(projected.view(4, -1) @ core) < 1e-12 * torch.linalg.norm(gradient)
    # What is left is the whole residual component: nothing outside the core space is lost.
    residual = gradient.view(4, -1) - gradient.view(4, -1) @ core @ core.T
    torch.testing.assert_close(projected.view(4, -1), residual)


def test_a_layer_with_gamma_one_and_all_biases_stay_put(monkeypatch):
    """... and the frozen layer costs no decomposition."""
    setup = digits_setup()
    pgu = get_unlearner("pgu", {**FAST, "layer_gamma": {"3": 1.0}})
    empty = setup.train.take(np.arange(0))
    cache = pgu.prepare(context_for(setup, setup.model(), forget=empty, retain=setup.train))
    decomposed: list[int] = []

    def counted(covariance: torch.Tensor, gamma: float) -> tuple[Projection, int]:
        decomposed.append(covariance.shape[-1])
        return layer_projector(covariance, gamma)

    monkeypatch.setattr(pgu_module, "layer_projector", counted)
    result = pgu.unlearn(
        context_for(setup, setup.model(), forget=setup.forget, retain=setup.retain, artifacts=cache)
    )
    before = setup.state_dict
    assert "3.weight" not in result.info["core_dims"]
    assert sorted(decomposed) == [9, 64, 128]  # layer 3 (d = 144) was never decomposed
    assert torch.equal(result.state_dict["3.weight"], before["3.weight"])
    for name in before:
        if name.endswith("bias"):
            assert torch.equal(result.state_dict[name], before[name]), name
    assert not torch.equal(result.state_dict["7.weight"], before["7.weight"])


def test_unknown_layer_gamma_name_is_refused():
    setup = digits_setup()
    pgu = get_unlearner("pgu", {"layer_gamma": {"features.9": 0.5}})
    empty = setup.train.take(np.arange(0))
    cache = pgu.prepare(context_for(setup, setup.model(), forget=empty, retain=setup.train))
    context = context_for(
        setup, setup.model(), forget=setup.forget, retain=setup.retain, artifacts=cache
    )
    with pytest.raises(ValueError, match="features.9"):
        pgu.unlearn(context)


# --- the loss (Eq. 1) -------------------------------------------------------------------


def test_loss_is_reverse_cross_entropy_plus_an_entropy_bonus():
    labels = torch.tensor([0])
    # The same p_y = 0.5, the rest spread evenly (high entropy) or on one class (low).
    spread = torch.log(torch.tensor([[0.5] + [0.5 / 9] * 9]))
    peaked = torch.log(torch.tensor([[0.5, 0.5 - 8e-6] + [1e-6] * 8]))
    reverse_ce = -np.log(1 - (0.5 - 0.05))
    plain = unlearning_loss(spread, labels, lambda_=0.0, offset=0.05)
    assert plain.item() == pytest.approx(reverse_ce, rel=1e-5)
    # lambda > 0 (deletion) prefers high entropy; lambda < 0 (de-poisoning) prefers confidence.
    assert unlearning_loss(spread, labels, lambda_=0.2, offset=0.05) < unlearning_loss(
        peaked, labels, lambda_=0.2, offset=0.05
    )
    assert unlearning_loss(spread, labels, lambda_=-0.2, offset=0.05) > unlearning_loss(
        peaked, labels, lambda_=-0.2, offset=0.05
    )


# --- unlearning on digits ------------------------------------------------------------------


def _forget_vs_holdout_auc(model, setup) -> float:
    stopping = early_stopping.EarlyStopping(
        "distribution", forget=setup.forget, validation=setup.holdout, eval_size=2000, device=DEVICE
    )
    return stopping.measure(model).record["loss_auc"]


def test_pgu_makes_forget_losses_look_held_out_without_reading_retained_data():
    setup = digits_setup()
    original = setup.model()
    assert _forget_vs_holdout_auc(original, setup) > 0.53  # the setting has something to forget
    test_before = accuracy_of(original, setup.test)

    pgu = get_unlearner("pgu")  # the defaults: a normalised step needs no per-network rate
    empty = setup.train.take(np.arange(0))
    cache = pgu.prepare(context_for(setup, setup.model(), forget=empty, retain=setup.train))

    guard = RetainGuard(setup.adapter, setup.retain.positions)
    stages: list[str] = []
    context = context_for(
        setup,
        setup.model(),
        forget=guard.wrap(setup.forget),
        retain=guard.wrap(setup.retain),
        validation=guard.wrap(setup.holdout),
        artifacts=cache,
        progress=lambda stage, step, total: stages.append(stage),
    )
    result = pgu.unlearn(context)
    assert guard.reads > 0  # the guard was in the way of every read

    unlearned = setup.build()
    unlearned.load_state_dict(result.state_dict)
    # 50 forget samples are too few to prove equivalence within 0.05 (the AUC's 90% interval
    # alone is +-0.07): the run ends by patience or the utility brake and keeps the closest
    # state.
    assert result.info["stopped_by"] in (
        "no closer to the target in 5 checks",
        "the utility brake: held-out accuracy of the remaining classes fell too far",
    ), result.info
    distances = [  # a braked check stops before the rule's measures: never kept
        abs(check["loss_auc"] - 0.5) + abs(check["accuracy_gap"]) + check["validation_drop"]
        if "loss_auc" in check
        else 9
        for check in result.info["checks"]
    ]
    assert result.info["kept_check"] == distances.index(min(distances)) > 0
    assert abs(_forget_vs_holdout_auc(unlearned, setup) - 0.5) <= 0.03, result.info
    assert test_before - accuracy_of(unlearned, setup.test) <= 0.02, result.info
    assert {"cache", "core-space", "steps"} <= set(stages)
    stages_seconds = [
        result.info[f"{stage}_seconds"] for stage in ("core_space", "steps", "checks")
    ]
    assert result.info["cache_update_seconds"] > 0 and min(stages_seconds) > 0
    assert sum(stages_seconds) <= result.info["unlearning_seconds"]
    kept = result.info["checks"][result.info["kept_check"]]
    assert result.info["checks"][0]["loss_auc"] > kept["loss_auc"]


def test_the_authors_accuracy_rule_and_the_paper_sgd_step_still_work():
    setup = digits_setup()
    params = {"stop": "holdout_gap", "step": "sgd", "gamma": 0.95, "lr_start": 3.0, "lr_end": 0.6}
    params["check_every"] = 32  # every step, as fine as the authors' per-epoch check here
    pgu = get_unlearner("pgu", params)
    empty = setup.train.take(np.arange(0))
    cache = pgu.prepare(context_for(setup, setup.model(), forget=empty, retain=setup.train))
    result = pgu.unlearn(
        context_for(setup, setup.model(), forget=setup.forget, retain=setup.retain, artifacts=cache)
    )
    assert result.info["stopped_by"] == "holdout gap closed", result.info
    unlearned = setup.build()
    unlearned.load_state_dict(result.state_dict)
    gap = accuracy_of(unlearned, setup.holdout) - accuracy_of(unlearned, setup.forget)
    assert abs(gap) <= 0.04


def test_class_deletion_keeps_utility_and_masks_the_class():
    setup = digits_setup()
    forgotten = 3
    rows = np.flatnonzero(setup.train.labels == forgotten)
    forget = setup.train.take(rows)
    retain = setup.train.take(np.setdiff1d(np.arange(len(setup.train)), rows))
    pgu = get_unlearner("pgu")
    empty = setup.train.take(np.arange(0))
    cache = pgu.prepare(context_for(setup, setup.model(), forget=empty, retain=setup.train))
    result = run_unlearner(
        pgu,
        context_for(
            setup,
            setup.model(),
            forget=forget,
            retain=retain,
            artifacts=cache,
            class_labels=[forgotten],
        ),
    )
    # The rule reads unmasked outputs, so masking alone does not meet it: PGU takes real
    # steps until the weights no longer predict the class, on D_f or held-out samples of it.
    assert result.info["stopped_by"] == (
        "the deleted classes are no longer predicted (unmasked outputs)"
    ), result.info
    assert result.info["steps"] > 0
    first, kept = result.info["checks"][0], result.info["checks"][result.info["kept_check"]]
    assert first["forget_accuracy"] > 0.9
    assert kept["forget_accuracy"] <= 0.05 and kept["heldout_class_accuracy"] <= 0.05
    unlearned = setup.build()
    unlearned.load_state_dict(result.state_dict)
    everything, _ = setup.adapter.read(np.arange(len(setup.adapter.index().keys))), None
    logits = predict(unlearned, everything, device=DEVICE)
    assert not (logits.argmax(1) == forgotten).any()
    assert torch.all(logits[:, forgotten] == MASKED_LOGIT)
    remaining = setup.test.without_classes([forgotten])
    assert accuracy_of(setup.model(), remaining) - accuracy_of(unlearned, remaining) <= 0.02


# --- params ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, field",
    [
        ({"gamma": 0}, "gamma"),
        ({"gamma": 1.2}, "gamma"),
        ({"lr_start": 0.01, "lr_end": 0.05}, "lr_end"),
        ({"step_start": 0.001, "step_end": 0.01}, "step_end"),
        ({"step": "adam"}, "step"),
        ({"check_every": 0}, "check_every"),
        ({"lr_start": 0}, "lr_start"),
        ({"layer_gamma": {"0": 0.0}}, "layer_gamma"),
        ({"stop": "never"}, "stop"),
        ({"momentum": 0.9}, "momentum"),
    ],
)
def test_invalid_params_are_refused(params, field):
    with pytest.raises(ValidationError, match=field):
        get_unlearner("pgu", params)


def test_params_round_trip_with_the_lambda_alias():
    stored = validate_params("pgu", {"lambda": -0.5, "layer_gamma": {"0": 1.0}})
    assert stored["lambda"] == -0.5 and "lambda_" not in stored
    assert stored["gamma"] == 0.9 and stored["lr_start"] >= stored["lr_end"]
    assert get_unlearner("pgu", stored).params.lambda_ == -0.5
