"""A claimed job's inputs on the device it runs on: the data ``service.jobs.inputs`` read
from the database, and the networks built from it (fresh ones, stored versions, and the
context an unlearner runs in)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ml.devices import resolve_device
from ml.training import TrainingConfig
from ml.unlearners import UnlearnContext
from service.jobs.inputs import (
    JobInputs,
    SampleSets,
    load_inputs,
    version_artifact,
    version_weights,
)
from service.jobs.lease import Attempt
from service.models.settings import ModelSettings
from service.settings import get_settings

__all__ = ["Workload", "load_workload"]


@dataclass(frozen=True)
class Workload:
    inputs: JobInputs
    device: torch.device

    @property
    def sets(self) -> SampleSets:
        return self.inputs.sets

    @property
    def settings(self) -> ModelSettings:
        return self.inputs.settings

    def new_network(self) -> nn.Module:
        """A freshly initialised network of the model's architecture (not on the device)."""
        return self.settings.architecture.build(self.inputs.input_shape, self.inputs.num_classes)

    def load_version(self, number: int | None) -> nn.Module:
        """Version ``number``'s weights in a network on the device, in eval mode."""
        weights = version_weights(self.inputs.model_id, number)
        network = self.new_network()
        network.load_state_dict(weights)
        return network.to(self.device).eval()

    def unlearn_context(
        self, attempt: Attempt, progress: Callable[[str, int, int], None]
    ) -> UnlearnContext:
        """The context an unlearner runs in, on the job's base version."""
        # The model's recipe (an uploaded model's declared one); a model that declares none
        # gives the methods that train the defaults.
        training = self.settings.training or TrainingConfig()
        model_id, number = self.inputs.model_id, attempt.base_version
        return UnlearnContext(
            model=self.load_version(number),
            build_model=self.new_network,
            forget=self.sets.forget,
            retain=self.sets.retain,
            validation=self.sets.validation,
            shadow=self.sets.shadow,
            training=training,
            device=self.device,
            base_version=number or 0,
            class_labels=self.sets.class_labels,
            artifacts=lambda name: version_artifact(model_id, number, name),
            progress=progress,
            seed=attempt.seed,
            load_version=self.load_version,
            masked_classes=[
                c for c in self.sets.masked_classes if c not in (self.sets.class_labels or [])
            ],
        )


def load_workload(attempt: Attempt) -> Workload:
    """The inputs of a claimed job, on this worker's device."""
    return Workload(load_inputs(attempt), resolve_device(get_settings().device))
