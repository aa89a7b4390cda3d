from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Response, UploadFile

from service.api import conditional
from service.api.conditional import polled
from service.api.deps import CurrentCaller, Limit, SessionDep, VersionNumber, require
from service.api.files import RangedFile
from service.api.openapi import conflict
from service.changes import Topic
from service.enums import Scope
from service.models import service, versions
from service.models.schemas import FlushRead, ModelCreate, ModelRead, ModelUpdate, VersionRead
from service.schemas import Page

router = APIRouter(prefix="/v1/models", tags=["models"])
write = [require(Scope.MODELS_WRITE)]
# A model's body shows its pending requests' count.
model_read = polled(Topic.MODELS, Topic.REQUESTS, scope=Scope.MODELS_READ)
version_read = polled(Topic.VERSIONS, scope=Scope.MODELS_READ)
WEIGHTS_TAG = {"description": "the weights' sha256, quoted", "schema": {"type": "string"}}


def _read(session: SessionDep, model) -> ModelRead:  # type: ignore[no-untyped-def]
    return service.to_read(model, service.pending_counts(session, [model.id]).get(model.id, 0))


@router.post(
    "",
    status_code=201,
    response_model=ModelRead,
    dependencies=write,
    responses=conflict("a model of this name exists, or the dataset is not ready"),
)
def create_model(spec: ModelCreate, session: SessionDep, caller: CurrentCaller) -> ModelRead:
    return _read(session, service.create(session, tenant_id=caller.tenant_id, spec=spec))


@router.get("", response_model=Page[ModelRead], **model_read)
def list_models(
    session: SessionDep, caller: CurrentCaller, limit: Limit = 50, cursor: str | None = None
) -> Page[ModelRead]:
    rows, next_cursor = service.list_page(
        session, tenant_id=caller.tenant_id, limit=limit, cursor=cursor
    )
    pending = service.pending_counts(session, [r.id for r in rows])
    items = [service.to_read(r, pending.get(r.id, 0)) for r in rows]
    return Page(items=items, next_cursor=next_cursor)


@router.get("/{model_id}", response_model=ModelRead, **model_read)
def get_model(model_id: str, session: SessionDep, caller: CurrentCaller) -> ModelRead:
    return _read(
        session, service.get_or_raise(session, tenant_id=caller.tenant_id, model_id=model_id)
    )


@router.patch("/{model_id}", response_model=ModelRead, dependencies=write)
def update_model(
    model_id: str, spec: ModelUpdate, session: SessionDep, caller: CurrentCaller
) -> ModelRead:
    return _read(
        session, service.update(session, tenant_id=caller.tenant_id, model_id=model_id, spec=spec)
    )


@router.post("/{model_id}/flush", status_code=202, response_model=FlushRead, dependencies=write)
def flush_model(model_id: str, session: SessionDep, caller: CurrentCaller) -> FlushRead:
    pending = service.flush(session, tenant_id=caller.tenant_id, model_id=model_id)
    return FlushRead(model_id=model_id, pending_requests=pending)


@router.get("/{model_id}/versions", response_model=Page[VersionRead], **version_read)
def list_versions(
    model_id: str,
    session: SessionDep,
    caller: CurrentCaller,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[VersionRead]:
    items, next_cursor = versions.page(
        session, tenant_id=caller.tenant_id, model_id=model_id, limit=limit, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.post(
    "/{model_id}/versions",
    status_code=201,
    response_model=VersionRead,
    dependencies=write,
    responses=conflict("a job is writing the model's lineage"),
)
def upload_version(
    model_id: str,
    session: SessionDep,
    caller: CurrentCaller,
    file: UploadFile = File(description="safetensors weights"),
    generation: int | None = Form(
        None,
        ge=1,
        description="the dataset generation the weights were trained on (default: the "
        "dataset's current one); samples added later join the model only through a later "
        "version",
    ),
) -> VersionRead:
    data = file.file.read()
    version = service.upload_version(
        session, tenant_id=caller.tenant_id, model_id=model_id, data=data, generation=generation
    )
    return versions.to_read(session, version)


@router.get("/{model_id}/versions/{number}", response_model=VersionRead, **version_read)
def get_version(
    model_id: str, number: VersionNumber, session: SessionDep, caller: CurrentCaller
) -> VersionRead:
    version = versions.get_or_raise(
        session, model_id=model_id, number=number, tenant_id=caller.tenant_id
    )
    return versions.to_read(session, version)


@router.get(
    "/{model_id}/versions/{number}/weights",
    response_class=RangedFile,
    responses={
        200: {"content": {"application/octet-stream": {}}, "headers": {"ETag": WEIGHTS_TAG}},
        206: {"description": "the byte range asked for in `Range`"},
        304: {
            "description": "If-None-Match names the sha256: the caller holds these weights",
            "headers": {"ETag": WEIGHTS_TAG},
        },
        416: {"description": "the `Range` lies outside the file (problem+json)"},
    },
    dependencies=[require(Scope.MODELS_READ)],
)
def download_weights(
    model_id: str,
    number: VersionNumber,
    session: SessionDep,
    caller: CurrentCaller,
    if_none_match: Annotated[
        str | None, Header(description="the sha256 of weights the caller already holds")
    ] = None,
) -> Response:
    """The version's safetensors file, streamed from the store; ``ETag`` is its sha256
    (strong: the bytes are addressed by it), ``Range`` gives 206."""
    path, sha256 = versions.weights_file(
        session, tenant_id=caller.tenant_id, model_id=model_id, number=number
    )
    etag = f'"{sha256}"'
    if if_none_match is not None and conditional.matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return RangedFile(
        path,
        media_type="application/octet-stream",
        filename=f"{model_id}-v{number}.safetensors",
        headers={"ETag": etag},
    )
