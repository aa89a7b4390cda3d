"""Audits of versions and certificates of deletion requests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ml.audit import evidence_statement
from service import audit_log
from service.audits.schemas import (
    AuditRead,
    Certificate,
    ChainBreakRead,
    ChainHead,
    ChainVerification,
    LogEntry,
)
from service.callbacks import service as callbacks
from service.datasets import erasure
from service.db import session_scope
from service.deletion_requests import service as requests
from service.enums import JobKind, RequestStatus, WebhookEvent
from service.errors import Conflict, NotFound
from service.jobs import lifecycle
from service.models import service as models
from service.models import versions
from service.pagination import paginate
from service.settings import get_settings
from service.tables import Audit, AuditLogEntry, Job, ModelVersion, utcnow

__all__ = [
    "latest_or_raise",
    "request_audit",
    "certificate",
    "Subject",
    "subject",
    "record",
    "log_page",
    "verify_chain",
]


def _latest(session: Session, version: ModelVersion) -> Audit | None:
    return session.scalar(
        select(Audit)
        .where(Audit.version_id == version.id)
        .order_by(Audit.created_at.desc(), Audit.id.desc())
        .limit(1)
    )


def latest_or_raise(session: Session, *, tenant_id: str, model_id: str, number: int) -> AuditRead:
    version = versions.get_or_raise(session, model_id=model_id, number=number, tenant_id=tenant_id)
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
    version = versions.get_or_raise(session, model_id=model_id, number=number)
    if not version.forgotten_samples:
        raise Conflict(f"version {number} forgot nothing; there is nothing to audit")
    if reference == "retrain" and not model.training:
        raise Conflict(
            "retrained references need the model's training recipe and this model declares "
            "none (a model of uploaded weights declares it with `training` and "
            "`weights: upload` when it is created)"
        )
    erasure.check_forget_set_present(session, model=model, number=number)
    # The version's requests ride along: one still waiting for an audit (a policy that
    # wants references) completes with this one.
    job = lifecycle.new_job(
        session,
        model,
        JobKind.AUDIT,
        version=number,
        request_ids=version.deletion_request_ids,
        params={"reference": reference},
    )
    session.commit()
    return job


@dataclass(frozen=True)
class Subject:
    """What an audit job needs to know of the version it audits, besides its samples."""

    seconds: float | None  # how long the unlearning took
    parent: int | None  # the version before this unlearning: the audit's positive control
    unchanged_reason: str | None  # set when its weights are the parent's
    references: list[tuple[int, float | None]]  # kept retrained references: number, seconds


def subject(model_id: str, number: int) -> Subject:
    """Version ``number`` as its audit job sees it (NotFound when there is none)."""
    with session_scope() as session:
        version = versions.get_or_raise(session, model_id=model_id, number=number)
        kept = versions.references_of(session, model_id, number)
        return Subject(
            version.seconds,
            version.parent,
            version.unchanged_reason if version.unchanged else None,
            [(v.number, v.seconds) for v in kept],
        )


def record(session: Session, *, job: Job, report: dict[str, Any], seconds: float) -> None:
    """An audit job's end: its report, the audit-log entry, the job's success, and the
    completion of the requests that waited for this audit."""
    model_id = lifecycle.model_of(job)
    version = versions.get_or_raise(session, model_id=model_id, number=job.base_version)
    session.add(
        Audit(version_id=version.id, job_id=job.id, verdict=report.get("verdict"), report=report)
    )
    audit_log.append(
        session,
        tenant_id=job.tenant_id,
        action="model_version.audited",
        subject_type="model",
        subject_id=model_id,
        payload={
            "version": job.base_version,
            "verdict": report.get("verdict"),
            "frm": report.get("frm"),
            "mia_auc": report["metrics"].get("mia_auc"),
            "reference_versions": (report.get("reference") or {}).get("versions"),
        },
    )
    callbacks.emit(
        session,
        tenant_id=job.tenant_id,
        model_id=model_id,
        event=WebhookEvent.AUDIT_COMPLETED,
        fields={
            "version": job.base_version,
            "verdict": report.get("verdict"),
            "job_id": job.id,
            "reference": report.get("reference") is not None,
            "audit_url": get_settings().link(
                f"/v1/models/{job.model_id}/versions/{job.base_version}/audit"
            ),
        },
    )
    lifecycle.finish_audit(
        session,
        job=job,
        verdict=report.get("verdict"),
        seconds=seconds,
        referenced=report.get("reference") is not None,
    )


def certificate(session: Session, *, tenant_id: str, request_id: str) -> Certificate:
    request = requests.get_or_raise(session, tenant_id=tenant_id, request_id=request_id)
    if request.status != RequestStatus.COMPLETED:
        raise Conflict(f"the request is {request.status}; certificates are for completed ones")
    job = session.get(Job, request.job_id) if request.job_id else None
    after = versions.get(session, request.model_id, request.result_version)
    # Without a job the model did not change: before and after are the version it stayed at.
    before = versions.get(session, request.model_id, after.parent) if after and job else after
    audit = _latest(session, after) if after and job else None
    entries = _log_entries(session, request.id, request.model_id, request.result_version)
    summary = _audit_summary(audit)
    return Certificate(
        evidence=summary["evidence"] if summary else _unaudited(job, request.sample_count),
        request={
            "id": request.id,
            "model_id": request.model_id,
            "subject_digest": request.subject_digest,
            "status": request.status,
            "sample_count": request.sample_count,
            "class_labels": request.class_labels,
            "already_forgotten": len(request.already_forgotten),
            "created_at": request.created_at,
            "due_at": request.due_at,
            "completed_at": request.completed_at,
            "met_deadline": bool(request.completed_at and request.completed_at <= request.due_at),
        },
        sample_key_digests=sorted(requests.digest(key) for key in request.sample_keys or []),
        job=_job_summary(job),
        version_before=_version_summary(before),
        version_after=_version_summary(after),
        audit=summary,
        audit_log=[LogEntry.model_validate(e, from_attributes=True) for e in entries],
        audit_log_entries_consistent=all(
            audit_log.entry_hash(e.prev_hash, e) == e.hash for e in entries
        ),
        issued_at=utcnow(),
    )


def _unaudited(job: Job | None, sample_count: int) -> str:
    """The certificate's evidence line when no audit of the request's version is stored."""
    if job is None and sample_count == 0:
        return (
            "nothing to forget: the model's dataset holds no training sample of this "
            "subject, so no version was needed"
        )
    if job is None:
        return "no new version: every sample was already forgotten by this model"
    return "not audited: the version's audit did not complete (the request's history says why)"


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
        "unchanged": version.unchanged,
        "unchanged_reason": version.unchanged_reason,
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
    control = report.get("control") or {}
    return {
        "verdict": audit.verdict,
        "evidence": report.get("evidence") or evidence_statement(report),
        "frm": report.get("frm"),
        "avg_disparity": report.get("avg_disparity"),
        "metrics": {k: v for k, v in report.get("metrics", {}).items() if k in keep},
        "failed_gates": report.get("failed_gates", []),
        "uninformative_gates": report.get("uninformative_gates", []),
        "control": {"version": control.get("version"), "verdict": control.get("verdict")}
        if control
        else None,
        "membership_signal": report.get("membership_signal"),
        "created_at": audit.created_at,
    }


def log_page(
    session: Session, *, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[LogEntry], str | None]:
    """The tenant's audit-log entries, newest first."""
    statement = select(AuditLogEntry).where(AuditLogEntry.tenant_id == tenant_id)
    rows, next_cursor = paginate(
        session, statement, order=(AuditLogEntry.at, AuditLogEntry.id), limit=limit, cursor=cursor
    )
    return [LogEntry.model_validate(e, from_attributes=True) for e in rows], next_cursor


