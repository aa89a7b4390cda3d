"""What ``GET /v1/architectures`` and ``GET /v1/unlearners`` answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ArchitectureInfo(BaseModel):
    name: str
    source: str = Field(description="`built-in`, or `plug-in <distribution> <version>`")
    params_schema: dict[str, Any] | None = Field(
        description="the JSON schema of `params` (defaults, bounds, choices); null when a "
        "plug-in's params cannot be described"
    )
    defaults: dict[str, Any] | None = Field(
        description="`params` with every default filled in; null when some param has none"
    )


class Unsuitability(BaseModel):
    architecture: str
    reason: str


class UnlearnerInfo(BaseModel):
    name: str
    params_schema: dict[str, Any]
    defaults: dict[str, Any]
    needs: list[str] = Field(
        description="what it reads besides the forget set: `retain`, `validation`, "
        "`shadow`, `cache`"
    )
    unsuitable_for: list[Unsuitability] = Field(
        description="the installed architectures it refuses, each at its default params on "
        "a representative input (`representative_input`): indicative, since a model's "
        "own params and dataset decide (POST /v1/models answers 422 with the reason)"
    )


class ArchitectureList(BaseModel):
    items: list[ArchitectureInfo]


class UnlearnerList(BaseModel):
    representative_input: dict[str, Any] = Field(
        description="the input shape and class count `unsuitable_for` was computed at"
    )
    items: list[UnlearnerInfo]
