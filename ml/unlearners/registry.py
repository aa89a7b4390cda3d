"""The registry of unlearning methods, the torchvision ``register_model`` way: a method
module decorates its class with :func:`register_unlearner`; callers look methods up by name.
"""

from __future__ import annotations

from typing import Any

from ml.registry import Registry
from ml.unlearners.base import Unlearner

__all__ = [
    "register_unlearner",
    "unlearner_class",
    "get_unlearner",
    "list_unlearners",
    "validate_params",
]

_unlearners: Registry[type[Unlearner]] = Registry("unlearner")


def register_unlearner(cls: type[Unlearner]) -> type[Unlearner]:
    """Class decorator: registers ``cls`` under ``cls.name`` (duplicates are refused)."""
    _unlearners.register(cls.name)(cls)
    return cls


def unlearner_class(name: str) -> type[Unlearner]:
    """The method registered as ``name`` (raises UnknownName)."""
    return _unlearners.get(name)


def get_unlearner(name: str, params: dict[str, Any] | None = None) -> Unlearner:
    """An instance with validated params (raises UnknownName or pydantic ValidationError)."""
    return unlearner_class(name)(params)


def list_unlearners() -> list[str]:
    return _unlearners.names()


def validate_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Params checked by the method's own schema, defaults filled in."""
    return unlearner_class(name).Params.model_validate(params).model_dump(mode="json")
