"""Image augmentation a training recipe may ask for: random crops of a zero-padded image
and horizontal flips, drawn per sample from a seeded generator, so a job sees the same
batches on every run.

Both are off by default: a flipped digit is another glyph (or none), and the digits demo
trains fastest on its images as they are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Augmentation", "augment", "augmentation_generator"]


class Augmentation(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    random_crop_padding: int = Field(
        0,
        ge=0,
        le=32,
        description="pad each image with this many zero pixels on every side, then crop it "
        "back to its size at a random offset (0: off; 4 is the CIFAR convention)",
    )
    horizontal_flip: bool = Field(
        False, description="mirror each image left to right with probability 1/2"
    )

    @property
    def enabled(self) -> bool:
        return self.random_crop_padding > 0 or self.horizontal_flip

    def check_fits(self, input_shape: Sequence[int]) -> None:
        """ValueError unless the samples are images (C, H, W), when augmentation is on."""
        if self.enabled and len(input_shape) != 3:
            raise ValueError(
                "augmentation crops and flips images of shape (C, H, W); these samples "
                f"have shape {list(input_shape)}"
            )


def augmentation_generator(seed: int) -> torch.Generator:
    """The generator of a training run's augmentation draws: from the recipe's seed, but not
    the seed itself, which also orders the data (the same stream would tie each batch's
    crops to its shuffle)."""
    derived = int.from_bytes(hashlib.sha256(f"augment:{seed}".encode()).digest()[:8], "big")
    return torch.Generator().manual_seed(derived >> 1)


def augment(
    inputs: torch.Tensor, augmentation: Augmentation, generator: torch.Generator
) -> torch.Tensor:
    """An augmented copy of a batch of images (N, C, H, W); the draws are made on the CPU
    from ``generator`` whatever the batch's device, so every device sees the same ones."""
    augmentation.check_fits(inputs.shape[1:])
    n, channels, height, width = inputs.shape
    device = inputs.device
    padding = augmentation.random_crop_padding
    if padding:
        padded = F.pad(inputs, (padding, padding, padding, padding))
        top = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
        left = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
        rows = top[:, None] + torch.arange(height, device=device)
        columns = left[:, None] + torch.arange(width, device=device)
        inputs = padded[
            torch.arange(n, device=device)[:, None, None, None],
            torch.arange(channels, device=device)[None, :, None, None],
            rows[:, None, :, None],
            columns[:, None, None, :],
        ]
    if augmentation.horizontal_flip:
        flipped = (torch.rand(n, generator=generator) < 0.5).to(device)
        inputs = torch.where(flipped[:, None, None, None], inputs.flip(-1), inputs)
    return inputs
