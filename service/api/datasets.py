from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

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
from service.enums import DatasetStatus, SampleState, Scope, Split
from service.schemas import Page

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
read = [require(Scope.MODELS_READ)]


REGISTERING = {
    "description": "registration continues as a job: the dataset as it stands "
    "(`registering`, with its `job_id`), to poll at `Location` until it is `ready` or "
    "`failed`. Given for `Prefer: respond-async`, and for a manifest or image folder of more "
    "than `UNLEARN_DATASET_SYNC_MAX_SAMPLES` samples.",
    "model": DatasetRead,
    "headers": {
        "Location": {"description": "the dataset", "schema": {"type": "string"}},
        "Preference-Applied": {
            "description": "`respond-async` when the request asked for it (RFC 7240)",
            "schema": {"type": "string"},
        },
    },
}


def prefers_async(prefer: str | None) -> bool:
    """Whether a ``Prefer`` header (RFC 7240: preferences by commas, parameters by
    semicolons, names in any case) asks for ``respond-async``."""
    for preference in (prefer or "").split(","):
        name = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
        if name == "respond-async":
            return True
    return False


@router.post(
    "",
    status_code=201,
    response_model=DatasetRead,
    dependencies=[require(Scope.MODELS_WRITE)],
    responses={
        202: REGISTERING,
        **conflict("a dataset of this name exists (and has not failed)"),
    },
)
def create_dataset(
    spec: DatasetCreate,
    session: SessionDep,
    caller: CurrentCaller,
    response: Response,
    prefer: Annotated[
        str | None,
        Header(
            description="`respond-async`: register as a job and answer 202 at once, "
            "whatever the source's size"
        ),
    ] = None,
) -> DatasetRead:
    """Register a dataset: its source indexed here (201, `ready`), or by a job (202,
    `registering`; see the 202 answer)."""
    preferred = prefers_async(prefer)
    dataset = service.register(session, tenant_id=caller.tenant_id, spec=spec, in_job=preferred)
    if dataset.status == DatasetStatus.REGISTERING:
        response.status_code = 202
        response.headers["Location"] = f"/v1/datasets/{dataset.id}"
        if preferred:
            response.headers["Preference-Applied"] = "respond-async"
    return service.to_read(session, [dataset])[0]


@router.get("", response_model=Page[DatasetRead], dependencies=read)
def list_datasets(
    session: SessionDep, caller: CurrentCaller, limit: Limit = 50, cursor: str | None = None
) -> Page[DatasetRead]:
    rows, next_cursor = service.list_page(
        session, tenant_id=caller.tenant_id, limit=limit, cursor=cursor
    )
    return Page(items=service.to_read(session, rows), next_cursor=next_cursor)


@router.get("/{dataset_id}", response_model=DatasetRead, dependencies=read)
def get_dataset(dataset_id: str, session: SessionDep, caller: CurrentCaller) -> DatasetRead:
    dataset = service.get_or_raise(session, tenant_id=caller.tenant_id, dataset_id=dataset_id)
    return service.to_read(session, [dataset])[0]


@router.post(
    "/{dataset_id}/refresh",
    response_model=RefreshRead,
    dependencies=[require(Scope.MODELS_WRITE)],
    responses=conflict("the dataset is not ready (registering, or its registration failed)"),
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
