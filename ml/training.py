"""Training and evaluation loops shared by the trainer, the baselines and the audit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ml.samples import SampleSet
from ml.vib import VariationalBottleneck, vib_loss

__all__ = [
    "TrainingConfig",
    "pick_device",
    "sgd_recipe",
    "train",
    "seeded",
    "accuracy",
    "predict",
]

Progress = Callable[[str, int, int], None]


class TrainingConfig(BaseModel):
    """How a model is trained from scratch (version 1, retrain, references)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(128, ge=1, le=8192)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0, le=1)
    # Bounded: it seeds torch and the data order, and a job records it in a 64-bit column.
    seed: int = Field(0, ge=0, le=2**31 - 1)
    # The VIB loss's weight on KL(q(z|x) || N(0, I)) (the RFU-SS authors' MNIST value);
    # read only by architectures with a bottleneck (vib_mlp, vib_cnn).
    beta: float = Field(1e-3, ge=0, le=100)


def sgd_recipe(
    training: TrainingConfig, *, epochs: int, lr: float, batch_size: int, seed: int
) -> TrainingConfig:
    """The model's recipe turned into plain SGD fine-tuning (FT, RandL)."""
    return training.model_copy(
        update={
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "optimizer": "sgd",
            "seed": seed,
        }
    )


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def make_optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def train(
    model: nn.Module,
    samples: SampleSet,
    config: TrainingConfig,
    *,
    device: torch.device,
    progress: Progress | None = None,
    stage: str = "training",
) -> nn.Module:
    """Supervised training from the recipe, trained in place and returned: cross-entropy, or
    the VIB loss with ``config.beta`` for a network with a bottleneck (``ml.vib``)."""
    torch.manual_seed(config.seed)
    model.to(device).train()
    optimizer = make_optimizer(model, config)
    loss_fn = nn.CrossEntropyLoss()
    loader = samples.loader(config.batch_size, shuffle=True, seed=config.seed)
    for epoch in range(config.epochs):
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            if isinstance(model, VariationalBottleneck):
                vib_loss(model, inputs, labels, config.beta).backward()
            else:
                loss_fn(model(inputs), labels).backward()
            optimizer.step()
        if progress is not None:
            progress(stage, epoch + 1, config.epochs)
    return model.eval()


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Every draw from torch's global generators (CPU and CUDA) inside comes from ``seed``;
    their states are restored after, so a job's seed does not leak into the next job."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, *, device: torch.device) -> torch.Tensor:
    """Logits for ``inputs``, in batches, on the CPU."""
    model.eval()
    outputs = [model(batch.to(device)).cpu() for batch in inputs.split(1024)]
    return torch.cat(outputs) if outputs else torch.empty(0)


def accuracy(model: nn.Module, samples: SampleSet, *, device: torch.device) -> float | None:
    """Top-1 accuracy, or None for an empty set."""
    if not len(samples):
        return None
    inputs, labels = samples.tensors()
    return (predict(model, inputs, device=device).argmax(1) == labels).float().mean().item()
