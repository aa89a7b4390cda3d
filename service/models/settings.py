"""A model's settings as typed specs: its architecture, unlearner, batching policy,
training recipe and audit policy, each checked by its registry's schema, and
:class:`ModelSettings`, a model row's JSON read back as those specs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from ml import architectures, unlearners
from ml.audit.scores import GATE_Z, AuditTolerances
from ml.registry import UnknownName
from ml.training import TrainingConfig
from service.schemas import Text
from service.settings import get_settings

if TYPE_CHECKING:
    from service.tables import Model

__all__ = [
    "ArchitectureSpec",
    "UnlearnerSpec",
    "Batching",
    "AuditPolicy",
    "ModelSettings",
]


def _checked(validate: Any, name: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        return validate(name, params)  # type: ignore[no-any-return]
    except UnknownName as error:
        raise ValueError(str(error)) from None
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in error.errors()
        )
        raise ValueError(f"invalid params for {name!r}: {problems}") from None


def _enum(schema: dict[str, Any], names: list[str]) -> None:
    """A name field's schema lists the registry's names (read when the schema is made)."""
    schema["enum"] = list(names)


class ArchitectureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    # The schema lists the installed names (plug-ins included) when it is generated.
    name: Text = Field(
        max_length=100,
        json_schema_extra=lambda schema: _enum(schema, architectures.architectures.names()),
    )
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> ArchitectureSpec:
        self.params = _checked(architectures.validate_params, self.name, self.params)
        return self

    def build(self, input_shape: list[int], num_classes: int) -> nn.Module:
        """A freshly initialised network for a dataset of this shape."""
        return architectures.build_model(self.name, self.params, input_shape, num_classes)

    def structure(self, input_shape: list[int], num_classes: int) -> nn.Module:
        """The network's modules on the meta device (nothing allocated), for checks."""
        return architectures.structure(self.name, self.params, input_shape, num_classes)

    def check_fits(self, network: nn.Module, input_shape: list[int], num_classes: int) -> None:
        """Raise ValueError unless ``network`` (its ``structure``) maps inputs of this shape
        to one logit per class through a maskable output layer."""
        architectures.check_fits(network, input_shape, num_classes)


class UnlearnerSpec(BaseModel):
    """An unlearner by registry name; params are checked by the method's own schema."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: Text = Field(
        max_length=100,
        json_schema_extra=lambda schema: _enum(schema, unlearners.list_unlearners()),
    )
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> UnlearnerSpec:
        self.params = _checked(unlearners.validate_params, self.name, self.params)
        return self

    @property
    def method(self) -> type[unlearners.Unlearner]:
        return unlearners.unlearner_class(self.name)

    def build(self) -> unlearners.Unlearner:
        return unlearners.get_unlearner(self.name, self.params)

    def unsuitable_for(self, network: nn.Module) -> str | None:
        """Why the method, with these params, cannot unlearn ``network`` (None: it can):
        its own reason, or a per-version cache bigger than ``UNLEARN_MAX_CACHE_MB``."""
        method = self.build()
        reason = method.refuses(network)
        mib, limit = method.cache_bytes(network) / 2**20, get_settings().max_cache_mb
        if reason is None and mib > limit:
            reason = (
                f"it keeps a {mib:.0f} MiB cache per version for this network and needs about "
                f"three times that in memory per deletion; UNLEARN_MAX_CACHE_MB allows {limit}"
            )
        return reason


class Batching(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    max_requests: int = Field(100, ge=1, le=100_000, description="dispatch at this many pending")
    max_wait_seconds: float = Field(
        300, ge=0, le=30 * 86400, description="or once the oldest has waited this long"
    )


class AuditPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reference_every: int = Field(
        0, ge=0, description="audit every Nth version against retrained references (0: never)"
    )
    reference_seeds: int = Field(
        4, ge=1, le=8, description="K reference models (LiRA needs 2; the gates' spread 4)"
    )
    tolerances: AuditTolerances = Field(
        default_factory=AuditTolerances,
        description="the least each gate allows; chance (the references' spread and the "
        "paired per-sample disagreements) may widen it",
    )
    gate_z: float = Field(
        GATE_Z, gt=0, le=10, description="standard deviations of chance a gate allows"
    )
    complete_after: Literal["audit", "reference_audit"] = Field(
        "audit",
        description="when a batch's requests complete: once their version's audit is stored "
        "(`audit`, with or without references), or only once an audit against retrained "
        "references is (`reference_audit`: every version is then audited against references)",
    )


class ModelSettings(BaseModel):
    """A model row's JSON settings read back as the specs they were stored from."""

    architecture: ArchitectureSpec
    unlearner: UnlearnerSpec
    batching: Batching
    training: TrainingConfig | None  # None: the model waits for uploaded weights
    audit: AuditPolicy

    @classmethod
    def of(cls, model: Model) -> ModelSettings:
        return cls(
            architecture=ArchitectureSpec.model_validate(model.architecture),
            unlearner=UnlearnerSpec.model_validate(model.unlearner),
            batching=Batching.model_validate(model.batching),
            training=TrainingConfig.model_validate(model.training) if model.training else None,
            audit=AuditPolicy.model_validate(model.audit_policy or {}),
        )
