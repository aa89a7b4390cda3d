"""The audit job (queue ``audit``): audits one version on what it forgot, optionally against
models retrained without it, and stores the report.

References are kept as versions of kind ``retrained`` outside the lineage (their parent is
the audited version), so a later audit of the same version reuses them instead of training
again. They train on every active training sample: the data the version should know.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ml.audit import AuditTolerances, audit_version, train_references
from ml.training import TrainingConfig, pick_device
from ml.unlearners.base import state_dict_of
from service import audit_log, metrics
from service.artifacts import store
from service.db import session_scope
from service.enums import JobStatus, VersionKind
from service.settings import get_settings
from service.states import move_job
from service.tables import Audit, Job, Model, ModelVersion
from workers.pipeline import (
    Claim,
    Heartbeat,
    load_data,
    load_weights,
    new_network,
    new_version,
    owned,
)

__all__ = ["run_audit", "AUDIT_REFERENCE_CHOICES"]

AUDIT_REFERENCE_CHOICES = ("retrain", "none")


def run_audit(claim: Claim, heartbeat: Heartbeat) -> None:
    device = pick_device(get_settings().device)
    number = claim.base_version
    with session_scope() as session:
        model_row = session.get(Model, claim.model_id)
        assert model_row is not None
        version = session.scalar(
            select(ModelVersion).where(
                ModelVersion.model_id == model_row.id, ModelVersion.number == number
            )
        )
        if version is None:
            raise LookupError(f"model {model_row.id} has no version {number}")
        data = load_data(session, model_row, version=number)
        existing = session.scalars(
            select(ModelVersion)
            .where(
                ModelVersion.model_id == model_row.id,
                ModelVersion.parent == number,
                ModelVersion.kind == VersionKind.RETRAINED,
            )
            .order_by(ModelVersion.number)
        ).all()
        reference_kind = _job_reference(session, claim)
    policy = model_row.audit_policy or {}
    network = load_weights(model_row, data.dataset, version.artifact_sha256, device)
    started = time.monotonic()

    references, reference_versions, reference_seconds = [], [], None
    if reference_kind == "retrain":
        k = int(policy.get("reference_seeds", 2))
        references = [
            load_weights(model_row, data.dataset, v.artifact_sha256, device) for v in existing[:k]
        ]
        reference_versions = [v.number for v in existing[:k]]
        trained_seconds = [v.seconds for v in existing[:k] if v.seconds]
        missing = k - len(references)
        if missing > 0:
            training = TrainingConfig.model_validate(model_row.training or {})
            seeds = [training.seed + 1 + i for i in range(len(references), k)]
            began = time.monotonic()
            fresh = train_references(
                build_model=lambda: new_network(model_row, data.dataset),
                retain=data.retain,
                training=training,
                k=missing,
                device=device,
                seeds=seeds,
                progress=heartbeat.report,
            )
            each = (time.monotonic() - began) / missing
            reference_versions += _store_references(claim, model_row.id, fresh, each)
            trained_seconds += [each] * missing
            references += fresh
        reference_seconds = sum(trained_seconds) / len(trained_seconds) if trained_seconds else None

    report = audit_version(
        network,
        forget=data.forget,
        retain=data.retain,
        holdout=data.holdout,
        test=data.test,
        device=device,
        references=references,
        class_labels=data.class_labels,
        masked_classes=data.masked_classes,
        tolerances=AuditTolerances.model_validate(policy.get("tolerances", {})),
        progress=heartbeat.report,
        seed=number or 0,
    )
    seconds = time.monotonic() - started
    report.update(
        version=number,
        unlearning_seconds=version.seconds,
        speedup_vs_reference=(
            reference_seconds / version.seconds if reference_seconds and version.seconds else None
        ),
    )
    if report.get("reference") is not None:
        report["reference"].update(
            version=reference_versions[0] if reference_versions else None,
            versions=reference_versions,
            seconds=reference_seconds,
        )
    metrics.AUDIT_DURATION.labels(reference_kind).observe(seconds)
    _store_report(claim, version.id, model_row, report, seconds)


def _job_reference(session: Session, claim: Claim) -> str:
    params = session.scalar(select(Job.params).where(Job.id == claim.job_id)) or {}
    reference = params.get("reference", "none")
    return reference if reference in AUDIT_REFERENCE_CHOICES else "none"


def _store_references(
    claim: Claim, model_id: str, models: list[Any], seconds_each: float
) -> list[int]:
    shas = [store().put_tensors(state_dict_of(model)) for model in models]
    with session_scope() as session:
        owned(session, claim)
        model = session.scalar(select(Model).where(Model.id == model_id).with_for_update())
        assert model is not None
        numbers = [
            new_version(
                session,
                model=model,
                kind=VersionKind.RETRAINED,
                sha256=sha,
                metrics={},
                job=None,
                forgotten=0,
                seconds=seconds_each,
                reference_of=claim.base_version,
            ).number
            for sha in shas
        ]
    return numbers


def _store_report(
    claim: Claim, version_id: str, model: Model, report: dict[str, Any], seconds: float
) -> None:
    with session_scope() as session:
        job = owned(session, claim)
        session.add(
            Audit(
                version_id=version_id, job_id=job.id, verdict=report.get("verdict"), report=report
            )
        )
        job.result_version = claim.base_version
        job.timings = {**job.timings, "auditing": seconds}
        move_job(session, job, JobStatus.SUCCEEDED)
        audit_log.append(
            session,
            tenant_id=model.tenant_id,
            action="model_version.audited",
            subject_type="model",
            subject_id=model.id,
            payload={
                "version": claim.base_version,
                "verdict": report.get("verdict"),
                "frm": report.get("frm"),
                "mia_auc": report["metrics"].get("mia_auc"),
                "reference_versions": (report.get("reference") or {}).get("versions"),
            },
        )
