"""Models: create, read, update, flush, and uploaded weights (versions are
``service.models.versions``)."""

from __future__ import annotations

from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from torch import nn

from ml.training import TrainingConfig
from service import audit_log, lookup, outbox
from service.artifacts import store
from service.datasets import service as datasets
from service.db import on_commit
from service.enums import (
    JobKind,
    ModelStatus,
    RequestStatus,
)
from service.errors import Conflict, InvalidInput
from service.jobs import lifecycle
from service.models.schemas import ModelCreate, ModelRead, ModelUpdate
from service.models.settings import ArchitectureSpec, AuditPolicy, ModelSettings, UnlearnerSpec
from service.pagination import paginate
from service.settings import get_settings
from service.tables import Dataset, DeletionRequest, Model, ModelVersion, utcnow

__all__ = [
    "create",
    "get_or_raise",
    "list_page",
    "update",
    "flush",
    "to_read",
    "upload_version",
]


def create(session: Session, *, tenant_id: str, spec: ModelCreate) -> Model:
    dataset = datasets.get_or_raise(session, tenant_id=tenant_id, dataset_id=spec.dataset_id)
    datasets.require_ready(dataset, "a model")
    if session.scalar(
        select(Model.id).where(Model.tenant_id == tenant_id, Model.name == spec.name)
    ):
        raise Conflict(f"a model named {spec.name!r} already exists")
    network = _sized_structure(spec.architecture, dataset)
    _check_method_fits(spec.unlearner, spec.architecture, network)
    _check_references_have_a_recipe(spec.audit, spec.training)
    _check_recipe_fits(spec.training, dataset)
    trains = spec.weights == "train"
    model = Model(
        tenant_id=tenant_id,
        dataset_id=dataset.id,
        name=spec.name,
        architecture=spec.architecture.model_dump(mode="json"),
        unlearner=spec.unlearner.model_dump(mode="json"),
        batching=spec.batching.model_dump(mode="json"),
        training=spec.training.model_dump(mode="json") if spec.training else {},
        audit_policy=spec.audit.model_dump(mode="json"),
        status=ModelStatus.TRAINING if trains else ModelStatus.AWAITING_UPLOAD,
    )
    session.add(model)
    session.flush()
    if trains:
        lifecycle.new_job(session, model, JobKind.TRAIN)
    audit_log.append(
        session,
        tenant_id=tenant_id,
        action="model.created",
        subject_type="model",
        subject_id=model.id,
        payload={
            "name": model.name,
            "dataset_id": dataset.id,
            "unlearner": model.unlearner,
            "weights": spec.weights,
        },
    )
    session.commit()
    return model


def _check_references_have_a_recipe(audit: AuditPolicy, training: TrainingConfig | None) -> None:
    """422 when the audit policy asks for retrained references (``reference_every`` or
    ``complete_after: reference_audit``) and the model declares no recipe to retrain with."""
    if training is not None:
        return
    asks = [
        name
        for name, asked in (
            ("reference_every", audit.reference_every > 0),
            ("complete_after", audit.complete_after == "reference_audit"),
        )
        if asked
    ]
    if asks:
        message = (
            "retrained references need the model's training recipe and this model declares "
            "none: give `training` (with `weights: upload` for uploaded weights) or audit "
            "without references"
        )
        raise InvalidInput(
            message, [{"loc": ["body", "audit", name], "msg": message} for name in asks]
        )


def _check_recipe_fits(training: TrainingConfig | None, dataset: Dataset) -> None:
    """422 when the recipe augments and the dataset's samples are not images (C, H, W):
    a job would fail on its first batch."""
    if training is None:
        return
    try:
        training.augment.check_fits(datasets.indexed_shape(dataset)[0])
    except ValueError as error:
        message = str(error)
        raise InvalidInput(
            message, [{"loc": ["body", "training", "augment"], "msg": message}]
        ) from None


