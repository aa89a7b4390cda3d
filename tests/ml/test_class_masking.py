"""Class masking (``ml.class_masking``): the forgotten classes' rows and biases of the
output layer, found as the last Linear, a VIB's approximator included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ml.architectures import build_model
from ml.class_masking import MASKED_LOGIT, mask_classes


def test_mask_classes_zeroes_rows_and_biases_of_the_output_layer():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5))
    mask_classes(model, [1, 4])
    logits = model(torch.randn(20, 4))
    assert torch.all(logits[:, [1, 4]] == MASKED_LOGIT)
    assert F.softmax(logits, 1)[:, [1, 4]].max() == 0
    with pytest.raises(ValueError):
        mask_classes(model, [5])


def test_class_masking_reaches_the_approximators_output_layer():
    model = build_model("vib_cnn", {"z_dim": 8, "channels": [4, 8]}, [1, 8, 8], 10).eval()
    mask_classes(model, [3])
    assert (model(torch.rand(20, 1, 8, 8)).argmax(1) != 3).all()
    assert float(model.approximator[-1].bias.detach()[3]) < -1e3