VERIFY_EVERY_SECONDS = 60.0
_walked: tuple[float, datetime, audit_log.Verification, bool] | None = None
_walk_lock = threading.Lock()


def _walk(session: Session) -> tuple[datetime, audit_log.Verification, bool]:
    """The whole chain walked with the signing key's public half (when one is configured),
    at most once a minute per process: a walk reads the entire log, and the answer is the
    same for every tenant. (when, result, signatures checked)"""
    global _walked
    with _walk_lock:
        if _walked is None or time.monotonic() - _walked[0] > VERIFY_EVERY_SECONDS:
            key = audit_log.public_key()
            result = audit_log.verify(session, keys=[key] if key is not None else None)
            _walked = (time.monotonic(), utcnow(), result, key is not None)
        return _walked[1], _walked[2], _walked[3]


def verify_chain(session: Session, *, tenant_id: str) -> ChainVerification:
    """Whether the chain is intact, told to one tenant: the other tenants' entries it
    walked are not described (neither their number nor, where the chain breaks at one of
    them, which)."""
    at, result, signed = _walk(session)
    broken = None
    if result.broken is not None:
        owner = session.scalar(
            select(AuditLogEntry.tenant_id).where(AuditLogEntry.id == result.broken.entry_id)
        )
        broken = (
            ChainBreakRead(entry_id=result.broken.entry_id, reason=result.broken.reason)
            if owner == tenant_id
            else ChainBreakRead(
                entry_id=None,
                reason="at an entry of another tenant: the operator verifies the whole log "
                "(unlearnd audit verify)",
            )
        )
    mine = select(AuditLogEntry).where(AuditLogEntry.tenant_id == tenant_id)
    entries = session.scalar(select(func.count()).select_from(mine.subquery())) or 0
    last = session.scalars(mine.order_by(AuditLogEntry.id.desc()).limit(1)).first()
    return ChainVerification(
        intact=result.broken is None,
        signatures_checked=signed,
        entries=entries,
        broken=broken,
        head=ChainHead(entry_id=last.id, hash=last.hash, signature=last.signature)
        if last
        else None,
        verified_at=at,
    )


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
