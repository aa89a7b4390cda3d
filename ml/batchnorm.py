"""BatchNorm's running statistics while a method unlearns.

In train mode a BatchNorm layer normalises by the batch's own statistics and folds them
into its running mean and variance (by its momentum, 0.1 by default): the buffers the
published model normalises with in eval mode. A method that steps on the forget set D_f
in train mode therefore writes D_f's statistics into the published weights, the opposite
of forgetting; for a class deletion, where D_f is one class, ten steps leave
1 - 0.9^10 = 65% of the running statistics from that class's batches.

So the methods whose steps are about D_f (gradient ascent, PGU, RFU-SS, LTU, DAU) keep
BatchNorm frozen: it normalises with, and keeps, the base version's statistics. The
methods that train on retained data (retrain, fine-tuning) re-estimate them as any
training does, and so do the two whose training set mixes D_f in by design (random labels
on D_f' U D_r, ConMU on D_f'' U D_r'), as their papers train. docs/unlearners.md says which
each method does ("BatchNorm: ..."), and tests/ml/test_batchnorm.py holds each to it.
"""

from __future__ import annotations

from torch import nn

__all__ = ["train_with_frozen_batchnorm"]


def train_with_frozen_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` in train mode (dropout on, a bottleneck samples z) except its BatchNorm
    layers, which stay in eval mode: they normalise with their running statistics and do
    not update them. Returns ``model``."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model
