"""The params of every installed architecture and unlearner in the OpenAPI document, from
their registries' own schemas (the same ones ``GET /v1/architectures`` and
``GET /v1/unlearners`` answer, and that check a model's params).

``ArchitectureSpec`` and ``UnlearnerSpec`` keep their ``name`` enum and gain a ``oneOf``:
one variant per installed name, pairing ``{"const": name}`` with that method's params
component (``UnlearnerParams_pgu``, ``ArchitectureParams_mlp``, ...). A plug-in's entry whose
params have no JSON schema is left out of the ``oneOf``, so that name's params stay
documented as any object there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from service.catalog import service as catalog

__all__ = ["document_method_params"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _component(prefix: str, name: str) -> str:
    return f"{prefix}_{_UNSAFE.sub('_', name)}"


def _hoisted(schema: dict[str, Any], component: str, schemas: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` moved into ``schemas`` under ``<component>_<def>``."""
    defs = schema.get("$defs", {})

    def rewrite(node: Any) -> Any:
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: rewrite(value) for key, value in node.items() if key != "$defs"}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = f"#/components/schemas/{component}_{ref.removeprefix('#/$defs/')}"
        return out

    for name, definition in defs.items():
        schemas[f"{component}_{name}"] = rewrite(definition)
    return rewrite(schema)  # type: ignore[no-any-return]


def _variants(
    prefix: str, entries: Iterable[tuple[str, dict[str, Any] | None]], schemas: dict[str, Any]
) -> list[dict[str, Any]]:
    variants = []
    for name, params in entries:
        if params is None:
            continue
        component = _component(prefix, name)
        schemas[component] = _hoisted(params, component, schemas)
        variants.append(
            {
                "type": "object",
                "title": f"{prefix.removesuffix('Params')} {name}",
                "properties": {
                    "name": {"const": name},
                    "params": {"$ref": f"#/components/schemas/{component}"},
                },
                "required": ["name"],
            }
        )
    return variants


def document_method_params(schemas: dict[str, Any]) -> None:
    kinds = (
        (
            "ArchitectureSpec",
            "ArchitectureParams",
            [(item.name, item.params_schema) for item in catalog.list_architectures().items],
        ),
        (
            "UnlearnerSpec",
            "UnlearnerParams",
            [(item.name, item.params_schema) for item in catalog.list_unlearners().items],
        ),
    )
    for spec, prefix, entries in kinds:
        if spec in schemas:
            schemas[spec]["oneOf"] = _variants(prefix, entries, schemas)
