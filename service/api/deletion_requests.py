from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from service.api.conditional import polled
from service.api.deps import CurrentCaller, Limit, SessionDep, authorized, json_body, require
from service.api.openapi import conflict, read_by_hand
from service.callbacks import service as callbacks
from service.callbacks.schemas import DeliveryList
from service.changes import Topic
from service.deletion_requests import ingest, register, service
from service.deletion_requests.schemas import (
    BulkResult,
    DeletionRequestCreate,
    DeletionRequestRead,
)
from service.enums import RequestStatus, Scope
from service.schemas import Page, schema_ref

router = APIRouter(prefix="/v1/deletion-requests", tags=["deletion requests"])
write = [require(Scope.REQUESTS_WRITE)]
SUBMIT = Scope.REQUESTS_WRITE  # checked and documented (read_by_hand) by the ingest route
read = polled(Topic.REQUESTS, scope=Scope.REQUESTS_READ)


# The ingest path (service.deletion_requests.ingest): async, no session of its own, the
# answer already JSON (returned as is, not validated again against the response model).
# It reads its key, body and header itself: FastAPI's solving of declared parameters cost
# more per request than the rest of the HTTP edge (py-spy, docs/benchmarks.md).
@router.post(
    "",
    status_code=202,
    response_model=DeletionRequestRead,
    responses=conflict("its classes, with those the model forgot or is forgetting, are all"),
    openapi_extra=read_by_hand(
        DeletionRequestCreate,
        headers={"Idempotency-Key": {"type": "string", "maxLength": service.MAX_IDEMPOTENCY_KEY}},
        scope=SUBMIT,
    ),
)
async def create_deletion_request(request: Request) -> Any:
    caller = authorized(request, SUBMIT)
    spec = await json_body(request, DeletionRequestCreate)
    idempotency_key = request.headers.get("idempotency-key")
    item = service.submission(
        tenant_id=caller.tenant_id, spec=spec, idempotency_key=idempotency_key
    )
    answer = await ingest.submit(item)
    return JSONResponse(
        answer, status_code=202, headers={"Location": f"/v1/deletion-requests/{answer['id']}"}
    )


@router.post(":bulk", response_model=BulkResult, dependencies=write)
async def create_deletion_requests_bulk(
    caller: CurrentCaller,
    # Each item is checked on its own (a bad one is rejected by its index, the others
    # stored), so the route takes plain objects; the document shows what each must be.
    requests: Annotated[
        list[dict[str, Any]],
        Body(embed=True, json_schema_extra=schema_ref("DeletionRequestCreate", array=True)),
    ],
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=service.MAX_BULK_KEY)
    ] = None,
) -> BulkResult:
    return await ingest.submit_bulk(
        tenant_id=caller.tenant_id, items=requests, idempotency_key=idempotency_key
    )


@router.get("", response_model=Page[DeletionRequestRead], **read)
def list_deletion_requests(
    session: SessionDep,
    caller: CurrentCaller,
    model_id: str | None = None,
    status: RequestStatus | None = None,
    subject_id: str | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[DeletionRequestRead]:
    items, next_cursor = service.list_page(
        session,
        tenant_id=caller.tenant_id,
        model_id=model_id,
        status=status,
        subject_id=subject_id,
        limit=limit,
        cursor=cursor,
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get(
    ":export",
    response_class=StreamingResponse,
    dependencies=[require(Scope.REQUESTS_READ)],
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def export_register(
    caller: CurrentCaller,
    model_id: Annotated[str | None, Query(max_length=64)] = None,
    status: RequestStatus | None = None,
    subject_id: Annotated[str | None, Query(max_length=200)] = None,
) -> StreamingResponse:
    """The request register as CSV, oldest first, as of the call: request, subject
    digest, model, status, received, due, completed, met deadline, result version,
    evidence (the version's audit verdict, `not_audited` or `already_forgotten`).
    `X-Register-Rows` gives the row count, so a transfer cut short shows."""
    register_ = register.export(
        tenant_id=caller.tenant_id, model_id=model_id, status=status, subject_id=subject_id
    )
    return StreamingResponse(
        register_.lines,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="deletion-register.csv"',
            "X-Register-Rows": str(register_.rows),
        },
    )


@router.get("/{request_id}", response_model=DeletionRequestRead, **read)
def get_deletion_request(
    request_id: str, session: SessionDep, caller: CurrentCaller
) -> DeletionRequestRead:
    request = service.get_or_raise(session, tenant_id=caller.tenant_id, request_id=request_id)
    return service.read_many(session, [request])[0]


@router.post(
    "/{request_id}/cancel",
    response_model=DeletionRequestRead,
    dependencies=write,
    responses=conflict("the request is not pending"),
)
def cancel_deletion_request(
    request_id: str, session: SessionDep, caller: CurrentCaller
) -> DeletionRequestRead:
    return service.cancel(session, tenant_id=caller.tenant_id, request_id=request_id)


@router.post(
    "/{request_id}/retry",
    response_model=DeletionRequestRead,
    dependencies=[require(Scope.ADMIN)],
    responses=conflict("the request has not failed"),
)
def retry_deletion_request(
    request_id: str, session: SessionDep, caller: CurrentCaller
) -> DeletionRequestRead:
    return service.retry(session, tenant_id=caller.tenant_id, request_id=request_id)


@router.get(
    "/{request_id}/callbacks",
    response_model=DeliveryList,
    dependencies=[require(Scope.REQUESTS_READ)],  # deliveries carry no change stamp: not polled
)
def list_callback_deliveries(
    request_id: str, session: SessionDep, caller: CurrentCaller
) -> DeliveryList:
    deliveries = callbacks.deliveries_of(session, tenant_id=caller.tenant_id, request_id=request_id)
    return DeliveryList(items=deliveries)
