"""Trained originals kept between benchmark runs (``benchmarks.unlearning --originals DIR``).

Training from the same seed is not bitwise reproducible on a CPU: on this project's
machines the unlearning benchmark's original came out as one of two models (k 2,435 or
2,441 on small_cnn's first Linear layer), and on one of them the audit cannot judge the
random 1% at all. Two runs meant to compare settings then compared them on different
models. A kept original is keyed by what decides its weights (the network, the training
recipe, the training samples' inputs, their shape and dtype, and labels in order, torch's
version, the device type), so a later run reuses it only where it would have trained the
same model, bar the run-to-run nondeterminism it exists to pin, and otherwise trains and
keeps another. Nothing timed reads it: the speed-ups are against retraining D_r.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.samples import SampleSet
from ml.training import TrainingConfig

__all__ = ["Kept", "OriginalStore", "fingerprint"]


def fingerprint(
    network: dict[str, Any], recipe: TrainingConfig, samples: SampleSet, device: torch.device
) -> str:
    """What decides a trained original's weights, as a digest: ``network`` (the name and
    params ``ml.architectures`` builds), the recipe, every training input (with its shape
    and dtype) and label in their order, torch's version and the device type."""
    digest = hashlib.sha256()
    settings = {
        "network": network,
        "recipe": recipe.model_dump(mode="json"),
        "torch": torch.__version__,
        "device": device.type,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for inputs, labels in samples.batches(4096):
        digest.update(f"{tuple(inputs.shape)} {inputs.dtype}".encode())
        digest.update(memoryview(np.ascontiguousarray(inputs.numpy())))
        digest.update(memoryview(np.ascontiguousarray(labels.numpy())))
    return digest.hexdigest()[:24]


@dataclass(frozen=True)
class Kept:
    """A kept original: its weights, how long it took to train, when and on what."""

    state_dict: dict[str, torch.Tensor]
    seconds: float
    trained_at: str
    device: str
    path: Path


class OriginalStore:
    """A directory of kept originals, one file per :func:`fingerprint`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, key: str) -> Path:
        return self.directory / f"original-{key}.pt"

    def load(self, key: str) -> Kept | None:
        """The original kept under ``key``, or None; ValueError for a file that is not one."""
        path = self.path_for(key)
        if not path.exists():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            return Kept(
                state_dict=saved["state_dict"],
                seconds=float(saved["seconds"]),
                trained_at=str(saved["trained_at"]),
                device=str(saved["device"]),
                path=path,
            )
        except Exception as error:  # unpickling, a missing key, a wrong type
            raise ValueError(f"{path}: not a kept original ({error}); remove it") from error

    def save(
        self, key: str, state_dict: dict[str, torch.Tensor], seconds: float, device: str
    ) -> Path:
        """Keep ``state_dict`` under ``key``, written whole or not at all (each process
        writes its own partial file, so two runs of the same key cannot mix theirs)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(key)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        torch.save(
            {
                "state_dict": state_dict,
                "seconds": seconds,
                "trained_at": time.strftime("%Y-%m-%d %H:%M"),
                "device": device,
            },
            partial,
        )
        os.replace(partial, path)
        return path
