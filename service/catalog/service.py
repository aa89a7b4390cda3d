"""What is installed: every architecture (built-in or a plug-in's) and every unlearner,
with its params' JSON schema and defaults, and for unlearners what they read and the
architectures they refuse. The registries are fixed once ``ml`` is imported, so the answers
are computed once per set of names."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ValidationError

from ml import architectures, unlearners
from ml.architectures import ArchitectureError
from service.catalog.schemas import (
    ArchitectureInfo,
    ArchitectureList,
    UnlearnerInfo,
    UnlearnerList,
    Unsuitability,
)
from service.models.settings import UnlearnerSpec
from service.settings import get_settings

__all__ = ["REPRESENTATIVE_INPUT", "list_architectures", "list_unlearners"]

# Where ``unsuitable_for`` is asked: a small grey image, ten classes (MNIST's shape).
REPRESENTATIVE_INPUT: dict[str, Any] = {"input_shape": [1, 28, 28], "num_classes": 10}


def _schema(params: type[BaseModel]) -> dict[str, Any] | None:
    try:
        return params.model_json_schema()
    except Exception:  # a plug-in's type without a JSON schema: say so, never a 500
        return None


def _defaults(params: type[BaseModel]) -> dict[str, Any] | None:
    try:
        return params().model_dump(mode="json")
    except ValidationError:
        return None


def list_architectures() -> ArchitectureList:
    return _architectures(tuple(architectures.architectures.names()))


@functools.cache
def _architectures(names: tuple[str, ...]) -> ArchitectureList:
    items = []
    for name in names:
        entry = architectures.architectures.get(name)
        items.append(
            ArchitectureInfo(
                name=name,
                source=entry.source,
                params_schema=_schema(entry.Params),
                defaults=_defaults(entry.Params),
            )
        )
    return ArchitectureList(items=items)


def list_unlearners() -> UnlearnerList:
    return _unlearners(tuple(architectures.architectures.names()), get_settings().max_cache_mb)


@functools.cache
def _unlearners(names: tuple[str, ...], max_cache_mb: int) -> UnlearnerList:
    """(``max_cache_mb`` keys the cache: the limit is one of the reasons listed.)"""
    networks = {}
    for name in names:
        defaults = _defaults(architectures.architectures.get(name).Params)
        if defaults is None:
            continue  # no default params to build it with
        try:
            networks[name] = architectures.structure(
                name,
                defaults,
                REPRESENTATIVE_INPUT["input_shape"],
                REPRESENTATIVE_INPUT["num_classes"],
            )
        except ArchitectureError:
            continue  # its defaults do not take the representative input
    items = []
    for method_name in unlearners.list_unlearners():
        method = unlearners.unlearner_class(method_name)
        spec = UnlearnerSpec(name=method_name)  # its default params, as a model would ask
        refused = [
            Unsuitability(architecture=name, reason=reason)
            for name, network in networks.items()
            if (reason := spec.unsuitable_for(network)) is not None
        ]
        items.append(
            UnlearnerInfo(
                name=method_name,
                params_schema=method.Params.model_json_schema(),
                defaults=method.Params().model_dump(mode="json"),
                needs=sorted(need.value for need in method.needs),
                unsuitable_for=refused,
            )
        )
    return UnlearnerList(representative_input=REPRESENTATIVE_INPUT, items=items)
