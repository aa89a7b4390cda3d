"""What every new version is measured by before it is published: UA, RA and TA.

UA = 1 - accuracy on D_f; RA = accuracy on a fixed sample of D_r (evaluation stays off
the critical path however large D_r is); TA = accuracy on D_t, or on the audit's
non-members (held-out samples the stop rules never read) when the source has no test
split, without the classes the model has forgotten (a masked class is never predicted, so
counting it would only measure the masking). The API calls this dict a version's
``metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ml.samples import SampleSet
from ml.training import accuracy

__all__ = ["RETAIN_SAMPLE_SIZE", "test_set", "accuracies"]

RETAIN_SAMPLE_SIZE = 2000


def test_set(
    *, test: SampleSet, audit_nonmembers: SampleSet, masked_classes: Sequence[int] = ()
) -> SampleSet:
    """TA's samples: D_t (the audit's non-members when the source has none) without masked
    classes."""
    return (test if len(test) else audit_nonmembers).without_classes(list(masked_classes))


def accuracies(
    model: nn.Module,
    *,
    forget: SampleSet,
    retain: SampleSet,
    test: SampleSet,
    audit_nonmembers: SampleSet,
    masked_classes: Sequence[int] = (),
    device: torch.device,
) -> dict[str, float | None]:
    """``{"ua", "ra", "ta"}`` of ``model`` (None for an empty set); a version's ``metrics`` in
    the API."""
    forget_accuracy = accuracy(model, forget, device=device)
    return {
        "ua": None if forget_accuracy is None else 1.0 - forget_accuracy,
        "ra": accuracy(model, retain.subset(RETAIN_SAMPLE_SIZE), device=device),
        "ta": accuracy(
            model,
            test_set(test=test, audit_nonmembers=audit_nonmembers, masked_classes=masked_classes),
            device=device,
        ),
    }
