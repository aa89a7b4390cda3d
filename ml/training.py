"""Training and evaluation loops shared by the trainer, the baselines and the audit."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ml.augmentation import Augmentation, augment, augmentation_generator
from ml.samples import SampleSet
from ml.vib import VariationalBottleneck, vib_loss

__all__ = [
    "TrainingConfig",
    "sgd_recipe",
    "train",
    "seeded",
    "accuracy",
    "predict",
]

Progress = Callable[[str, int, int], None]


class TrainingConfig(BaseModel):
    """How a model is trained from scratch (version 1, retrain, references).

    Every option after ``beta`` has a default that trains exactly as before the option
    existed: a stored recipe gives the same weights for the same seed."""

    model_config = ConfigDict(extra="forbid", strict=True)
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(128, ge=1, le=8192)
    optimizer: Literal["sgd", "adam", "adamw"] = Field(
        "adam",
        description="`sgd` (with `momentum`), `adam`, or `adamw` (Adam with decoupled weight "
        "decay); each applies `weight_decay`",
    )
    lr: float = Field(1e-3, gt=0, le=10, description="the peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD's momentum; read by `sgd` only")
    weight_decay: float = Field(0.0, ge=0, le=1)
    # Bounded: it seeds torch and the data order, and a job records it in a 64-bit column.
    seed: int = Field(0, ge=0, le=2**31 - 1)
    # The VIB loss's weight on KL(q(z|x) || N(0, I)) (the RFU-SS authors' MNIST value);
    # read only by architectures with a bottleneck (vib_mlp, vib_cnn).
    beta: float = Field(1e-3, ge=0, le=100)
    schedule: Literal["constant", "cosine", "step"] = Field(
        "constant",
        description="the learning rate after the warm-up, set before every step: `constant` "
        "`lr`; `cosine` from `lr` down towards 0 at the last step; `step` `lr` times "
        "`step_gamma` every `step_size` epochs (counted from the first epoch)",
    )
    warmup_epochs: int = Field(
        0,
        ge=0,
        le=999,
        description="epochs over which the learning rate rises linearly, step by step, from "
        "`lr` / (warm-up steps) to `lr`; fewer than `epochs`",
    )
    step_size: int = Field(
        30,
        ge=1,
        le=999,
        description="`step` schedule: epochs between two decays; fewer than `epochs`",
    )
    step_gamma: float = Field(
        0.1, gt=0, lt=1, description="`step` schedule: what each decay multiplies the lr by"
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="the cross-entropy's target puts this mass uniformly over the classes",
    )
    augment: Augmentation = Field(
        default_factory=Augmentation,
        description="image augmentation of the training batches (images (C, H, W) only)",
    )
    grad_clip_norm: float | None = Field(
        None,
        gt=0,
        le=1e6,
        description="clip each step's gradient to this global L2 norm (null: no clipping)",
    )
    mixed_precision: Literal["none", "bf16"] = Field(
        "none",
        description="`bf16`: the forward pass and the loss under bf16 autocast on a CUDA "
        "device with native bf16; float32 anywhere else, the CPU included (a version "
        "records `none` then)",
    )

    @model_validator(mode="after")
    def _schedule_fits_the_epochs(self) -> TrainingConfig:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs "
                f"({self.epochs}): the warm-up would be the whole training"
            )
        if self.schedule == "step" and self.step_size >= self.epochs:
            raise ValueError(
                f"step_size ({self.step_size}) must be fewer than epochs ({self.epochs}): "
                "the step schedule would never decay"
            )
        return self

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """The learning rate of optimiser step ``step`` (counted from 0) of a training of
        ``steps_per_epoch`` steps an epoch. A copy whose epochs were cut below the warm-up
        (ConMU's proxy) warms up over all its steps."""
        total = self.epochs * steps_per_epoch
        warmup = min(self.warmup_epochs * steps_per_epoch, total)
        if step < warmup:  # from lr / warmup, so the first step moves the weights
            return self.lr * (step + 1) / warmup
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        if self.schedule == "step":
            return self.lr * self.step_gamma ** (step // steps_per_epoch // self.step_size)
        return self.lr

    def as_run_on(self, device: torch.device) -> TrainingConfig:
        """This recipe as :func:`train` runs it on ``device``, which a version records:
        bf16 autocast needs a CUDA device with bf16; elsewhere training is float32."""
        if self.mixed_precision == "bf16" and not _has_bf16_autocast(device):
            return self.model_copy(update={"mixed_precision": "none"})
        return self


def _has_bf16_autocast(device: torch.device) -> bool:
    """A CUDA device with native bf16 (Ampere on): emulated bf16 is slower than float32."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


def sgd_recipe(
    training: TrainingConfig, *, epochs: int, lr: float, batch_size: int, seed: int
) -> TrainingConfig:
    """The model's recipe turned into plain SGD fine-tuning (FT, RandL): the method's
    epochs, constant lr and batch size; the recipe's momentum, weight decay, label
    smoothing, augmentation, clipping and precision. Not its schedule: a warm-up or a decay
    laid out for training from scratch would change what the method's ``lr`` means."""
    return training.model_copy(
        update={
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "optimizer": "sgd",
            "seed": seed,
            "schedule": "constant",
            "warmup_epochs": 0,
        }
    )


def make_optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
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
    """Supervised training from the recipe, trained in place and returned: cross-entropy
    (with the recipe's label smoothing), or the VIB loss with ``config.beta`` for a network
    with a bottleneck (``ml.vib``); the learning rate set before every step from the
    schedule, augmented batches, clipped gradients and bf16 autocast as the recipe asks."""
    torch.manual_seed(config.seed)
    model.to(device).train()
    optimizer = make_optimizer(model, config)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    loader = samples.loader(config.batch_size, shuffle=True, seed=config.seed)
    # Its own generator: turning augmentation on leaves the data order and the model's own
    # draws (dropout, VIB's z) as they were.
    augmentation = augmentation_generator(config.seed) if config.augment.enabled else None
    step = 0
    for epoch in range(config.epochs):
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            if augmentation is not None:
                inputs = augment(inputs, config.augment, augmentation)
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(step, len(loader))
            optimizer.zero_grad(set_to_none=True)
            with _autocast(config, device):
                if isinstance(model, VariationalBottleneck):
                    loss = vib_loss(
                        model, inputs, labels, config.beta, label_smoothing=config.label_smoothing
                    )
                else:
                    loss = loss_fn(model(inputs), labels)
            loss.backward()
            if config.grad_clip_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
            optimizer.step()
            step += 1
        if progress is not None:
            progress(stage, epoch + 1, config.epochs)
    return model.eval()


def _autocast(config: TrainingConfig, device: torch.device) -> AbstractContextManager[object]:
    """bf16 autocast around the forward pass and the loss where the recipe asks for it and
    the device has it (bf16 keeps float32's range: no loss scaling); nothing otherwise."""
    if config.as_run_on(device).mixed_precision == "bf16":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Every draw from torch's global generators (CPU and CUDA) inside comes from ``seed``;
    their states are restored after, so a job's seed does not leak into the next job."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# Inference batches. On the CPU a smaller batch keeps a convolution's activations in cache:
# small_cnn's first layer makes 100 KB a 28x28 image, 100 MB for a batch of 1,024.
CPU_INFERENCE_BATCH = 256
CUDA_INFERENCE_BATCH = 1024


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, *, device: torch.device) -> torch.Tensor:
    """Logits for ``inputs``, in batches, on the CPU. On the CPU a convolutional network
    infers in the channels-last memory format (:func:`channels_last_on_cpu`)."""
    model.eval()
    if device.type == "cpu":
        batch = CPU_INFERENCE_BATCH
        layout: AbstractContextManager[None] = channels_last_on_cpu(model)
    else:
        batch, layout = CUDA_INFERENCE_BATCH, nullcontext()
    with layout:
        outputs = [model(rows.to(device)).cpu() for rows in inputs.split(batch)]
    return torch.cat(outputs) if outputs else torch.empty(0)


@contextmanager
def channels_last_on_cpu(model: nn.Module) -> Iterator[None]:
    """``model``'s 4-D weights in the channels-last memory format for the block, then
    back in the default (contiguous) one. oneDNN's CPU convolutions run faster so: small_cnn
    inferred 1,000 28x28 images about 2x faster at the same batch size (``python -m
    benchmarks.inference``). Only the memory layout changes: the values, the parameters'
    identity (optimisers and references keep working) and what ``state_dict`` holds are the
    same. A network without 4-D weights, or one already wholly channels-last, is left
    alone."""
    weights = [p for p in model.parameters() if p.dim() == 4]
    if not weights or all(w.is_contiguous(memory_format=torch.channels_last) for w in weights):
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def accuracy(model: nn.Module, samples: SampleSet, *, device: torch.device) -> float | None:
    """Top-1 accuracy, or None for an empty set."""
    if not len(samples):
        return None
    model.eval()
    correct = 0
    with torch.no_grad():
        for inputs, labels in samples.batches(1024):
            correct += int((model(inputs.to(device)).argmax(1).cpu() == labels).sum())
    return torch.tensor(correct / len(samples), dtype=torch.float32).item()
