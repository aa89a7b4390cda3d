"""A model's outputs on a set of samples, and the per-sample signals attacks read from them.

Every attack of the audit looks only at outputs (black-box access), so the report runs each
forward pass once and hands the same :class:`Outputs` to every attack. All signals are
computed in float64 from the logits, never from rounded probabilities:

- ``confidence``: p_y = softmax(z)_y, the true-class probability (SVC_MIA's feature);
- ``loss``: the cross-entropy -log p_y (the loss-threshold attack's signal, Yeom et al. 2018);
- ``phi``: the logit-scaled confidence of LiRA (Carlini et al. 2022, eq. 4),
  phi = log(p_y / (1 - p_y)) = log p_y - log sum_{j != y} p_j = z_y - logsumexp_{j != y} z_j,
  the last form exact for any logits because the softmax normaliser cancels;
- ``entropy``: H(p) = -sum_j p_j log p_j, in nats, in [0, log C].

Logits of -inf (a class masked out, as PGU does for class deletion) are read as
``MASKED_LOGIT`` so that every signal stays finite (a masked true class has a loss of about
1e4 rather than inf, which sklearn's metrics would refuse); NaN or +inf logits mean a broken
model and raise ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ml.features import logits_and_features
from ml.samples import SampleSet

__all__ = ["Outputs", "outputs_of", "MASKED_LOGIT"]

MASKED_LOGIT = -1e4  # stands for -inf; exp(-1e4) is 0 in float64


@dataclass(frozen=True)
class Outputs:
    """Logits (N, C) of one model on N samples with their true labels (N,), and its
    features (N, F): what enters its output layer (``ml.features``), for the probe."""

    logits: torch.Tensor
    labels: torch.Tensor
    features: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.logits.ndim != 2 or self.labels.shape != (self.logits.shape[0],):
            raise ValueError(
                f"logits must be (N, C) and labels (N,), got {tuple(self.logits.shape)} "
                f"and {tuple(self.labels.shape)}"
            )
        if torch.isnan(self.logits).any() or torch.isposinf(self.logits).any():
            raise ValueError("the model's outputs contain NaN or +inf; it cannot be audited")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def _logits(self) -> torch.Tensor:
        return self.logits.double().clamp(min=MASKED_LOGIT)

    def _log_probabilities(self) -> torch.Tensor:
        return torch.log_softmax(self._logits(), dim=1)

    def _true_class(self, values: torch.Tensor) -> torch.Tensor:
        return values.gather(1, self.labels.long()[:, None]).squeeze(1)

    def correct(self) -> np.ndarray:
        """Whether the top-1 prediction equals the label (bool, N)."""
        return (self.logits.argmax(1) == self.labels).numpy()

    def accuracy(self) -> float | None:
        return float(self.correct().mean()) if len(self) else None

    def confidence(self) -> np.ndarray:
        """p_y, the true-class probability."""
        return self._true_class(self._log_probabilities()).exp().numpy()

    def loss(self) -> np.ndarray:
        """Cross-entropy -log p_y."""
        return (-self._true_class(self._log_probabilities())).numpy()

    def phi(self) -> np.ndarray:
        """LiRA's logit-scaled confidence z_y - logsumexp_{j != y} z_j (finite for finite z)."""
        logits = self._logits()
        own = self._true_class(logits)
        others = logits.scatter(1, self.labels.long()[:, None], float("-inf"))
        return (own - torch.logsumexp(others, dim=1)).numpy()

    def entropy(self) -> np.ndarray:
        """Shannon entropy of the softmax output, in nats."""
        log_p = self._log_probabilities()  # finite: the logits are
        return (-(log_p.exp() * log_p).sum(1)).clamp(min=0).numpy()

    def take(self, indices: np.ndarray) -> Outputs:
        index = torch.as_tensor(indices, dtype=torch.long)
        features = None if self.features is None else self.features[index]
        return Outputs(self.logits[index], self.labels[index], features)


@torch.no_grad()
def outputs_of(model: nn.Module, samples: SampleSet, *, device: torch.device) -> Outputs:
    """One batched forward pass of ``model`` over ``samples``: logits and features, kept on
    the CPU."""
    model.eval()
    logits, features, labels = [], [], []
    batches = samples.batches(1024) if len(samples) else [samples.tensors()]
    for inputs, batch_labels in batches:
        batch_logits, batch_features = logits_and_features(model, inputs.to(device))
        logits.append(batch_logits.cpu().float())
        features.append(batch_features.cpu().float())
        labels.append(batch_labels)
    return Outputs(torch.cat(logits), torch.cat(labels), torch.cat(features))
