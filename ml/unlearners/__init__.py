"""Unlearning methods, one module each, all in one registry.

Importing this package imports every method module so that each registers itself.
"""

from ml.unlearners import (  # noqa: F401  (registration)
    conmu,
    dau,
    finetune,
    gradient_ascent,
    ltu,
    pgu,
    random_labels,
    retrain,
    rfu_ss,
)
from ml.unlearners.base import (
    Artifact,
    Need,
    NoParams,
    UnlearnContext,
    Unlearner,
    UnlearnResult,
    run_unlearner,
    state_dict_of,
)
from ml.unlearners.registry import (
    get_unlearner,
    list_unlearners,
    register_unlearner,
    unlearner_class,
    validate_params,
)

__all__ = [
    "Artifact",
    "Need",
    "NoParams",
    "UnlearnContext",
    "Unlearner",
    "UnlearnResult",
    "get_unlearner",
    "list_unlearners",
    "register_unlearner",
    "run_unlearner",
    "state_dict_of",
    "unlearner_class",
    "validate_params",
]
