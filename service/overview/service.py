"""A tenant's overview: requests by status, the pending backlog per model, the oldest
pending request, the nearest deadline still owed, and jobs by status, in one query."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, literal, null, select, union_all
from sqlalchemy.orm import Session

from service.enums import JobStatus, RequestStatus
from service.overview.schemas import ModelBacklog, Overview
from service.tables import DeletionRequest, Job, Model, utcnow

__all__ = ["overview", "OWED"]

# Requests whose data is still in the published model: their deadline is still running.
# (An ``auditing`` request's version is already published without its data.)
OWED = frozenset(
    {RequestStatus.PENDING, RequestStatus.BATCHED, RequestStatus.UNLEARNING, RequestStatus.FAILED}
)


def _statement(tenant_id: str) -> Any:
    """Three grouped parts in one UNION ALL, each row tagged with its ``part``."""
    request = DeletionRequest
    oldest, nearest_due = func.min(request.created_at), func.min(request.due_at)
    by_status = (
        select(
            literal("status").label("part"),
            request.status.label("key"),
            null().label("name"),
            func.count().label("total"),
            oldest.label("oldest"),
            nearest_due.label("nearest_due"),
        )
        .where(request.tenant_id == tenant_id)
        .group_by(request.status)
    )
    pending_by_model = (
        select(literal("pending"), request.model_id, Model.name, func.count(), oldest, nearest_due)
        .join(Model, Model.id == request.model_id)
        .where(request.tenant_id == tenant_id, request.status == RequestStatus.PENDING)
        .group_by(request.model_id, Model.name)
    )
    jobs_by_status = (
        select(literal("job"), Job.status, null(), func.count(), null(), null())
        .where(Job.tenant_id == tenant_id)
        .group_by(Job.status)
    )
    return union_all(by_status, pending_by_model, jobs_by_status)


def overview(session: Session, *, tenant_id: str) -> Overview:
    requests = dict.fromkeys(RequestStatus, 0)
    jobs = dict.fromkeys(JobStatus, 0)
    backlog, owed_due, oldest_pending = [], [], None
    for row in session.execute(_statement(tenant_id)):
        if row.part == "status":
            status = RequestStatus(row.key)
            requests[status] = row.total
            if status == RequestStatus.PENDING:
                oldest_pending = row.oldest
            if status in OWED:
                owed_due.append(row.nearest_due)
        elif row.part == "pending":
            backlog.append(
                ModelBacklog(
                    model_id=row.key,
                    name=row.name,
                    pending=row.total,
                    oldest_pending_at=row.oldest,
                    nearest_due_at=row.nearest_due,
                )
            )
        else:
            jobs[JobStatus(row.key)] = row.total
    as_of = utcnow()
    return Overview(
        requests=requests,
        oldest_pending_at=oldest_pending,
        oldest_pending_age_seconds=(
            (as_of - oldest_pending).total_seconds() if oldest_pending else None
        ),
        nearest_due_at=min(owed_due, default=None),
        pending_by_model=sorted(backlog, key=lambda b: (b.nearest_due_at, b.name)),
        jobs=jobs,
        as_of=as_of,
    )
