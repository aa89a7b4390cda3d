"""Audits of versions and certificates of deletion requests."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import audit_log, lineage
from service.audits.schemas import AuditRead, Certificate, LogEntry
from service.deletion_requests import service as requests
from service.enums import JobKind, JobStatus, RequestStatus, VersionKind
from service.errors import Conflict, NotFound
from service.models import service as models
from service.states import move_job
from service.tables import Audit, AuditLogEntry, Job, ModelVersion, utcnow

__all__ = [
    "latest_or_raise",
    "request_audit",
    "certificate",
    "version_or_raise",
    "reference_versions",
    "store_references",
    "record",
]


def _latest(session: Session, version: ModelVersion) -> Audit | None:
    return session.scalar(
        select(Audit)
        .where(Audit.version_id == version.id)
        .order_by(Audit.created_at.desc(), Audit.id.desc())
        .limit(1)
    )


def latest_or_raise(session: Session, *, tenant_id: str, model_id: str, number: int) -> AuditRead:
    version = models.get_version_or_raise(
        session, tenant_id=tenant_id, model_id=model_id, number=number
    )
    audit = _latest(session, version)
    if audit is None:
        raise NotFound("audit of version", number)
    return AuditRead.model_validate(
        {**audit.report, "job_id": audit.job_id, "created_at": audit.created_at}
    )


def request_audit(
    session: Session, *, tenant_id: str, model_id: str, number: int, reference: str
) -> Job:
    """Queue an audit job that (re)computes the version's audit."""
    model = models.get_or_raise(session, tenant_id=tenant_id, model_id=model_id, lock=True)
    version = models.get_version_or_raise(
        session, tenant_id=tenant_id, model_id=model_id, number=number
    )
    if not version.forgotten_samples:
        raise Conflict(f"version {number} forgot nothing; there is nothing to audit")
    job = lineage.new_job(
        session, model, JobKind.AUDIT, version=number, params={"reference": reference}
    )
    session.commit()
    return job


def version_or_raise(session: Session, model_id: str, number: int) -> ModelVersion:
    """Version ``number`` of the model (LookupError when there is none)."""
    version = _version(session, model_id, number)
    if version is None:
        raise LookupError(f"model {model_id} has no version {number}")
    return version


def reference_versions(session: Session, model_id: str, number: int) -> list[ModelVersion]:
    """The retrained references of version ``number`` kept so far, oldest first."""
    return list(
        session.scalars(
            select(ModelVersion)
            .where(
                ModelVersion.model_id == model_id,
                ModelVersion.parent == number,
                ModelVersion.kind == VersionKind.RETRAINED,
            )
            .order_by(ModelVersion.number)
        )
    )


def store_references(
    session: Session, *, model_id: str, reference_of: int, shas: list[str], seconds_each: float
) -> list[int]:
    """New ``retrained`` versions (weights already stored) outside the lineage, children of
    the audited version; returns their numbers."""
    model = lineage.lock_model(session, model_id)
    return [
        lineage.new_version(
            session,
            model=model,
            kind=VersionKind.RETRAINED,
            sha256=sha,
            metrics={},
            job=None,
            forgotten=0,
            seconds=seconds_each,
            reference_of=reference_of,
        ).number
        for sha in shas
    ]


