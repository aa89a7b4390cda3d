"""``predict`` on the CPU: batches of ``CPU_INFERENCE_BATCH`` in the channels-last layout, with
the same logits as a plain pass and the network handed back as it came."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks.inference import main as inference_benchmark
from ml.architectures import build_model
from ml.training import CPU_INFERENCE_BATCH, channels_last_on_cpu, predict

CPU = torch.device("cpu")


def _network() -> nn.Module:
    torch.manual_seed(0)
    return build_model("small_cnn", {"channels": [4, 8], "hidden": 16}, [1, 8, 8], 10).eval()


def test_predict_gives_a_plain_pass_logits_over_several_batches():
    model = _network()
    inputs = torch.randn(
        CPU_INFERENCE_BATCH + 7, 1, 8, 8, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        expected = model(inputs)
    got = predict(model, inputs, device=CPU)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_the_layout_is_channels_last_inside_and_contiguous_again_after():
    model = _network()
    weight = model[3].weight  # the second convolution: with one input channel both layouts agree
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with channels_last_on_cpu(model):
        assert model[3].weight is weight  # the same Parameter: optimisers keep working
        assert weight.is_contiguous(memory_format=torch.channels_last)
        assert not weight.is_contiguous()
    assert model[3].weight is weight and weight.is_contiguous()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])


def test_the_layout_is_restored_when_the_pass_fails():
    model = _network()
    with pytest.raises(RuntimeError), channels_last_on_cpu(model):
        model(torch.randn(2, 3, 8, 8))  # three channels where it takes one
    assert all(p.is_contiguous() for p in model.parameters())


def test_a_network_already_channels_last_is_left_so():
    model = _network().to(memory_format=torch.channels_last)
    with channels_last_on_cpu(model):
        pass
    assert model[3].weight.is_contiguous(memory_format=torch.channels_last)


def test_the_inference_benchmark_prints_both_layouts(capsys):
    assert (
        inference_benchmark(
            ["--archs", "small_cnn", "--samples", "20", "--batches", "8", "--repeats", "1"]
        )
        == 0
    )
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| small_cnn")]
    assert len(rows) == 1
    difference = float(rows[0].strip("|").split("|")[-1])
    assert difference < 1e-4