def _sized_structure(architecture: ArchitectureSpec, dataset: Dataset) -> nn.Module:
    """The architecture's network for this dataset on the meta device (nothing allocated);
    422 when it cannot be built for the dataset's shape, has more parameters than
    ``UNLEARN_MAX_MODEL_PARAMETERS``, or does not map the dataset's inputs to one logit per
    class through an output layer class deletion can mask (``ml.architectures.check_fits``).
    """

    def refused(message: str) -> InvalidInput:
        return InvalidInput(message, [{"loc": ["body", "architecture"], "msg": message}])

    shape, classes = datasets.indexed_shape(dataset)
    try:
        network = architecture.structure(shape, classes)
    except ValueError as error:
        raise refused(str(error)) from None
    parameters = sum(p.numel() for p in network.parameters())
    limit = get_settings().max_model_parameters
    if parameters > limit:
        raise refused(f"{parameters} parameters on this dataset; at most {limit}")
    try:
        architecture.check_fits(network, shape, classes)
    except ValueError as error:
        raise refused(f"architecture {architecture.name!r}: {error}") from None
    return network


def _check_method_fits(
    unlearner: UnlearnerSpec, architecture: ArchitectureSpec, network: nn.Module
) -> None:
    """422 when the method cannot unlearn this architecture (``unsuitable_for`` says why,
    asked of ``network`` on the meta device), before anything is stored."""
    reason = unlearner.unsuitable_for(network)
    if reason is not None:
        message = f"unlearner {unlearner.name!r} cannot unlearn {architecture.name!r}: {reason}"
        raise InvalidInput(message, [{"loc": ["body", "unlearner"], "msg": message}])


def get_or_raise(session: Session, *, tenant_id: str, model_id: str, lock: bool = False) -> Model:
    return lookup.get_or_raise(
        session, Model, model_id, tenant_id=tenant_id, what="model", lock=lock
    )


def list_page(
    session: Session, *, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[Model], str | None]:
    statement = select(Model).where(Model.tenant_id == tenant_id)
    return paginate(
        session, statement, order=(Model.created_at, Model.id), limit=limit, cursor=cursor
    )


def pending_counts(session: Session, model_ids: list[str]) -> dict[str, int]:
    if not model_ids:
        return {}
    rows = session.execute(
        select(DeletionRequest.model_id, func.count())
        .where(
            DeletionRequest.model_id.in_(model_ids),
            DeletionRequest.status == RequestStatus.PENDING,
        )
        .group_by(DeletionRequest.model_id)
    ).all()
    return {model_id: count for model_id, count in rows}


def to_read(model: Model, pending: int) -> ModelRead:
    return ModelRead(
        id=model.id,
        name=model.name,
        dataset_id=model.dataset_id,
        architecture=model.architecture,
        unlearner=model.unlearner,
        batching=model.batching,
        training=model.training or None,
        audit=model.audit_policy,
        status=ModelStatus(model.status),
        head_version=model.head_version,
        pending_requests=pending,
        created_at=model.created_at,
        updated_at=model.updated_at,
    )


def update(session: Session, *, tenant_id: str, model_id: str, spec: ModelUpdate) -> Model:
    model = get_or_raise(session, tenant_id=tenant_id, model_id=model_id, lock=True)
    changes: dict[str, Any] = {}
    if spec.unlearner is not None:
        dataset = datasets.get_or_raise(session, tenant_id=tenant_id, dataset_id=model.dataset_id)
        architecture = ArchitectureSpec.model_validate(model.architecture)
        network = architecture.structure(*datasets.indexed_shape(dataset))
        _check_method_fits(spec.unlearner, architecture, network)
        model.unlearner = changes["unlearner"] = spec.unlearner.model_dump(mode="json")
    if spec.batching is not None:
        model.batching = changes["batching"] = spec.batching.model_dump(mode="json")
    if spec.audit is not None:
        recipe = ModelSettings.of(model).training
        _check_references_have_a_recipe(spec.audit, recipe)
        model.audit_policy = changes["audit"] = spec.audit.model_dump(mode="json")
    if changes:
        audit_log.append(
            session,
            tenant_id=tenant_id,
            action="model.updated",
            subject_type="model",
            subject_id=model.id,
            payload=changes,
        )
    session.commit()
    return model


def flush(session: Session, *, tenant_id: str, model_id: str) -> int:
    """Ask the dispatcher to batch whatever is pending now; returns the pending count."""
    model = get_or_raise(session, tenant_id=tenant_id, model_id=model_id, lock=True)
    model.flush_requested_at = utcnow()
    pending = pending_counts(session, [model.id]).get(model.id, 0)
    on_commit(session, lambda: outbox.enqueue_dispatch(model_id))
    session.commit()
    return pending


