"""Read access to jobs. Their life is ``service.jobs.lifecycle``, batching them
``service.jobs.dispatch``, holding them ``service.jobs.lease``; running them is the
workers' (``workers.runners``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import lookup
from service.enums import JobStatus
from service.jobs.schemas import JobRead
from service.pagination import paginate
from service.tables import Job

__all__ = ["get_or_raise", "list_page", "to_read"]


def get_or_raise(session: Session, *, tenant_id: str, job_id: str) -> Job:
    return lookup.get_or_raise(session, Job, job_id, tenant_id=tenant_id, what="job")


def list_page(
    session: Session,
    *,
    tenant_id: str,
    model_id: str | None,
    status: JobStatus | None,
    limit: int,
    cursor: str | None,
    dataset_id: str | None = None,
) -> tuple[list[Job], str | None]:
    statement = select(Job).where(Job.tenant_id == tenant_id)
    if model_id:
        statement = statement.where(Job.model_id == model_id)
    if dataset_id:
        statement = statement.where(Job.dataset_id == dataset_id)
    if status:
        statement = statement.where(Job.status == status)
    return paginate(session, statement, order=(Job.created_at, Job.id), limit=limit, cursor=cursor)


def to_read(job: Job) -> JobRead:
    return JobRead.model_validate(job, from_attributes=True)
