"""The maths behind Projected-Gradient Unlearning (Hoang et al., WACV 2024), apart from
the unlearner that uses it (``ml.unlearners.pgu``): which layers are updated and
what each of them sees (``representations``), and the core gradient space of a cache
(``core_space``)."""

from ml.pgu.core_space import (
    Projection,
    core_gradient_space,
    layer_projector,
    project_out,
    residual_projector,
)
from ml.pgu.representations import Layer, cache_bytes, discover_layers, input_covariances

__all__ = [
    "Layer",
    "cache_bytes",
    "discover_layers",
    "input_covariances",
    "Projection",
    "core_gradient_space",
    "residual_projector",
    "layer_projector",
    "project_out",
]
