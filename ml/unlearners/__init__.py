"""Unlearning methods, one module each, all in one registry.

Importing this package imports every method module so that each registers itself.
"""

from typing import Any

from ml.registry import Registry
from ml.unlearners.base import Unlearner

unlearners: Registry[type[Unlearner]] = Registry("unlearner")


def register_unlearner(cls: type[Unlearner]) -> type[Unlearner]:
    unlearners.register(cls.name)(cls)
    return cls


def get_unlearner(name: str, params: dict[str, Any] | None = None) -> Unlearner:
    """An instance with validated params (raises UnknownName or pydantic ValidationError)."""
    return unlearners.get(name)(params)


def list_unlearners() -> list[str]:
    return unlearners.names()


def validate_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Params checked by the method's own schema, defaults filled in."""
    return unlearners.get(name).Params.model_validate(params).model_dump(mode="json")


from ml.unlearners import (  # noqa: E402,F401  (registration)
    finetune,
    gradient_ascent,
    pgu,
    random_labels,
    retrain,
)