def upload_version(
    session: Session,
    *,
    tenant_id: str,
    model_id: str,
    data: bytes,
    generation: int | None = None,
) -> ModelVersion:
    """Uploaded safetensors weights become the next version (kind ``uploaded``); their
    size was bounded at the edge (``UNLEARN_MAX_UPLOAD_BYTES``). ``generation`` is the
    dataset generation they were trained on (None: the dataset's current one)."""
    model = get_or_raise(session, tenant_id=tenant_id, model_id=model_id, lock=True)
    if lifecycle.live_lineage_job(session, model.id) is not None:
        raise Conflict("a job is writing this model's lineage; upload when it has finished")
    dataset = datasets.get_or_raise(session, tenant_id=tenant_id, dataset_id=model.dataset_id)
    if generation is not None and not 1 <= generation <= dataset.generation:
        raise InvalidInput(
            f"generation must be one of the dataset's generations, 1 to {dataset.generation}",
            [{"loc": ["body", "generation"], "msg": f"not in 1..{dataset.generation}"}],
        )
    state_dict = _checked_state_dict(session, model, data)
    sha256 = store().put_tensors(state_dict)
    version = lifecycle.publish_uploaded(
        session,
        model=model,
        weights_sha256=sha256,
        generation=generation or dataset.generation,
    )
    session.commit()
    return version


# How many tensors of each kind a refused upload lists (the counts are always whole).
LISTED_TENSORS = 20


def _checked_state_dict(session: Session, model: Model, data: bytes) -> dict[str, torch.Tensor]:
    try:
        state_dict = load_safetensors(data)
    except (SafetensorError, ValueError, OSError) as error:
        raise InvalidInput(f"not a safetensors file: {error}") from None
    dataset = datasets.get_or_raise(session, tenant_id=model.tenant_id, dataset_id=model.dataset_id)
    architecture = ModelSettings.of(model).architecture
    shape, classes = datasets.indexed_shape(dataset)
    _check_tensor_names_and_shapes(architecture.structure(shape, classes), state_dict)
    network = architecture.build(shape, classes)
    try:
        network.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        message = str(error).replace("\n", " ")
        raise InvalidInput(f"weights do not fit the architecture: {message}") from None
    broken = sorted(
        name
        for name, tensor in state_dict.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    )
    if broken:
        raise InvalidInput(f"weights hold NaN or infinite values: {', '.join(broken[:10])}")
    return {name: tensor.detach() for name, tensor in network.state_dict().items()}


def _check_tensor_names_and_shapes(network: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """422 listing the ``missing``, ``unexpected`` and ``mismatched`` tensors (each ``name``,
    ``expected`` and ``got`` shape, the first ``LISTED_TENSORS`` with the ``count``) when
    the upload's names and shapes are not the network's (``network`` may be its meta-device
    structure). Missing and mismatched tensors come in the network's order, unexpected
    ones by name."""
    expected = {name: list(tensor.shape) for name, tensor in network.state_dict().items()}
    got = {name: list(tensor.shape) for name, tensor in state_dict.items()}
    kinds: dict[str, list[dict[str, Any]]] = {
        "missing": [
            {"name": n, "expected": s, "got": None} for n, s in expected.items() if n not in got
        ],
        "unexpected": [
            {"name": n, "expected": None, "got": got[n]} for n in sorted(got) if n not in expected
        ],
        "mismatched": [
            {"name": n, "expected": s, "got": got[n]}
            for n, s in expected.items()
            if n in got and got[n] != s
        ],
    }
    if not any(kinds.values()):
        return
    counts = ", ".join(f"{len(found)} {kind}" for kind, found in kinds.items() if found)
    first = next(found[0] for found in kinds.values() if found)
    detail = (
        f"the weights do not fit the architecture: {counts} tensors (first: {first['name']!r}, "
        f"expected {first['expected']}, got {first['got']})"
    )
    errors = [
        {
            "loc": ["body", "file", t["name"]],
            "msg": f"{kind}: expected {t['expected']}, got {t['got']}",
        }
        for kind, found in kinds.items()
        for t in found[:LISTED_TENSORS]
    ]
    raise InvalidInput(
        detail,
        errors,
        **{
            kind: {"count": len(found), "tensors": found[:LISTED_TENSORS]}
            for kind, found in kinds.items()
        },
    )