def record(
    session: Session, *, job: Job, version_id: str, report: dict[str, Any], seconds: float
) -> None:
    """An audit job's end: its report, the job's success, the audit-log entry, and the
    completion of the requests that waited for this audit."""
    session.add(
        Audit(version_id=version_id, job_id=job.id, verdict=report.get("verdict"), report=report)
    )
    job.result_version = job.base_version
    job.timings = {**job.timings, "auditing": seconds}
    move_job(session, job, JobStatus.SUCCEEDED)
    audit_log.append(
        session,
        tenant_id=job.tenant_id,
        action="model_version.audited",
        subject_type="model",
        subject_id=job.model_id,
        payload={
            "version": job.base_version,
            "verdict": report.get("verdict"),
            "frm": report.get("frm"),
            "mia_auc": report["metrics"].get("mia_auc"),
            "reference_versions": (report.get("reference") or {}).get("versions"),
        },
    )
    lineage.complete_audited_requests(
        session, job, detail=f"version {job.base_version} audited: {report.get('verdict')}"
    )


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def certificate(session: Session, *, tenant_id: str, request_id: str) -> Certificate:
    request = requests.get_or_raise(session, tenant_id=tenant_id, request_id=request_id)
    if request.status != RequestStatus.COMPLETED:
        raise Conflict(f"the request is {request.status}; certificates are for completed ones")
    job = session.get(Job, request.job_id) if request.job_id else None
    after = _version(session, request.model_id, request.result_version)
    before = _version(session, request.model_id, after.parent if after and job else None)
    audit = _latest(session, after) if after and job else None
    entries = _log_entries(session, request.id, request.model_id, request.result_version)
    return Certificate(
        request={
            "id": request.id,
            "model_id": request.model_id,
            "subject_sha256": _digest(request.subject_id),
            "status": request.status,
            "sample_count": request.sample_count,
            "class_labels": request.class_labels,
            "already_forgotten": len(request.already_forgotten),
            "created_at": request.created_at,
            "due_at": request.due_at,
            "completed_at": request.completed_at,
            "met_deadline": bool(request.completed_at and request.completed_at <= request.due_at),
        },
        sample_key_digests=sorted(_digest(key) for key in request.sample_keys or []),
        job=_job_summary(job),
        version_before=_version_summary(before),
        version_after=_version_summary(after) if job else None,
        audit=_audit_summary(audit),
        audit_log=[LogEntry.model_validate(e, from_attributes=True) for e in entries],
        audit_log_entries_consistent=all(
            audit_log.entry_hash(e.prev_hash, e) == e.hash for e in entries
        ),
        issued_at=utcnow(),
    )


def _version(session: Session, model_id: str, number: int | None) -> ModelVersion | None:
    if number is None:
        return None
    return session.scalar(
        select(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.number == number)
    )


def _version_summary(version: ModelVersion | None) -> dict[str, Any] | None:
    if version is None:
        return None
    return {
        "number": version.number,
        "kind": version.kind,
        "parent": version.parent,
        "artifact_sha256": version.artifact_sha256,
        "created_at": version.created_at,
        "metrics": version.metrics,
    }


def _job_summary(job: Job | None) -> dict[str, Any] | None:
    if job is None:
        return None
    return {
        "id": job.id,
        "unlearner": job.unlearner,
        "attempts": job.attempts,
        "request_ids": job.request_ids,
        "sample_count": job.sample_count,
        "timings": job.timings,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def _audit_summary(audit: Audit | None) -> dict[str, Any] | None:
    if audit is None:
        return None
    report = audit.report
    keep = ("ua", "ra", "ta", "mia_efficacy", "mia_auc", "lira_auc", "lira_tpr_at_1_fpr")
    return {
        "verdict": audit.verdict,
        "frm": report.get("frm"),
        "avg_disparity": report.get("avg_disparity"),
        "metrics": {k: v for k, v in report.get("metrics", {}).items() if k in keep},
        "failed_gates": report.get("failed_gates", []),
        "created_at": audit.created_at,
    }


def _log_entries(
    session: Session, request_id: str, model_id: str, number: int | None
) -> list[AuditLogEntry]:
    """The request's own entries, and the publication and audit of its version."""
    own = session.scalars(select(AuditLogEntry).where(AuditLogEntry.subject_id == request_id)).all()
    version_entries = [
        entry
        for entry in session.scalars(
            select(AuditLogEntry).where(
                AuditLogEntry.subject_id == model_id,
                AuditLogEntry.action.in_(["model_version.published", "model_version.audited"]),
            )
        )
        if entry.payload.get("version") == number
    ]
    return sorted([*own, *version_entries], key=lambda entry: entry.id)
