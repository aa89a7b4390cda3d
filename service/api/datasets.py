from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import CurrentCaller, Limit, SessionDep, require
from service.api.openapi import conflict
from service.datasets import refresh, service
from service.datasets.schemas import (
    DatasetCreate,
    DatasetRead,
    ForgottenBy,
    RefreshRead,
    SampleRead,
)
from service.enums import SampleState, Scope, Split
from service.schemas import Page

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
read = [require(Scope.MODELS_READ)]


@router.post(
    "",
    status_code=201,
    response_model=DatasetRead,
    dependencies=[require(Scope.MODELS_WRITE)],
    responses=conflict("a dataset of this name exists"),
)
def create_dataset(spec: DatasetCreate, session: SessionDep, caller: CurrentCaller) -> DatasetRead:
    dataset = service.register(session, tenant_id=caller.tenant_id, spec=spec)
    return DatasetRead.model_validate(dataset)


@router.get("", response_model=Page[DatasetRead], dependencies=read)
def list_datasets(
    session: SessionDep, caller: CurrentCaller, limit: Limit = 50, cursor: str | None = None
) -> Page[DatasetRead]:
    rows, next_cursor = service.list_page(
        session, tenant_id=caller.tenant_id, limit=limit, cursor=cursor
    )
    return Page(items=[DatasetRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/{dataset_id}", response_model=DatasetRead, dependencies=read)
def get_dataset(dataset_id: str, session: SessionDep, caller: CurrentCaller) -> DatasetRead:
    dataset = service.get_or_raise(session, tenant_id=caller.tenant_id, dataset_id=dataset_id)
    return DatasetRead.model_validate(dataset)


@router.post(
    "/{dataset_id}/refresh", response_model=RefreshRead, dependencies=[require(Scope.MODELS_WRITE)]
)
def refresh_dataset(dataset_id: str, session: SessionDep, caller: CurrentCaller) -> RefreshRead:
    return refresh.refresh(session, tenant_id=caller.tenant_id, dataset_id=dataset_id)


@router.get("/{dataset_id}/samples", response_model=Page[SampleRead], dependencies=read)
def list_samples(
    dataset_id: str,
    session: SessionDep,
    caller: CurrentCaller,
    split: Annotated[Split | None, Query()] = None,
    state: Annotated[SampleState | None, Query()] = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[SampleRead]:
    rows, next_cursor = service.samples_page(
        session,
        tenant_id=caller.tenant_id,
        dataset_id=dataset_id,
        split=split,
        state=state,
        limit=limit,
        cursor=cursor,
    )
    items = [SampleRead.model_validate(r, from_attributes=True) for r in rows]
    return Page(items=items, next_cursor=next_cursor)


@router.get("/{dataset_id}/samples/{key:path}", response_model=SampleRead, dependencies=read)
def get_sample(dataset_id: str, key: str, session: SessionDep, caller: CurrentCaller) -> SampleRead:
    sample, tombstones = service.get_sample_or_raise(
        session, tenant_id=caller.tenant_id, dataset_id=dataset_id, key=key
    )
    forgotten_by = [
        ForgottenBy(
            model_id=t.model_id, request_id=t.request_id, version=t.version_number, at=t.created_at
        )
        for t in tombstones
    ]
    read = SampleRead.model_validate(sample, from_attributes=True)
    return read.model_copy(update={"forgotten_by": forgotten_by})
