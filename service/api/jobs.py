from typing import Annotated

from fastapi import APIRouter, Query

from service.api.conditional import polled
from service.api.deps import CurrentCaller, Limit, SessionDep, require
from service.changes import Topic
from service.enums import JobStatus, Scope
from service.jobs import service
from service.jobs.schemas import JobRead
from service.schemas import Page

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[require(Scope.MODELS_READ)])


@router.get("", response_model=Page[JobRead], **polled(Topic.JOBS))
def list_jobs(
    session: SessionDep,
    caller: CurrentCaller,
    model_id: str | None = None,
    dataset_id: Annotated[str | None, Query(description="a dataset's register jobs")] = None,
    status: JobStatus | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[JobRead]:
    rows, next_cursor = service.list_page(
        session,
        tenant_id=caller.tenant_id,
        model_id=model_id,
        dataset_id=dataset_id,
        status=status,
        limit=limit,
        cursor=cursor,
    )
    return Page(items=[service.to_read(r) for r in rows], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobRead, **polled(Topic.JOBS))
def get_job(job_id: str, session: SessionDep, caller: CurrentCaller) -> JobRead:
    return service.to_read(service.get_or_raise(session, tenant_id=caller.tenant_id, job_id=job_id))
