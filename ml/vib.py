"""Variational information bottleneck (VIB) networks and their loss (Alemi et al. 2017).

A :class:`VariationalBottleneck` is a representer theta^r, which maps x to the Gaussian
q(z|x) = N(mean(x), diag(std(x)^2)), followed by an approximator theta^a, which maps a
sample z to class logits. Its ``forward`` returns logits like any classifier, so
evaluation, the audit and class masking treat it as one: in training mode z is sampled
(the reparameterisation trick), in eval mode z is the mean.

Training minimises the VIB objective (RFU-SS paper, Eq. 2):
    L = mean_i [ CE(approximator(z_i), y_i) + beta * KL(q(z|x_i) || N(0, I)) ].
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

__all__ = [
    "ZDim",
    "VariationalBottleneck",
    "gaussian_kl",
    "prior_kl",
    "vib_loss",
]

# The scale's pre-activation is shifted so that a fresh network starts with small noise
# (std ~ softplus(-5) ~ 0.007), the convention of Alemi et al.'s reference code.
SCALE_SHIFT = 5.0
MIN_SCALE = 1e-6

ZDim = Annotated[int, Field(ge=1, le=1024)]  # dimensions of the bottleneck z (a params field)


class VariationalBottleneck(nn.Module):
    """representer: x -> 2 * z_dim statistics; approximator: z -> logits."""

    def __init__(self, representer: nn.Module, approximator: nn.Module, z_dim: int) -> None:
        super().__init__()
        self.representer, self.approximator, self.z_dim = representer, approximator, z_dim

    def encode(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of q(z|x), each (batch, z_dim)."""
        statistics = self.representer(inputs)
        mean, raw_scale = statistics.split(self.z_dim, dim=1)
        return mean, F.softplus(raw_scale - SCALE_SHIFT) + MIN_SCALE

    @staticmethod
    def sample(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        return mean + std * torch.randn_like(std)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        mean, std = self.encode(inputs)
        return self.approximator(self.sample(mean, std) if self.training else mean)


def prior_kl(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std^2) || N(0, I)) per sample."""
    return 0.5 * (mean.pow(2) + std.pow(2) - 1.0 - 2.0 * std.log()).sum(1)


def gaussian_kl(
    mean_p: torch.Tensor, std_p: torch.Tensor, mean_q: torch.Tensor, std_q: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean_p, std_p^2) || N(mean_q, std_q^2)) per sample, diagonal Gaussians."""
    variance_ratio = (std_p / std_q).pow(2)
    return 0.5 * (
        variance_ratio + ((mean_p - mean_q) / std_q).pow(2) - 1.0 - variance_ratio.log()
    ).sum(1)


def vib_loss(
    model: VariationalBottleneck,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    beta: float,
    *,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The VIB training loss of a batch (Eq. 2), one sample of z per input; the
    cross-entropy takes the training recipe's label smoothing."""
    mean, std = model.encode(inputs)
    logits = model.approximator(model.sample(mean, std))
    cross_entropy = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    return cross_entropy + beta * prior_kl(mean, std).mean()
